"""Stepwise rows → verifier training features, with the tokenization inference uses.

Every row of the stepwise format (docs/design.md, *Data formats*) becomes ``input_ids``, the positions of its scored
tokens and a float label per position (`encode_many` from ``ponder.inference.step_format``: the
labelled token in training is the scored token at inference). A PRM is labelled at each step, an ORM
once, at the end of the solution, with whether the answer was right.

Labels stay floats: ``soft`` keeps the MC value, ``hard`` turns it into 1.0 when any rollout
succeeded (value > 0), else 0.0. Steps cut by `max_length` are dropped and counted; a row left
without a labelled step is skipped and counted. A malformed row raises `BadRowError` naming it, or is
skipped and counted with `skip_bad_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.inference.step_format import StepFormat, encode_many, step_spans
from ponder.training.core.rows import BadRowError

LABEL_TYPES = ("soft", "hard")


@dataclass
class FeatureStats:
    rows: int = 0
    features: int = 0
    labelled_steps: int = 0
    dropped_steps: int = 0
    rows_without_steps: int = 0
    bad_rows: int = 0
    bad_row_examples: list[str] = field(default_factory=list)


def check_row(row: dict, index: int) -> None:
    """Raise `BadRowError` naming the row unless it is a usable stepwise row."""
    name = f"row {index} (id {row.get('id', '?')!r})"
    for key in ("prompt", "completions", "labels"):
        if key not in row:
            raise BadRowError(f"{name}: missing {key!r}")
    steps, labels = row["completions"], row["labels"]
    if not isinstance(steps, list) or not steps:
        raise BadRowError(f"{name}: 'completions' must be a non-empty list of steps")
    if any(not isinstance(step, str) or not step.strip() for step in steps):
        raise BadRowError(f"{name}: empty step in 'completions'")
    if not isinstance(labels, list) or len(labels) != len(steps):
        count = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise BadRowError(f"{name}: {count} labels for {len(steps)} steps")
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | float) or not 0.0 <= label <= 1.0:
            raise BadRowError(f"{name}: label {label!r} is not a number in [0, 1]")


def step_targets(row: dict, label_type: str, last_step_only: bool) -> list[float]:
    """The float target of each step (all steps, or only the last one's at the end of the list)."""
    values = [float(v) for v in row["labels"]]
    if label_type == "hard":
        values = [1.0 if v > 0 else 0.0 for v in values]
    return values[-1:] if last_step_only else values


def build_features(
    rows: list[dict],
    tokenizer,
    step_format: StepFormat,
    max_length: int | None,
    target: str = "steps",
    label_type: str = "soft",
    last_step_only: bool = False,
    skip_bad_rows: bool = False,
    read: str = "step_end",
) -> tuple[list[dict], FeatureStats]:
    """Features ``{input_ids, positions, labels, steps}`` for a PRM (`target="steps"`) or an ORM (``"answer"``).

    With ``read="step_end"`` each step is labelled at its scoring token; with ``"step_min"`` at every
    one of its tokens (the verifier then scores a step by the lowest token so far). `steps` gives the step
    of each labelled position.
    """
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {label_type!r}")
    if target not in ("steps", "answer"):
        raise ValueError(f"target must be 'steps' or 'answer', got {target!r}")
    stats = FeatureStats(rows=len(rows))
    good = []
    for index, row in enumerate(rows):
        try:
            check_row(row, index)
            if target == "answer" and not isinstance(row.get("answer_correct"), bool):
                raise BadRowError(f"row {index} (id {row.get('id', '?')!r}): an ORM row needs 'answer_correct'")
        except BadRowError as error:
            if not skip_bad_rows:
                raise
            stats.bad_rows += 1
            if len(stats.bad_row_examples) < 5:
                stats.bad_row_examples.append(str(error))
            continue
        good.append(row)
    encoded = encode_many(
        tokenizer, step_format, [r["prompt"] for r in good], [r["completions"] for r in good], max_length
    )
    features = []
    for row, enc in zip(good, encoded):
        stats.dropped_steps += enc.dropped_steps
        if target == "answer":
            if enc.dropped_steps:  # the answer step did not fit: nothing to label
                stats.rows_without_steps += 1
                continue
            spans, targets = [enc.step_positions[-1:]], [1.0 if row["answer_correct"] else 0.0]
        else:
            targets = step_targets(row, label_type, last_step_only)
            spans = step_spans(enc) if read == "step_min" else [[p] for p in enc.step_positions]
            if last_step_only:
                spans = [] if enc.dropped_steps else spans[-1:]
        spans = spans[: len(targets)]
        if not spans:
            stats.rows_without_steps += 1
            continue
        features.append(
            {
                "input_ids": enc.input_ids,
                "positions": [p for span in spans for p in span],
                "labels": [t for span, t in zip(spans, targets) for _ in span],
                "steps": [i for i, span in enumerate(spans) for _ in span],
            }
        )
        stats.labelled_steps += len(spans)
    stats.features = len(features)
    return features, stats
