"""Lookahead search: beam search whose candidate steps are scored after k greedy steps ahead.

Each unfinished child is rolled out k more steps at temperature 0 and scored at the rollout's last
step; the rollout itself is discarded. Budget in generations: N·(k+1).
"""

from __future__ import annotations

from ponder.inference.search.common import Candidate, Searched, SearchSetup
from ponder.inference.search.tree import MAX_ROUNDS, Group, check_width, final_rows, root, tree_search


def lookahead_search(
    rows: list[dict], setup: SearchSetup, n: int, width: int, k: int, max_rounds: int = MAX_ROUNDS
) -> list[dict]:
    """Rows ``{id, strategy: "lookahead_k<k>_m<M>", budget: N·(k+1), n: N, ...}``."""
    check_width(n, width)
    if k < 1:
        raise ValueError(f"lookahead needs k >= 1 steps, got {k}")
    searched = Searched(rows, setup)

    def score_after_rollouts(children: list[Candidate], round_index: int) -> None:
        rollouts = list(children)
        for step in range(k):
            live = [i for i, r in enumerate(rollouts) if not r.finished]
            if not live:
                break
            params = setup.sampling(1, f"lookahead:{round_index}:{step}", step=True, temperature=0.0)
            for i, extended in zip(live, searched.expand([rollouts[i] for i in live], params)):
                rollouts[i] = extended[0]
        searched.score(children, scored_steps=[r.steps for r in rollouts])

    groups = [Group(p, keep=n // width, target=n, beams=[root(p)]) for p in range(len(rows))]
    tree_search(searched, groups, first_expand=n, expand=width, score=score_after_rollouts, max_rounds=max_rounds)
    return final_rows(searched, groups, f"lookahead_k{k}_m{width}", budget=n * (k + 1), n=n)
