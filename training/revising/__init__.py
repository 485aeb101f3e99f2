"""Judging a revision model: chains of attempts against no-context controls."""
