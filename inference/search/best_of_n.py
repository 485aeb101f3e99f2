"""Best-of-N: N full solutions per problem, one answer chosen by naive, majority or weighted selection.

The N samples of a problem are i.i.d., so the first b of them are a valid best-of-b run: one sampling
pass serves every budget b ≤ N, and each budget's row charges only the first b samples.
"""

from __future__ import annotations

from ponder.inference.search.common import Candidate, Searched, SearchSetup
from ponder.inference.search.selection import SELECTIONS, select_answer


def best_of_n(
    rows: list[dict], setup: SearchSetup, n: int, budgets: list[int] | None = None, selections=SELECTIONS
) -> list[dict]:
    """Rows ``{id, strategy: "bon_<selection>", budget, answer, correct, ...}`` per problem, budget, selection."""
    budgets = sorted(budgets or [n])
    if budgets[0] < 1 or budgets[-1] > n:
        raise ValueError(f"best-of-N budgets must lie in 1..{n}, got {budgets}")
    unknown = sorted(set(selections) - set(SELECTIONS))
    if unknown:
        raise ValueError(f"unknown selection(s) {unknown}; use {SELECTIONS}")
    searched = Searched(rows, setup)
    samples = sample_solutions(searched, n, "best_of_n", score=bool(set(selections) - {"majority"}))
    results = []
    for problem, candidates in enumerate(samples):
        for budget in budgets:
            first = candidates[:budget]
            answers, scores = [c.answer for c in first], [c.score for c in first]
            generated = sum(c.generated_tokens for c in first)
            for how in selections:
                uses_verifier = how != "majority"
                results.append(
                    searched.result_row(
                        problem,
                        f"bon_{how}",
                        budget,
                        select_answer(answers, scores, how),
                        n=budget,
                        generated_tokens=generated,
                        verifier_tokens=sum(c.verifier_tokens for c in first) if uses_verifier else 0,
                        verifier_calls=budget if uses_verifier else 0,
                    )
                )
    return results


def sample_solutions(searched: Searched, n: int, purpose: str, score: bool = True) -> list[list[Candidate]]:
    """`n` full solutions per searched problem in one generator call, verifier-scored when `score`.

    A solution that did not end with EOS has no answer. The seed is derived from `purpose`.
    """
    task = searched.setup.task
    outputs = searched.setup.generator.generate(searched.prompts, searched.setup.sampling(n, purpose, step=False))
    samples = [
        [
            Candidate(
                problem,
                task.split_steps(c.text),
                finished=True,
                answer=task.extract_answer(c.text) if c.finish_reason == "eos" else None,
                generated_tokens=c.num_tokens,
            )
            for c in completions
        ]
        for problem, completions in enumerate(outputs)
    ]
    if score:
        searched.score([c for per_problem in samples for c in per_problem])
    return samples
