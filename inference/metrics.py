"""Sampling metrics shared by evaluation code."""

from __future__ import annotations

import math
from collections import Counter


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def majority_answer(answers: list[str | None]) -> str | None:
    """The most frequent non-missing answer (first seen wins ties), or None when all are missing."""
    counts = Counter(a for a in answers if a is not None)
    return max(counts, key=counts.__getitem__) if counts else None


def paired_difference(first: list[float], second: list[float]) -> tuple[float, float | None]:
    """Mean of ``first[i] - second[i]`` and its standard error over the pairs (None below two pairs).

    Two systems judged on the same problems differ less from problem to problem than two
    independent samples would, so this error is the one their difference is measured against.
    """
    if len(first) != len(second) or not first:
        raise ValueError(f"paired_difference needs equal, non-empty lists, got {len(first)} and {len(second)}")
    gaps = [a - b for a, b in zip(first, second)]
    mean = sum(gaps) / len(gaps)
    if len(gaps) < 2:
        return mean, None
    variance = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
    return mean, math.sqrt(variance / len(gaps))


def auc(scores: list[float], positive: list[bool]) -> float | None:
    """Area under the ROC curve: P(a positive scores above a negative), ties counted half.

    None when one of the classes is missing.
    """
    pairs = pair_counts(scores, positive)
    return pairs[0] / pairs[1] if pairs[1] else None


def pair_counts(scores: list[float], positive: list[bool]) -> tuple[float, int]:
    """(correctly ordered positive/negative pairs, ties counted half; all such pairs), by ranks."""
    if len(scores) != len(positive):
        raise ValueError(f"{len(scores)} scores for {len(positive)} labels")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(positive)
    n_neg = len(positive) - n_pos
    rank_sum = sum(r for r, p in zip(ranks, positive) if p)
    return rank_sum - n_pos * (n_pos + 1) / 2, n_pos * n_neg


def within_group_auc(groups: list[tuple[list[float], list[bool]]]) -> float | None:
    """AUC over positive/negative pairs of the same group only (e.g. the samples of one problem).

    Pooled AUC mostly measures which groups are hard; this one asks whether a verifier orders the
    items of one group correctly. Pairs are pooled over groups; None when no group has both classes.
    """
    ordered = total = 0.0
    for scores, positive in groups:
        right, pairs = pair_counts(scores, positive)
        ordered += right
        total += pairs
    return ordered / total if total else None


def first_error_f1(predicted: list[int | None], truth: list[int | None]) -> dict:
    """ProcessBench's score: accuracy at locating the first wrong step on erroneous solutions, accuracy
    at finding none on fully correct ones, and their harmonic mean (`f1`). Indices, None = no error."""
    erroneous = [p == t for p, t in zip(predicted, truth) if t is not None]
    correct = [p is None for p, t in zip(predicted, truth) if t is None]
    acc_err = sum(erroneous) / len(erroneous) if erroneous else None
    acc_cor = sum(correct) / len(correct) if correct else None
    f1 = None
    if acc_err is not None and acc_cor is not None:
        f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor else 0.0
    return {"erroneous_accuracy": acc_err, "correct_accuracy": acc_cor, "f1": f1}


def first_below(scores: list[float], threshold: float = 0.5) -> int | None:
    """Index of the first score under `threshold`, or None."""
    return next((i for i, s in enumerate(scores) if s < threshold), None)
