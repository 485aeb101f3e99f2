"""The toy world's models: a character-level tokenizer, a tiny Llama, and judging a toy policy."""
