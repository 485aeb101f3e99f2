"""Diverse verifier tree search (DVTS): N/M independent subtrees, each greedy on the verifier.

Each subtree expands its single beam M ways per round and keeps the best unfinished child, until it
holds M finished candidates; the N finished candidates of all subtrees go to weighted best-of-N.
Independent subtrees keep the diversity that one shared beam loses at large N.
"""

from __future__ import annotations

from ponder.inference.search.common import Searched, SearchSetup
from ponder.inference.search.tree import MAX_ROUNDS, Group, check_width, final_rows, root, tree_search


def dvts(rows: list[dict], setup: SearchSetup, n: int, width: int, max_rounds: int = MAX_ROUNDS) -> list[dict]:
    """Rows ``{id, strategy: "dvts_m<M>", budget: N, ...}``."""
    check_width(n, width)
    searched = Searched(rows, setup)
    groups = [Group(p, keep=1, target=width, beams=[root(p)]) for p in range(len(rows)) for _ in range(n // width)]
    tree_search(searched, groups, first_expand=width, expand=width, max_rounds=max_rounds)
    return final_rows(searched, groups, f"dvts_m{width}", budget=n, n=n)
