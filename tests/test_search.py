"""Search algorithms on a small trained policy: bookkeeping, budgets, determinism, selection."""

import pytest

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.search import SearchSetup, beam_search, best_of_n, dvts, lookahead_search, select_answer
from ponder.inference.search.common import Candidate, Searched
from ponder.inference.search.tree import kept_beams
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import OracleVerifier, Scored

task = get_task("arith")
ROWS = task.generate(6, level=1, seed=5)


class Recording:
    """Wraps a generator and records (prompts, n, temperature) of every call."""

    def __init__(self, inner):
        self.inner, self.tokenizer, self.calls, self.prompts = inner, inner.tokenizer, [], []

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params.n, params.temperature))
        self.prompts.append(prompts)
        return self.inner.generate(prompts, params)


class AnswerVerifier:
    """A constructed verifier: every step of a solution scores `weights[answer]` (0.1 without answer)."""

    def __init__(self, weights):
        self.weights = weights

    def score(self, questions, steps):
        out = []
        for solution in steps:
            value = self.weights.get(task.extract_answer(task.join_steps(solution)), 0.1)
            out.append(Scored([value] * len(solution), num_tokens=len(solution)))
        return out


@pytest.fixture(scope="module")
def generator(small_policy):
    return make_generator(str(small_policy), EngineConfig(backend="hf"))


def setup_for(generator, verifier=None, **kwargs):
    return SearchSetup(Recording(generator), verifier or OracleVerifier(task), task, max_step_tokens=24, **kwargs)


def test_selection_rules():
    answers = ["7", "9", "7", None, "9", "9"]
    scores = [0.9, 0.3, 0.5, 1.0, 0.3, 0.2]
    assert select_answer(answers, scores, "naive") == "7"  # the unfinished 1.0 never wins
    assert select_answer(answers, scores, "weighted") == "7"  # 1.4 against 0.8
    assert select_answer(answers, scores, "majority") == "9"
    assert select_answer([None, None], [1.0, 1.0], "weighted") is None
    with pytest.raises(ValueError, match="unknown selection"):
        select_answer(answers, scores, "best")


def test_best_of_n_rows_budgets_and_weighted_choice(generator):
    setup = setup_for(generator)
    rows = best_of_n(ROWS, setup, n=8, budgets=[1, 4, 8])
    assert len(rows) == len(ROWS) * 3 * 3
    assert {r["strategy"] for r in rows} == {"bon_naive", "bon_majority", "bon_weighted"}
    for r in rows:
        assert r["budget"] == r["n"] and r["generated_tokens"] > 0
        assert r["verifier_calls"] == (0 if r["strategy"] == "bon_majority" else r["budget"])
    tokens = {(r["id"], r["budget"]): r["generated_tokens"] for r in rows}
    assert all(tokens[(p["id"], 1)] < tokens[(p["id"], 4)] < tokens[(p["id"], 8)] for p in ROWS)
    assert setup.generator.calls == [(len(ROWS), 8, 0.8)]

    # The weighted row picks the answer with the largest summed score over the same samples.
    samples = generator.generate(Searched(ROWS, setup).prompts, setup.sampling(8, "best_of_n", step=False))
    weights = {}
    for completions in samples:
        for i, c in enumerate(completions):
            weights.setdefault(task.extract_answer(c.text), 0.2 + 0.1 * (i % 5))
    weighted = best_of_n(ROWS, setup_for(generator, AnswerVerifier(weights)), n=8, selections=["weighted"])
    for row, completions in zip(weighted, samples):
        answers = [task.extract_answer(c.text) if c.finish_reason == "eos" else None for c in completions]
        assert row["answer"] == select_answer(answers, [weights.get(a, 0.1) for a in answers], "weighted")


