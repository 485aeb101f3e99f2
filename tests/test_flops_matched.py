"""The FLOPs-matched budget (Snell et al.'s exchange of pretraining and test-time compute) and its table."""

import json

import pytest

from ponder.training.reporting.flops_matched import compare, matched_generations, verifier_cost


@pytest.mark.parametrize(("ratio", "expected"), [(0.16, 257.75), (0.79, 63.4), (22.0, 15.8)])
def test_matched_generations_reproduce_snells_budgets(ratio, expected):
    """A 14x larger model on the same data: k = M + 3(M - 1)/R, Snell's budgets of about 256, 64 and 16."""
    small, large = {"parameters": 10, "tokens": 1000}, {"parameters": 140, "tokens": 1000}
    assert matched_generations(small, large, ratio) == pytest.approx(expected, abs=0.1)


def test_less_pretraining_for_the_small_model_buys_it_more_generations():
    large = {"parameters": 140, "tokens": 1000}
    assert matched_generations({"parameters": 10, "tokens": 500}, large, 0.79) > matched_generations(
        {"parameters": 10, "tokens": 1000}, large, 0.79
    )


def test_compare_reads_the_largest_swept_budget_within_the_match_and_marks_the_cap():
    small, large = {"parameters": 10, "tokens": 1000}, {"parameters": 140, "tokens": 1000}
    greedy = [{"id": "a", "correct": True, "generated_tokens": 5}, {"id": "b", "correct": False, "generated_tokens": 7}]
    per_bin = {"0": {"1": 0.5, "16": 0.9, "32": 1.0}, "1": {"1": 0.0, "16": 0.2, "32": 0.25}}
    cv = {"1": 0.25, "16": 0.55, "32": 0.6}
    result = compare(small, large, greedy, per_bin, cv, {"a": "0", "b": "1"}, [1, 16, 32])
    assert result["large_greedy"] == {"all": 0.5, "0": 1.0, "1": 0.0}
    by_ratio = {r["ratio"]: r for r in result["by_ratio"]}
    assert by_ratio[22.0]["budget"] == 1 and by_ratio[22.0]["small_compute_optimal"]["all"] == 0.25  # 15.8 < 16
    assert by_ratio[0.16]["budget"] == 32 and by_ratio[0.16]["capped"]  # 258 generations, sweep ends at 32
    assert by_ratio[0.79]["small_compute_optimal"] == {"all": 0.6, "0": 1.0, "1": 0.25}


def test_a_verifier_counts_on_the_small_side(tmp_path):
    small, large = {"parameters": 10, "tokens": 1000}, {"parameters": 140, "tokens": 1000}
    as_costly = {"parameters": 10, "pretraining_flops": 0, "tokens_per_generated_token": 1.0}
    assert matched_generations(small, large, 0.79, as_costly) == pytest.approx(
        matched_generations(small, large, 0.79) / 2
    )
    the_large_model = {"parameters": 140, "pretraining_flops": 6 * 140 * 1000, "tokens_per_generated_token": 1.0}
    assert all(matched_generations(small, large, r, the_large_model) < 1 for r in (0.16, 0.79, 22.0))
    greedy = [{"id": "a", "correct": True, "generated_tokens": 5}]
    result = compare(small, large, greedy, {"0": {"1": 1.0}}, {"1": 1.0}, {"a": "0"}, [1], the_large_model)
    assert all(r["budget"] is None for r in result["by_ratio"]) and result["verifier"] == the_large_model

    (tmp_path / "large").mkdir()
    (tmp_path / "large" / "eval.json").write_text(
        json.dumps({"training": {"parameters": 140, "tokens_seen_with_padding": 1000}})
    )
    (tmp_path / "prm").mkdir()
    (tmp_path / "prm" / "ponder.json").write_text(json.dumps({"base_model": str(tmp_path / "large")}))
    rows = [{"generated_tokens": 10, "verifier_tokens": 15}, {"generated_tokens": 30, "verifier_tokens": 45}]
    cost = verifier_cost(str(tmp_path / "prm"), str(tmp_path / "small"), 140, rows)
    assert cost == {"parameters": 140, "pretraining_flops": 6 * 140 * 1000, "tokens_per_generated_token": 1.5}
    assert verifier_cost(str(tmp_path / "small"), str(tmp_path / "small"), 10, rows)["pretraining_flops"] == 0
    assert verifier_cost(None, str(tmp_path / "small"), None, rows) is None
