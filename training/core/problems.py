"""Problems for a stage: the task's own generator (the toy world) or the rows of a dataset (real math).

A dataset source is a JSONL file, a folder written by `datasets.save_to_disk`, or a Hub dataset id
(``HuggingFaceH4/MATH-500``, ``openai/gsm8k`` with ``config_name: main``); the task turns each row
into ``{id, problem, answer, level}`` and names the row when one lacks a field.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def read_rows(source: str, split: str, config_name: str | None = None) -> list[dict]:
    """All rows of `source`: a JSONL file, a saved dataset folder (`split` of a DatasetDict) or a Hub dataset."""
    path = Path(source)
    if path.is_file():
        with path.open() as f:
            rows = []
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{source} line {number}: not JSON ({error})") from error
            return rows
    import datasets

    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return (loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded).to_list()
    return datasets.load_dataset(source, config_name, split=split).to_list()


def load_problems(
    task, source: str, split: str = "test", limit: int | None = None, config_name: str | None = None, seed: int = 0
) -> list[dict]:
    """`limit` rows of `source` drawn at random with `seed` (all when None), in file order, as the task's problems.

    A file ordered by subject or difficulty (MATH's train split) has no representative first rows.
    """
    rows = read_rows(source, split, config_name)
    indices = range(len(rows))
    if limit is not None and limit < len(rows):
        indices = sorted(random.Random(seed).sample(indices, limit))
    problems = []
    for index in indices:
        try:
            problems.append(task.problem_from_row(rows[index], index))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error
    return problems
