"""`ponder evaluate` end to end on a small policy with the oracle verifier: files, figures, resume."""

import json
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from datasets import load_from_disk

from ponder.inference.compute_optimal import load_solver
from ponder.inference.engine import EngineConfig
from ponder.inference.revision import RevisionFormat
from ponder.inference.tasks import get_task
from ponder.training import evaluate as evaluate_stage

STRATEGIES = "bon_naive bon_majority bon_weighted beam_m2 beam_sqrt dvts_m2 lookahead_k1_m2 revision_l2"
TINY = ["--config", "recipes/toy/evaluate.yaml", "--prm", "oracle", "--levels", "1", "--problems_per_level", "8",
        "--max_budget", "4", "--difficulty_samples", "4", "--probe_samples", "2", "--difficulty_bins", "2",
        "--compare_budget", "4", "--solver_check_budget", "4", "--max_step_tokens", "24",
        "--max_solution_tokens", "64", "--strategies", *STRATEGIES.split()]  # fmt: skip


@pytest.fixture(scope="module")
def revision_checkpoint(small_policy, tmp_path_factory):
    """The small policy labelled as a revision model: any causal LM can run revision chains."""
    folder = tmp_path_factory.mktemp("revision") / "model"
    shutil.copytree(small_policy, folder)
    metadata = {"kind": "revision", "revision_format": RevisionFormat().to_dict()}
    (folder / "ponder.json").write_text(json.dumps(metadata))
    return folder


