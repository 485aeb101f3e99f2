"""Rows of a saved `datasets` folder or a JSONL file, and a train/held-out split by problem."""

from __future__ import annotations

import json
import random
from pathlib import Path


def load_rows(path: str) -> list[dict]:
    """Stepwise rows from a saved `datasets` folder or a JSONL file."""
    if Path(path).is_dir():
        from datasets import load_from_disk

        # `save_to_disk` writes a dataset without rows as no data files, which `load_from_disk` cannot read
        state = Path(path) / "state.json"
        if state.exists() and not json.loads(state.read_text())["_data_files"]:
            return []
        return load_from_disk(path).to_list()
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def split_by_problem(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and eval rows with no problem in both (rows group by `problem_id`, else by prompt)."""

    def problem(row: dict) -> str:
        return str(row["problem_id"] if "problem_id" in row else row["prompt"])

    keys = sorted({problem(r) for r in rows})
    random.Random(seed).shuffle(keys)
    held_out = set(keys[: round(len(keys) * eval_fraction)])
    train = [r for r in rows if problem(r) not in held_out]
    return train, [r for r in rows if problem(r) in held_out]
