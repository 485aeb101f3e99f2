"""Step-wise tree search, the engine under beam search, lookahead search and DVTS.

Candidates grow one step per round. Every round expands the live beams of every group of every
problem in one batched generator call and scores all children in one batched verifier call. A group
(a whole problem for beam search, one subtree for DVTS) then sets its finished children aside and
keeps its `keep` best unfinished ones; a `distinct` group keeps its best *different* ones and shares
the freed places among them, so that a policy that repeats a step spends the budget on other paths.
A group stops when it holds `target` finished candidates, has no beam left, or the round limit is
reached; unfinished beams never become final candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.inference.search.common import Candidate, Searched
from ponder.inference.search.selection import select_answer

MAX_ROUNDS = 40


@dataclass
class Group:
    """Beams searched together: `keep` survive each round until `target` finished candidates exist."""

    problem: int
    keep: int
    target: int
    beams: list[Candidate]
    finals: list[Candidate] = field(default_factory=list)
    distinct: bool = False

    @property
    def done(self) -> bool:
        return len(self.finals) >= self.target or not self.beams


def check_width(n: int, width: int) -> None:
    """A budget of `n` beams must split into groups of `width`."""
    if width < 1 or n < width or n % width:
        raise ValueError(f"budget n={n} cannot be searched with width M={width}: n must be a multiple of M")


def tree_search(
    searched: Searched,
    groups: list[Group],
    first_expand: int,
    expand: int,
    score: Callable[[list[Candidate], int], None] | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> None:
    """Grow every group until it is done (see module docstring); `score(children, round)` sets scores."""
    score = score or (lambda children, _round: searched.score(children))
    for round_index in range(max_rounds):
        live = [g for g in groups if not g.done]
        if not live:
            return
        n = first_expand if round_index == 0 else expand
        params = searched.setup.sampling(n, f"tree:{round_index}", step=True)
        children = searched.expand([beam for g in live for beam in g.beams], params)
        score([child for kids in children for child in kids], round_index)
        start = 0
        for group in live:
            kids = [child for kids in children[start : start + len(group.beams)] for child in kids]
            start += len(group.beams)
            ranked = sorted(kids, key=lambda c: -c.score)
            group.finals += [c for c in ranked if c.finished][: group.target - len(group.finals)]
            group.beams = kept_beams([c for c in ranked if not c.finished], group.keep, group.distinct)


def kept_beams(ranked: list[Candidate], keep: int, distinct: bool) -> list[Candidate]:
    """The `keep` best of the `ranked` unfinished children. With `distinct`, identical partial solutions
    count once: the best different ones are kept, repeated in rank order to fill `keep` places, so the
    next round still expands `keep` beams and spends the same budget."""
    if not distinct:
        return ranked[:keep]
    seen: set[tuple[str, ...]] = set()
    unique = [c for c in ranked if not (tuple(c.steps) in seen or seen.add(tuple(c.steps)))][:keep]
    return [unique[i % len(unique)] for i in range(keep)] if unique else []


def root(problem: int) -> Candidate:
    return Candidate(problem, [])


def final_rows(searched: Searched, groups: list[Group], strategy: str, budget: int, n: int) -> list[dict]:
    """One row per problem: weighted best-of-N over the finished candidates of all its groups."""
    finals: dict[int, list[Candidate]] = {p: [] for p in range(len(searched.rows))}
    for group in groups:
        finals[group.problem] += group.finals
    rows = []
    for problem, candidates in finals.items():
        answer = select_answer([c.answer for c in candidates], [c.score for c in candidates], "weighted")
        rows.append(searched.result_row(problem, strategy, budget, answer, n=n, finished=len(candidates)))
    return rows
