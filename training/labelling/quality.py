"""How well stepwise labels agree with an oracle step checker (the toy world's ground truth).

Per level: step agreement of hard labels with the oracle's "no wrong step so far", precision and
recall of negative labels, and first-error agreement on wrong solutions. Where labels and oracle
differ on a step that follows a real slip, the policy often recovers (the prefix is wrong, yet
rollouts still reach the gold answer): a semantic gap of MC labels, not estimation noise.
"""

from __future__ import annotations

from collections import defaultdict


def oracle_step_labels(task, row: dict) -> list[bool]:
    """True for each step before the oracle's first wrong step."""
    wrong = task.first_wrong_step({"problem": row["prompt"]}, task.join_steps(row["completions"]))
    cut = len(row["completions"]) if wrong is None else wrong
    return [i < cut for i in range(len(row["completions"]))]


def agreement(task, rows: list[dict]) -> dict:
    """Agreement metrics, overall and per level (key ``"all"`` and the level as a string)."""
    tallies: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        oracle = oracle_step_labels(task, row)
        for key in ("all", str(row.get("level", "all"))):
            t = tallies[key]
            for label, truth in zip(row["hard"], oracle):
                t["steps"] += 1
                t["agree"] += label == truth
                t["label_negative"] += not label
                t["oracle_negative"] += not truth
                t["both_negative"] += (not label) and (not truth)
            if not row["answer_correct"]:
                t["wrong_solutions"] += 1
                t["first_error_agree"] += _first_negative(row["hard"]) == _first_negative(oracle)
    return {key: _ratios(t) for key, t in sorted(tallies.items())}


def _first_negative(labels: list[bool]) -> int | None:
    return next((i for i, label in enumerate(labels) if not label), None)


def _ratios(t: dict[str, int]) -> dict:
    def ratio(a: str, b: str) -> float | None:
        return round(t[a] / t[b], 4) if t[b] else None

    return {
        "steps": t["steps"],
        "step_agreement": ratio("agree", "steps"),
        "negative_precision": ratio("both_negative", "label_negative"),
        "negative_recall": ratio("both_negative", "oracle_negative"),
        "wrong_solutions": t["wrong_solutions"],
        "first_error_agreement": ratio("first_error_agree", "wrong_solutions"),
    }
