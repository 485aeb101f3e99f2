"""Beam search against a PRM: N beams, width M (N/M beams kept per round, each expanded M ways)."""

from __future__ import annotations

from ponder.inference.search.common import Searched, SearchSetup
from ponder.inference.search.tree import MAX_ROUNDS, Group, check_width, final_rows, root, tree_search


def beam_search(
    rows: list[dict], setup: SearchSetup, n: int, width: int, distinct: bool = False, max_rounds: int = MAX_ROUNDS
) -> list[dict]:
    """Rows ``{id, strategy: "beam_m<M>", budget: N, ...}``: weighted best-of-N over the finished beams.

    The first round samples N first steps; later rounds expand each of the N/M kept beams M times.
    `distinct` keeps only different partial solutions, their expansions sharing the places of repeats.
    """
    check_width(n, width)
    searched = Searched(rows, setup)
    groups = [Group(p, keep=n // width, target=n, beams=[root(p)], distinct=distinct) for p in range(len(rows))]
    tree_search(searched, groups, first_expand=n, expand=width, max_rounds=max_rounds)
    return final_rows(searched, groups, f"beam_m{width}", budget=n, n=n)
