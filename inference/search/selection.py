"""Choosing one answer from scored candidates: naive, majority and weighted best-of-N.

Only candidates with a final answer take part: an unfinished candidate is scored at a mid-solution
step, where a PRM's score is high, and would otherwise win (a measured failure; docs/design.md,
*Choosing answers and counting compute*).
"""

from __future__ import annotations

from collections import defaultdict

from ponder.inference.metrics import majority_answer

SELECTIONS = ("naive", "majority", "weighted")


def select_answer(answers: list[str | None], scores: list[float], how: str) -> str | None:
    """The chosen answer: top-scored (`naive`), most frequent (`majority`) or top summed score (`weighted`).

    Ties go to the candidate or answer seen first; None when no candidate has an answer.
    """
    if how == "majority":
        return majority_answer(answers)
    if how == "naive":
        answered = [(score, -i, a) for i, (a, score) in enumerate(zip(answers, scores)) if a is not None]
        return max(answered)[2] if answered else None
    if how == "weighted":
        totals: dict[str, float] = defaultdict(float)
        for answer, score in zip(answers, scores):
            if answer is not None:
                totals[answer] += score
        return max(totals, key=totals.__getitem__) if totals else None
    raise ValueError(f"unknown selection {how!r}; use one of {SELECTIONS}")
