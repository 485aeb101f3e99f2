"""Difficulty bins, strategy budgets, 2-fold CV without leakage, the saved policy and the solver."""

import pytest

from ponder.inference.compute_optimal import (
    ComputeOptimalPolicy,
    ComputeOptimalSolver,
    assign_folds,
    choose_strategy,
    cross_validate,
    fit_policy,
    outcomes_of,
)
from ponder.inference.difficulty import Binning, absolute_binning, predicted_score, quantile_binning
from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.search import SearchSetup
from ponder.inference.strategies import Strategy, Tools, plan_runs, power_of_two_budgets
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import OracleVerifier

task = get_task("arith")


def test_quantile_bins_are_equal_sized_easiest_first_and_thresholds_place_new_values():
    values = {f"p{i}": i / 10 for i in range(10)}
    binning = quantile_binning(values, 5)
    assert binning.bins["p9"] == binning.bins["p8"] == "1" and binning.bins["p0"] == "5"
    assert [sum(b == label for b in binning.bins.values()) for label in binning.labels] == [2] * 5
    assert all(binning.label_of(v) == binning.bins[i] for i, v in values.items())
    # many equal estimates (pass@1 of few samples) still fill equal bins
    tied = quantile_binning({f"q{i}": float(i < 6) for i in range(10)}, 5)
    assert sorted(tied.bins.values()) == ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5"]
    with pytest.raises(ValueError, match="cannot fill"):
        quantile_binning({"a": 1.0}, 5)


def test_absolute_bins_and_predicted_score():
    bins = absolute_binning({"a": 0.5, "b": 0.49, "c": 0.1, "d": 0.09}).bins
    assert bins == {"a": "easy", "b": "medium", "c": "medium", "d": "hard"}
    assert predicted_score([0.9, 0.8, 0.7, 0.6], [True, False, True, True]) == pytest.approx((0.9 + 0.7 + 0.6) / 4)


def test_strategy_budgets_and_shared_runs():
    budgets = power_of_two_budgets(64)
    assert Strategy.parse("beam_sqrt").budgets(budgets) == [4, 16, 64]
    assert Strategy.parse("beam_m4").budgets(budgets) == [4, 8, 16, 32, 64]
    lookahead = Strategy.parse("lookahead_k3_m4")
    assert lookahead.budgets(budgets) == [16, 32, 64] and lookahead.params(64) == {"n": 16, "width": 4, "k": 3}
    assert Strategy.parse("revision_l4_majority").params(32) == {"chains": 8, "length": 4}
    for bad in ("beam_m0", "orm_bon_majority", "bon_best", "lookahead_k0_m4"):
        with pytest.raises(ValueError, match="unknown strategy"):
            Strategy.parse(bad)
    runs = plan_runs([Strategy.parse(n) for n in ("bon_weighted", "bon_naive", "beam_m4", "beam_sqrt")], [1, 4, 16])
    bon = [r for r in runs if r.kind == "best_of_n"]
    assert len(bon) == 1 and bon[0].budgets == (1, 4, 16) and dict(bon[0].params) == {"n": 16}
    shared = [r for r in runs if dict(r.params) == {"n": 16, "width": 4}]
    assert len(shared) == 1 and {s.name for s in shared[0].strategies} == {"beam_m4", "beam_sqrt"}
    assert {dict(r.params)["width"] for r in runs if r.kind == "beam"} == {2, 4}  # beam_sqrt at 4 is width 2
    distinct = Strategy.parse("beam_m4_distinct")
    assert distinct.distinct and distinct.params(16) == {"n": 16, "width": 4, "distinct": 1}
    assert Strategy.parse("beam_sqrt_distinct").budgets(budgets) == [4, 16, 64]
    with pytest.raises(ValueError, match="unknown strategy"):
        Strategy.parse("dvts_m4_distinct")
    apart = plan_runs([Strategy.parse("beam_m4"), distinct], [16])
    assert len(apart) == 2  # a distinct beam search is another search, never shared with the plain one


def rows_for(strategy: str, correct: dict, budget: int = 4, tokens: int = 10) -> list[dict]:
    return [
        {
            "id": i,
            "strategy": strategy,
            "budget": budget,
            "correct": c,
            "generated_tokens": tokens,
            "verifier_tokens": 0,
        }
        for i, c in correct.items()
    ]


@pytest.mark.parametrize("rule", ["argmax", "one_se"])
def test_cross_validation_never_chooses_on_the_fold_it_scores(rule):
    bins = {f"p{i}": "1" if i < 8 else "2" for i in range(16)}
    folds = assign_folds(bins)
    fold_a = [i for i in bins if folds[i] == 0]
    assert sorted(folds.values()).count(0) == 8 and all(
        sum(folds[i] == 0 for i in bins if bins[i] == b) == 4 for b in "12"
    )
    # beam_m4 is perfect on fold A and useless on fold B; bon_weighted solves half of every bin in each fold.
    lucky = {i: folds[i] == 0 for i in bins}
    steady = {}
    for label in "12":
        for fold in (0, 1):
            members = sorted(i for i in bins if bins[i] == label and folds[i] == fold)
            steady |= {i: k % 2 == 0 for k, i in enumerate(members)}
    rows = rows_for("beam_m4", lucky) + rows_for("bon_weighted", steady)
    (result,) = cross_validate(rows, bins, folds, rule).values()
    for choice in result["choices"]:
        assert not set(choice["chosen_on"]) & set(choice["scored_on"])
        assert all(folds[i] != choice["held_out_fold"] for i in choice["chosen_on"])
        # chosen on fold A (where beam_m4 looks perfect), scored on fold B (where it fails), and vice versa
        expected = ("bon_weighted", 0.5) if choice["held_out_fold"] == 0 else ("beam_m4", 0.0)
        assert (choice["strategy"], choice["accuracy"]) == expected
    assert result["accuracy"] == pytest.approx(0.25)  # an in-sample choice would have claimed 0.5
    assert set(fold_a) == {i for c in result["choices"] if c["held_out_fold"] == 0 for i in c["scored_on"]}


