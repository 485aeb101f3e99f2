"""Converters from public PRM datasets to ponder's stepwise format (docs/design.md, *Data formats*).

- Math-Shepherd (`input` with ``ки`` step tags, `label` with ``+``/``-`` in their place): hard
  labels from the tags; the question is the text before ``Step 1:``.
- PRM800K (`question`, `label.steps[*].completions[*].rating` in {-1, 0, 1}, `chosen_completion`,
  `human_completion`): the labelled trajectory, i.e. the chosen completion of each step, else the
  human one, else (the labeller stopped at an error) the first rated completion as the last step; a
  step without any completion (the labeller gave up) ends the trajectory.
  Neutral (0) ratings count as positive unless `neutral_positive=False`.

Rollout counts are unknown for these sources and recorded as 0. A bad row raises an error naming
the row and the problem, or is skipped and counted with ``skip_bad_rows=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ponder.training.core.rows import BadRowError

MATH_SHEPHERD_TAG = "ки"
FORMATS = ("math_shepherd", "prm800k")


def from_math_shepherd(row: dict, index: int) -> dict:
    text, marked = row["input"], row["label"]
    parts = text.split(MATH_SHEPHERD_TAG)
    if len(parts) < 2:
        raise BadRowError(f"row {index}: no {MATH_SHEPHERD_TAG!r} step tag in 'input'")
    labels, position = [], 0
    for part in parts[:-1]:
        if marked[position : position + len(part)] != part or position + len(part) >= len(marked):
            raise BadRowError(f"row {index}: 'label' does not follow 'input' near character {position}")
        position += len(part)
        if marked[position] not in "+-":
            raise BadRowError(f"row {index}: expected '+' or '-' at a step tag, got {marked[position]!r}")
        labels.append(1.0 if marked[position] == "+" else 0.0)
        position += 1
    first = parts[0].find("Step 1:")
    if first < 0:
        raise BadRowError(f"row {index}: no 'Step 1:' separating the question from the steps")
    steps = [parts[0][first:].strip()] + [p.strip() for p in parts[1:-1]]
    if any(not s for s in steps):
        raise BadRowError(f"row {index}: empty step")
    return _row(f"math-shepherd-{index}", parts[0][:first].strip(), steps, labels, answer_correct=labels[-1] == 1.0)


def from_prm800k(row: dict, index: int, neutral_positive: bool = True) -> dict:
    try:
        question, steps_in = row["question"]["problem"], row["label"]["steps"]
    except (KeyError, TypeError) as error:
        raise BadRowError(f"row {index}: missing field {error}") from error
    steps, labels = [], []
    for step in steps_in:
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None:
            completion = step["completions"][chosen]
        elif human is not None:
            completion = human
        elif step.get("completions"):
            completion = step["completions"][0]
        else:  # the labeller gave up before this step
            break
        rating = completion.get("rating")
        steps.append(completion["text"].strip())
        labels.append(1.0 if rating is None or rating == 1 or (rating == 0 and neutral_positive) else 0.0)
        if chosen is None and human is None:
            break
    if not steps:
        raise BadRowError(f"row {index}: no steps")
    correct = row["label"].get("finish_reason") == "solution"
    return _row(f"prm800k-{index}", question, steps, labels, answer_correct=correct)


def _row(row_id: str, prompt: str, steps: list[str], labels: list[float], answer_correct: bool) -> dict:
    return {
        "id": row_id,
        "prompt": prompt,
        "completions": steps,
        "labels": labels,
        "hard": [label > 0 for label in labels],
        "rollouts": [0] * len(steps),
        "answer_correct": answer_correct,
    }


def convert_file(path: str | Path, fmt: str, skip_bad_rows: bool = False) -> tuple[list[dict], int]:
    """Rows of a JSONL file in stepwise format, and how many bad rows were skipped."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown label format {fmt!r}; use one of {FORMATS}")
    convert = from_math_shepherd if fmt == "math_shepherd" else from_prm800k
    rows, skipped = [], 0
    for index, line in enumerate(Path(path).read_text().splitlines()):
        try:
            rows.append(convert(json.loads(line), index))
        except (BadRowError, json.JSONDecodeError, KeyError, TypeError, IndexError) as error:
            if not skip_bad_rows:
                detail = (
                    str(error) if isinstance(error, BadRowError) else f"row {index}: {type(error).__name__}: {error}"
                )
                raise BadRowError(f"{path}: {detail}") from error
            skipped += 1
    return rows, skipped
