"""Rows of a saved `datasets` folder or a JSONL file, and a train/held-out split by problem."""

from __future__ import annotations

import json
import random
from pathlib import Path


class BadRowError(ValueError):
    """A row that cannot be used; the message names the file and the row."""


class EmptyDatasetError(ValueError):
    """A training stage's dataset leaves nothing to train on; the message names the dataset."""


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) of every non-blank line of a JSONL file; a line that is not a UTF-8 JSON object is a
    `BadRowError` naming the file and the line."""
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.strip():
                    continue
                row = json.loads(line)
            except UnicodeDecodeError as error:
                raise BadRowError(f"{path} line {number}: not UTF-8 ({error.reason} at byte {error.start})") from None
            except json.JSONDecodeError as error:
                raise BadRowError(f"{path} line {number}: not JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(row, dict):
                raise BadRowError(f"{path} line {number}: a row must be a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def load_rows(path: str) -> list[dict]:
    """Stepwise rows from a saved `datasets` folder or a JSONL file."""
    if Path(path).is_dir():
        from datasets import load_from_disk

        # `save_to_disk` writes a dataset without rows as no data files, which `load_from_disk` cannot read
        state = Path(path) / "state.json"
        if state.exists() and not json.loads(state.read_text())["_data_files"]:
            return []
        return load_from_disk(path).to_list()
    return [row for _, row in read_jsonl(path)]


def split_by_problem(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and eval rows with no problem in both (rows group by `problem_id`, else by prompt)."""

    def problem(row: dict) -> str:
        return str(row["problem_id"] if "problem_id" in row else row["prompt"])

    keys = sorted({problem(r) for r in rows})
    random.Random(seed).shuffle(keys)
    held_out = set(keys[: round(len(keys) * eval_fraction)])
    train = [r for r in rows if problem(r) not in held_out]
    return train, [r for r in rows if problem(r) in held_out]