def test_one_se_rule_leaves_the_pooled_strategy_only_for_a_lead_beyond_one_standard_error():
    # pooled over both bins bon_weighted is best (14 of 20 against 12 of 20)
    bins = {f"p{i}": "1" if i < 10 else "2" for i in range(20)}
    beam = {i: int(i[1:]) < 12 for i in bins}  # all of bin 1, 2 of bin 2
    bon = {i: int(i[1:]) % 10 < 7 for i in bins}  # 7 of each bin
    at_budget = outcomes_of(rows_for("beam_m4", beam) + rows_for("bon_weighted", bon))[4]
    bin1 = [i for i in bins if bins[i] == "1"]
    bin2 = [i for i in bins if bins[i] == "2"]
    # bin 1: beam leads by 3 of 10 (gain 0.3, standard error 0.153): beyond one SE, so beam
    assert choose_strategy(at_budget, bin1, list(bins), "one_se") == "beam_m4"
    # bin 2: bon leads by 5 of 10; it is the pooled strategy anyway
    assert choose_strategy(at_budget, bin2, list(bins), "one_se") == "bon_weighted"
    # bin 1: beam leads by 1 net problem of 10 (wins 2, loses 1; standard error 0.18): stay pooled; argmax moves
    close = {i: i in ("p0", "p1", "p2", "p3", "p4", "p5", "p7", "p8", "p10", "p11") for i in bins}
    at_budget = outcomes_of(rows_for("beam_m4", close) + rows_for("bon_weighted", bon))[4]
    assert choose_strategy(at_budget, bin1, list(bins), "argmax") == "beam_m4"
    assert choose_strategy(at_budget, bin1, list(bins), "one_se") == "bon_weighted"
    with pytest.raises(ValueError, match="unknown choice rule"):
        choose_strategy(at_budget, bin1, list(bins), "best")


def test_fitted_policy_round_trips_and_falls_back_to_smaller_budgets(tmp_path):
    bins = {f"p{i}": "1" if i < 4 else "2" for i in range(8)}
    binning = Binning("predicted", ("1", "2"), (0.5,), bins)
    rows = rows_for("beam_m4", {i: bins[i] == "2" for i in bins}, tokens=20)
    rows += rows_for("bon_majority", {i: True for i in bins})
    rows += rows_for("bon_majority", {i: bins[i] == "1" for i in bins}, budget=1)
    policy = fit_policy(rows, binning, probe_samples=2, settings={"task": "arith"})
    assert policy.choices[4]["2"]["strategy"] == "bon_majority"  # tie at 1.0: the cheaper one
    assert policy.choices[4]["2"]["params"] == {"n": 4}
    path = tmp_path / "compute_optimal.json"
    policy.save(path)
    loaded = ComputeOptimalPolicy.load(path)
    assert loaded.choices == policy.choices and loaded.cv_accuracy == policy.cv_accuracy
    assert loaded.choice_rule == policy.choice_rule == "one_se"
    assert loaded.binning.thresholds == (0.5,) and loaded.binning.label_of(0.7) == "1"
    assert loaded.choice("1", 7).name == "bon_majority" and loaded.choice("1", 2).name == "bon_majority"
    with pytest.raises(ValueError, match="below the smallest"):
        loaded.choice("1", 0)


def test_solver_charges_the_probe_and_dispatches_per_bin(small_policy):
    generator = make_generator(str(small_policy), EngineConfig(backend="hf"))
    tools = Tools(SearchSetup(generator, OracleVerifier(task), task, max_step_tokens=24, max_solution_tokens=64))
    binning = Binning("predicted", ("1", "2"), (0.5,), {})
    choices = {budget: {"1": {"strategy": "bon_weighted"}, "2": {"strategy": "beam_m2"}} for budget in (1, 2, 4, 8)}
    policy = ComputeOptimalPolicy(binning, probe_samples=2, choices=choices, cv_accuracy={})
    problems = task.generate(6, level=1, seed=3)
    rows = ComputeOptimalSolver(policy, tools).solve(problems, budget=8)
    assert [r["id"] for r in rows] == [p["id"] for p in problems]
    for row in rows:
        assert row["difficulty_bin"] == binning.label_of(row["probe_score"]) and row["budget"] == 8
        if row["difficulty_bin"] == "1":  # best-of-N reuses the 2 probe samples and draws 6 more
            assert row["strategy"] == "compute_optimal/bon_weighted" and row["generations"] == 8 and row["n"] == 8
        else:  # beam search (M=2) runs on the 6 generations the probe left
            assert row["strategy"] == "compute_optimal/beam_m2" and row["run_budget"] == 6
            assert row["generations"] == 2 + 6
        assert (
            row["generated_tokens"] > 0
            and row["flops"] == 2 * generator.model.num_parameters() * row["generated_tokens"]
        )  # the oracle verifier reads no model tokens
    unlabelled = [{"id": p["id"], "problem": p["problem"]} for p in problems[:2]]
    assert all(r["correct"] is None for r in ComputeOptimalSolver(policy, tools).solve(unlabelled, budget=2))
