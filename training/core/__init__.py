"""Machinery every stage shares: recipes, logging, outputs, shards, problems, rows, LoRA, finishing a
training run, Hub uploads."""