def test_beam_search_keeps_n_over_m_beams_per_round(generator):
    setup = setup_for(generator)
    rows = beam_search(ROWS, setup, n=8, width=2)
    calls = setup.generator.calls
    assert calls[0] == (len(ROWS), 8, 0.8)  # N first steps per problem
    assert all(n == 2 and prompts <= len(ROWS) * 4 for prompts, n, _ in calls[1:])
    assert calls[1][0] == len(ROWS) * 4  # N/M = 4 kept beams per problem
    for row in rows:
        assert row["strategy"] == "beam_m2" and row["budget"] == 8 and row["finished"] <= 8
        assert 8 <= row["verifier_calls"] <= 8 * len(calls) and row["generated_tokens"] > 0
    with pytest.raises(ValueError, match="multiple of M"):
        beam_search(ROWS, setup, n=6, width=4)


def test_distinct_beams_count_a_repeated_partial_solution_once_and_share_its_places():
    a1, a2, b, c = (Candidate(0, steps) for steps in (["1+1=2"], ["1+1=2"], ["1+2=3"], ["2+2=4"]))
    ranked = [a1, a2, b, c]  # best first
    assert kept_beams(ranked, 3, distinct=False) == [a1, a2, b]
    assert kept_beams(ranked, 3, distinct=True) == [a1, b, c]
    assert kept_beams([a1, a2], 4, distinct=True) == [a1, a1, a1, a1]  # one path: it takes every place
    assert kept_beams([a1, a2, b], 4, distinct=True) == [a1, b, a1, b]
    assert kept_beams([], 2, distinct=True) == []


def test_a_distinct_beam_search_spends_the_same_generations_on_different_beams(generator):
    plain, distinct = setup_for(generator), setup_for(generator)
    rows = beam_search(ROWS, distinct, n=8, width=2, distinct=True)
    beam_search(ROWS, plain, n=8, width=2)
    assert distinct.generator.calls[0] == plain.generator.calls[0] == (len(ROWS), 8, 0.8)
    assert all(n == 2 for _, n, _ in distinct.generator.calls[1:])
    assert distinct.generator.calls[1][0] == plain.generator.calls[1][0] == len(ROWS) * 4  # N/M places each
    # Both rank the same first steps (same seed): the plain search keeps repeats, the distinct one other paths.
    kept_plain, kept_distinct = plain.generator.prompts[1], distinct.generator.prompts[1]
    for problem in range(len(ROWS)):
        mine, theirs = kept_distinct[4 * problem : 4 * problem + 4], kept_plain[4 * problem : 4 * problem + 4]
        assert set(theirs) <= set(mine) and mine == (list(dict.fromkeys(mine)) * 4)[:4]
    assert len(set(kept_distinct)) > len(set(kept_plain))
    assert all(r["budget"] == 8 and r["finished"] <= 8 for r in rows)


def test_lookahead_charges_n_times_k_plus_one(generator):
    setup = setup_for(generator)
    rows = lookahead_search(ROWS, setup, n=4, width=2, k=2)
    assert all(r["budget"] == 4 * 3 and r["n"] == 4 and r["strategy"] == "lookahead_k2_m2" for r in rows)
    greedy = [c for c in setup.generator.calls if c[2] == 0.0]
    sampled = [c for c in setup.generator.calls if c[2] == 0.8]
    assert greedy and all(n == 1 for _, n, _ in greedy)
    assert len(greedy) <= 2 * len(sampled)
    plain = beam_search(ROWS, setup_for(generator), n=4, width=2)
    for with_rollouts, without in zip(rows, plain):
        assert with_rollouts["generated_tokens"] > without["generated_tokens"] > 0
    with pytest.raises(ValueError, match="k >= 1"):
        lookahead_search(ROWS, setup, n=4, width=2, k=0)


def test_dvts_returns_n_finished_candidates_and_is_seeded(generator):
    rows = dvts(ROWS, setup_for(generator), n=8, width=4)
    assert all(r["finished"] == 8 and r["strategy"] == "dvts_m4" and r["budget"] == 8 for r in rows)
    assert dvts(ROWS, setup_for(generator), n=8, width=4) == rows
    assert dvts(ROWS, setup_for(generator, seed=1), n=8, width=4) != rows