def test_evaluate_writes_rows_report_policy_and_resumes(small_policy, revision_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = TINY + ["--policy", str(small_policy), "--revision", str(revision_checkpoint), "--output_dir", str(out),
                   "--large_policy", str(small_policy)]  # fmt: skip
    report = evaluate_stage.main(args)

    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(load_from_disk(str(out / "rows"))) == len(rows)
    by_key = {(r["id"], r["strategy"], r["budget"]): r for r in rows}
    assert len(by_key) == len(rows)
    expected_budgets = {
        "bon_weighted": [1, 2, 4], "beam_m2": [2, 4], "beam_sqrt": [4], "dvts_m2": [2, 4],
        "lookahead_k1_m2": [4], "revision_l2": [2, 4],
    }  # fmt: skip
    for strategy, budgets in expected_budgets.items():
        assert sorted({r["budget"] for r in rows if r["strategy"] == strategy}) == budgets
    policy_parameters = report["parameters"]["policy"]
    for row in rows:
        assert row["generations"] == row["budget"]
        assert row["flops"] == 2 * policy_parameters * row["generated_tokens"]  # the oracle reads no model tokens
    assert all(r["n"] == 2 for r in rows if r["strategy"] == "lookahead_k1_m2")  # N·(k+1) = 4 generations

    # report figures are the rows' figures
    for strategy, per_budget in report["accuracy"].items():
        for budget, accuracy in per_budget.items():
            group = [r["correct"] for r in rows if r["strategy"] == strategy and r["budget"] == int(budget)]
            assert accuracy == pytest.approx(sum(group) / len(group))
    eff = report["efficiency"]["oracle_bins"]
    assert eff["reference_accuracy_at_cap"] == report["accuracy"]["bon_weighted"]["4"]
    if eff["budget_reaching_it"] is not None and report["efficiency"]["reference_gain_over_n1"] > 0:
        assert report["efficiency_ratio"] == eff["reference_budget_reaching_it"] / eff["budget_reaching_it"]
        assert (
            report["compute_optimal"]["oracle"]["cv_accuracy"][str(eff["budget_reaching_it"])]
            >= eff["reference_accuracy_at_cap"]
        )
    assert set(report["compute_optimal"]) == {"oracle", "predicted", "absolute", "single"}
    other = report["compute_optimal_other_rule"]  # the argmax rule beside the default one_se
    assert (
        report["choice_rule"] == "one_se"
        and other["rule"] == "argmax"
        and set(other) == {"rule", "oracle", "predicted"}
    )
    assert other["oracle"]["cv_accuracy"].keys() == report["compute_optimal"]["oracle"]["cv_accuracy"].keys()
    check = report["solver_check"]
    assert check["budget"] == 4 and check["mean_generations"] <= 4 and 0 <= check["accuracy"] <= 1
    assert "revision_l2" not in report["skipped_strategies"]

    # FLOPs-matched against itself as the "large" policy: equal FLOPs leave exactly one generation per query
    matched = report["flops_matched"]
    greedy = [row for shard in sorted((out / "runs").glob("large_policy_greedy_*/shard-*.json"))
              for row in json.loads(shard.read_text())["rows"]]  # fmt: skip
    assert len(greedy) == 8 and matched["large_greedy"]["all"] == pytest.approx(sum(r["correct"] for r in greedy) / 8)
    for result in matched["by_ratio"]:
        assert result["matched_generations"] == 1.0 and result["budget"] == 1 and not result["capped"]
        assert result["small_compute_optimal"]["all"] == report["compute_optimal"]["oracle"]["cv_accuracy"]["1"]
    names = ("report.json", "report.md", "accuracy_vs_budget.png", "accuracy_per_bin.png", "revision_heatmap.png",
             "flops_matched.png")  # fmt: skip
    for name in names:
        assert (out / name).stat().st_size > 0
    assert "efficiency ratio" in (out / "report.md").read_text()

    # the saved policy loads with its checkpoints, as the engine settings say, and answers new problems
    solver = load_solver(out / "compute_optimal.json", engine=EngineConfig(dtype="bfloat16"))
    assert solver.tools.setup.generator.model.dtype == torch.bfloat16
    problems = get_task("arith").generate(2, level=1, seed=99)
    assert [r["id"] for r in solver.solve(problems, budget=4)] == [p["id"] for p in problems]

    # a rerun finds every run on disk; other problem settings on the same folder are refused
    def no_new_runs(*_args, **_kwargs):
        raise AssertionError("a finished run was executed again")

    monkeypatch.setattr(evaluate_stage, "execute", no_new_runs)
    monkeypatch.setattr(evaluate_stage, "difficulty_rows", no_new_runs)
    monkeypatch.setattr(evaluate_stage, "solver_check", no_new_runs)
    assert evaluate_stage.main(args)["accuracy"] == report["accuracy"]
    with pytest.raises(ValueError, match="problems_per_level"):
        evaluate_stage.main(args + ["--problems_per_level", "4"])


def test_the_efficiency_ratio_is_undefined_when_the_reference_gains_nothing_over_one_sample():
    from ponder.training.reporting.report import efficiency

    compute_optimal = {"1": 0.5, "2": 0.6, "4": 0.7}
    gaining = efficiency(compute_optimal, {"1": 0.4, "2": 0.5, "4": 0.6}, cap=4)
    assert gaining == {
        "reference_accuracy_at_cap": 0.6,
        "reference_budget_reaching_it": 4,
        "budget_reaching_it": 2,
        "ratio": 2.0,
    }
    flat = efficiency(compute_optimal, {"1": 0.5, "2": 0.5, "4": 0.5}, cap=4)
    assert flat["budget_reaching_it"] == 1 and flat["ratio"] is None
    assert efficiency(compute_optimal, {"1": 0.4, "4": 0.9}, cap=4)["ratio"] is None  # never reached


def test_the_efficiency_ratio_counts_from_where_a_saturated_reference_first_reaches_its_own_figure():
    from ponder.training.reporting.report import efficiency

    # best-of-2 already scores what best-of-8 scores: the reference needs 2, not 8, for its figure
    saturated = efficiency({"1": 0.4, "2": 0.7, "4": 0.7, "8": 0.7}, {"1": 0.4, "2": 0.7, "4": 0.65, "8": 0.7}, cap=8)
    assert saturated["reference_budget_reaching_it"] == 2 and saturated["budget_reaching_it"] == 2
    assert saturated["ratio"] == 1.0


def test_seq_par_table_groups_revision_rows_by_budget_strategy_and_level():
    from ponder.training.reporting.report import seq_par_markdown, seq_par_table

    rows = [
        {"strategy": strategy, "budget": budget, "level": level, "correct": correct}
        for strategy in ("revision_l1", "revision_l4_majority", "bon_weighted")
        for budget in (4, 16, 32, 64)
        for level, correct in ((1, True), (1, False), (2, True))
    ]
    table = seq_par_table(rows)
    assert list(table) == ["16", "64"]  # powers of 4 from 16; best-of-N rows are not revisions
    assert table["16"]["revision_l1"] == {"1": 0.5, "2": 1.0, "all": 2 / 3}
    markdown = seq_par_markdown(table)
    assert "| 1:64 (hierarchical) |" in markdown and "| 4:16 (majority) |" in markdown
    assert "not run" in seq_par_markdown({})


def test_split_jobs_merge_into_the_report_of_one_run_and_resume_inside_a_strategy_run(
    small_policy, revision_checkpoint, tmp_path, monkeypatch
):
    args = TINY + ["--policy", str(small_policy), "--revision", str(revision_checkpoint), "--problems_per_level", "6",
                   "--shard_size", "2", "--strategies", "bon_weighted", "revision_l2"]  # fmt: skip
    single = evaluate_stage.main(args + ["--output_dir", str(tmp_path / "single")])
    split = tmp_path / "split"
    for index in (1, 0):  # 6 problems in shards of 2: job 0 of 2 takes shards 0 and 2, job 1 shard 1
        job = args + ["--output_dir", str(split), "--shard_index", str(index), "--num_shards", "2"]
        assert evaluate_stage.main(job) is None
    assert not (split / "report.json").exists() and not list((split / "runs").glob("solver_check_*"))
    merged = evaluate_stage.main(args + ["--output_dir", str(split)])
    for key in ("accuracy", "compute", "compute_optimal", "solver_check"):
        assert merged[key] == single[key]
    assert (split / "rows.jsonl").read_text() == (tmp_path / "single" / "rows.jsonl").read_text()

    # a run killed inside a strategy run computes only that run's missing shard again
    (split / "runs" / "bon_n4" / "shard-00001.json").unlink()
    executed = []
    execute = evaluate_stage.execute

    def counted(run, problems, tools):
        executed.append((run.key, [p["id"] for p in problems]))
        return execute(run, problems, tools)

    monkeypatch.setattr(evaluate_stage, "execute", counted)
    resumed = evaluate_stage.main(args + ["--output_dir", str(split)])
    problems = get_task("arith").generate(6, level=1, seed=0)
    assert executed == [("bon_n4", [p["id"] for p in problems[2:4]])]
    assert resumed["accuracy"] == single["accuracy"]


def test_the_models_of_an_evaluation_share_the_gpu_and_load_on_its_device(monkeypatch):
    from ponder.inference import strategies
    from ponder.inference.engine import EngineConfig

    config = evaluate_stage.EvaluateConfig(
        policy="policy", prm="prm", orm="orm", revision="revision", revision_verifier="rv", task="arith"
    )
    engine = config.shared_engine(EngineConfig(gpu_memory_utilization=0.9))
    assert engine.gpu_memory_utilization == pytest.approx(0.9 / 5)  # five models on one GPU
    alone = evaluate_stage.EvaluateConfig(policy="policy", prm="oracle", task="arith")
    assert alone.shared_engine(EngineConfig(gpu_memory_utilization=0.9)).gpu_memory_utilization == 0.9
    loaded = []

    def generator(path, engine=None, device=None, seed=0):
        loaded.append((path, engine, device))
        return SimpleNamespace(tokenizer=None)

    def verifier(path, device=None, engine=None, **overrides):
        loaded.append((path, engine, device))
        return SimpleNamespace(aggregation="last")

    monkeypatch.setattr(strategies, "make_generator", generator)
    monkeypatch.setattr(strategies, "load_verifier", verifier)
    monkeypatch.setattr(strategies, "load_revision_format", lambda path: RevisionFormat())
    strategies.load_tools(get_task("arith"), **config.checkpoints(), device="cuda:1", engine=engine, engine_seed=3)
    assert sorted(path for path, _, _ in loaded) == ["orm", "policy", "prm", "revision", "rv"]
    assert all(used is engine and device == "cuda:1" for _, used, device in loaded)


def test_two_processes_write_the_report_of_one(small_policy, tmp_path):
    args = TINY + ["--policy", str(small_policy), "--shard_size", "3", "--strategies", "bon_weighted", "beam_m2"]
    single = evaluate_stage.main(args + ["--output_dir", str(tmp_path / "single")])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml"]
    two = tmp_path / "two"
    subprocess.run([*launch, "-m", "ponder.training.evaluate", *args, "--output_dir", str(two)], check=True)
    assert json.loads((two / "report.json").read_text())["accuracy"] == single["accuracy"]
    assert (two / "rows.jsonl").read_text() == (tmp_path / "single" / "rows.jsonl").read_text()

    # killed (SIGKILL) once some shards are saved, then run again: the rows of the uninterrupted run
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "ponder.training.evaluate", *args, "--output_dir", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(list(killed.glob("runs/*/shard-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not (killed / "report.json").exists()
    subprocess.run(command, check=True, capture_output=True)  # the dead run's lock is taken over
    assert (killed / "rows.jsonl").read_text() == (tmp_path / "single" / "rows.jsonl").read_text()
