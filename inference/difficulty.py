"""Question difficulty: per-problem estimates and the bins the compute-optimal policy is chosen per.

Two estimates (Snell et al.): the oracle pass@1 of M policy samples (needs gold answers), and the
predicted difficulty, the mean verifier score of a few samples (no gold answers; a sample without a
final answer counts 0, since a mid-solution step scores high). Higher means easier for both.

Three binnings: `quantile_binning` splits problems into equal-sized bins by rank ("1" holds the
easiest), `absolute_binning` uses fixed pass@1 thresholds (Liu et al.: easy ≥ 0.5, medium 0.1–0.5,
hard < 0.1). A `Binning` keeps thresholds, so a new problem's estimate finds its bin.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

ABSOLUTE_THRESHOLDS = (0.5, 0.1)
ABSOLUTE_LABELS = ("easy", "medium", "hard")


def oracle_pass_rate(correct: list[bool]) -> float:
    """Fraction of samples that are correct (pass@1 estimate)."""
    if not correct:
        raise ValueError("oracle pass@1 needs at least one sample")
    return sum(correct) / len(correct)


def predicted_score(scores: list[float], answered: list[bool]) -> float:
    """Mean verifier score of the samples, a sample without a final answer counted as 0."""
    if not scores or len(scores) != len(answered):
        raise ValueError(f"predicted difficulty needs matching scores and answered flags, got {len(scores)}")
    return sum(s if a else 0.0 for s, a in zip(scores, answered)) / len(scores)


@dataclass(frozen=True)
class Binning:
    """Bins from easiest to hardest: a value ≥ thresholds[i] (and below the ones before) is labels[i].

    `bins` maps the problems the binning was made from to their labels.
    """

    name: str
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    bins: dict[str, str]

    def __post_init__(self):
        if len(self.labels) != len(self.thresholds) + 1:
            raise ValueError(f"{len(self.labels)} bin labels need {len(self.labels) - 1} thresholds")

    def label_of(self, value: float) -> str:
        """The bin of a new estimate."""
        return label_by_thresholds(value, self.labels, self.thresholds)

    def to_dict(self) -> dict:
        """Name, labels and thresholds: what bins a new problem (the per-problem `bins` stay out)."""
        return {"name": self.name, "labels": list(self.labels), "thresholds": list(self.thresholds)}

    @classmethod
    def from_dict(cls, data: dict) -> Binning:
        return cls(data["name"], tuple(data["labels"]), tuple(data["thresholds"]), dict(data.get("bins", {})))


def label_by_thresholds(value: float, labels, thresholds) -> str:
    """The first label whose threshold `value` reaches, else the last label."""
    return next((label for label, t in zip(labels, thresholds) if value >= t), labels[-1])


def tie_key(problem_id: str) -> int:
    """A stable pseudo-random order for problems with equal estimates (ids may encode difficulty)."""
    return zlib.crc32(problem_id.encode())


def quantile_binning(values: dict[str, float], n_bins: int = 5, name: str = "quantile") -> Binning:
    """`n_bins` equal-sized bins by rank, highest values (easiest) in bin "1".

    Equal estimates at a bin edge are split by `tie_key`, so bins stay equal-sized with few distinct
    values (pass@1 of 16 samples); a threshold is the midpoint between neighbouring bins' edge values.
    """
    if n_bins < 1 or len(values) < n_bins:
        raise ValueError(f"{len(values)} problems cannot fill {n_bins} bins")
    order = sorted(values, key=lambda i: (-values[i], tie_key(i)))
    edges = [round(len(order) * b / n_bins) for b in range(n_bins + 1)]
    labels = tuple(str(b + 1) for b in range(n_bins))
    bins = {i: labels[b] for b in range(n_bins) for i in order[edges[b] : edges[b + 1]]}
    thresholds = tuple((values[order[edges[b] - 1]] + values[order[edges[b]]]) / 2 for b in range(1, n_bins))
    return Binning(name, labels, thresholds, bins)


def absolute_binning(values: dict[str, float], name: str = "absolute") -> Binning:
    """Bins by fixed pass@1 thresholds: easy ≥ 0.5, medium 0.1–0.5, hard < 0.1 (Liu et al.)."""
    bins = {i: label_by_thresholds(v, ABSOLUTE_LABELS, ABSOLUTE_THRESHOLDS) for i, v in values.items()}
    return Binning(name, ABSOLUTE_LABELS, ABSOLUTE_THRESHOLDS, bins)
