"""`ponder pipeline`: every stage of recipes/toy-tiny as subprocesses, killed mid-stage, then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.training.cli import STAGES
from ponder.training.pipeline import STAGE_ORDER, cpu_deepspeed, launch_config, parse_overrides, redirected_inputs

TINY_STAGES = [s for s in STAGE_ORDER if Path(f"recipes/toy-tiny/{s}.yaml").exists()]


def pipeline(output_dir) -> list[str]:
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", "recipes/toy-tiny"]
    return command + ["--output_dir", str(output_dir)]


def test_pipeline_killed_in_a_stage_resumes_without_redoing_finished_stages(tmp_path):
    process = subprocess.Popen(
        pipeline(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 1800  # the policy stage first: seconds alone, many minutes on busy cores
    while not list((tmp_path / "label" / "shards").glob("*.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "the pipeline ended before the label stage wrote a shard"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the pipeline and the stage it runs, as a crash would
    process.wait()
    assert (tmp_path / "policy" / "stage_complete.json").exists()
    assert not (tmp_path / "label" / "stage_complete.json").exists()
    policy_mtime = (tmp_path / "policy" / "model.safetensors").stat().st_mtime

    second = subprocess.run(pipeline(tmp_path), capture_output=True, text=True, check=True).stdout
    assert f"[1/{len(TINY_STAGES)}] policy: complete, skipped" in second
    assert (tmp_path / "policy" / "model.safetensors").stat().st_mtime == policy_mtime
    for stage in TINY_STAGES:
        marker = json.loads((tmp_path / stage / "stage_complete.json").read_text())
        assert marker["seconds"] > 0 and STAGES[stage][0] in marker["command"]
    # inputs followed --output_dir: the label stage sampled from this run's policy
    assert json.loads((tmp_path / "label" / "stats.json").read_text())["config"]["policy"] == str(tmp_path / "policy")
    assert "policy pass@1: L1" in second and "labels: " in second and "revision pass@1 turn 1 -> last: L1" in second
    assert "revision gain at the last turn over the stronger no-context control (paired standard error): L1" in second
    report = json.loads((tmp_path / "evaluate" / "report.json").read_text())
    assert f"report: {tmp_path / 'evaluate' / 'report.md'}" in second and "efficiency_ratio" in report
    swept = {
        row["strategy"] for row in map(json.loads, (tmp_path / "evaluate" / "rows.jsonl").read_text().splitlines())
    }
    assert {"orm_bon_weighted", "beam_m4", "revision_l4"} <= swept  # the stage used this run's ORM and revision model

    # a complete stage whose settings changed since, or whose earlier stages did, is not reused silently
    rerun = subprocess.run(
        pipeline(tmp_path) + ["--set", "revision.learning_rate=1e-3"], capture_output=True, text=True
    )
    assert rerun.returncode != 0 and "revision: completed by another run" in rerun.stderr, rerun.stderr
    label_marker = tmp_path / "label" / "stage_complete.json"
    done = json.loads(label_marker.read_text())
    label_marker.write_text(json.dumps(done | {"fingerprint": "relabelled"}))  # as if labelled again since
    rerun = subprocess.run(pipeline(tmp_path) + ["--stages", "prm"], capture_output=True, text=True)
    assert rerun.returncode != 0 and "prm: completed by another run" in rerun.stderr, rerun.stderr
    label_marker.write_text(json.dumps(done))
    assert "complete, skipped" in subprocess.run(pipeline(tmp_path), capture_output=True, text=True, check=True).stdout


def test_inputs_follow_the_output_folder_and_overrides_are_checked(tmp_path):
    flags = redirected_inputs(Path("recipes/toy/prm.yaml"), Path("outputs/toy"), tmp_path)
    assert flags[flags.index("--dataset") + 1] == str(tmp_path / "label" / "dataset")
    assert flags[flags.index("--model_name_or_path") + 1] == str(tmp_path / "policy")
    assert "--output_dir" not in flags
    assert redirected_inputs(Path("recipes/toy/prm.yaml"), Path("outputs/toy"), Path("outputs/toy")) == []
    assert parse_overrides(["policy.max_steps=5", "policy.levels=1 2", "policy.hub_token=hf_x"], ["policy"]) == (
        {"policy": ["--max_steps", "5", "--levels", "1", "2"]},
        {"policy": {"HF_TOKEN": "hf_x"}},  # a token travels in the stage's environment, off its command line
    )
    with pytest.raises(SystemExit, match="the policy stage has no key 'hub_tokn'") as refused:
        parse_overrides(["policy.hub_tokn=hf_x"], ["policy"])  # refused before any stage runs, the value unshown
    assert "hf_x" not in str(refused.value)
    with pytest.raises(SystemExit, match="no stage 'nope'"):
        parse_overrides(["nope.x=1"], ["policy"])
    with pytest.raises(SystemExit, match="use STAGE.KEY=VALUE"):
        parse_overrides(["policy"], ["policy"])


def test_missing_recipe_folder_is_named(tmp_path):
    command = [sys.executable, "-m", "ponder.training.cli", "pipeline", str(tmp_path / "nope")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "nope is not a folder" in result.stderr


def test_a_stage_launches_with_its_own_accelerate_config_and_deepspeed_on_a_cpu(monkeypatch):
    folder = Path("recipes/smollm2-gsm8k")
    zero3, gloo = folder / "accelerate-prm.yaml", ["--ddp_backend", "gloo"]
    assert launch_config(folder, "prm") == zero3
    assert launch_config(folder, "label") == folder / "accelerate.yaml"
    assert launch_config(folder, "model") is None and launch_config(folder, "evaluate") is None
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cpu_deepspeed("prm", zero3) == ({"DS_ACCELERATOR": "cpu"}, gloo)
    assert cpu_deepspeed("label", zero3) == ({"DS_ACCELERATOR": "cpu"}, [])
    assert cpu_deepspeed("label", folder / "accelerate.yaml") == ({}, [])
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert cpu_deepspeed("prm", zero3) == ({}, gloo)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert cpu_deepspeed("prm", zero3) == ({}, [])


def test_only_the_named_stages_run_and_an_unknown_one_is_named(tmp_path, monkeypatch):
    from ponder.training import pipeline

    launched = []
    monkeypatch.setattr(pipeline.subprocess, "run", lambda command, env: launched.append(command) or Completed())
    record = pipeline.run_pipeline(
        Path("recipes/toy-tiny"),
        tmp_path,
        only=["label", "evaluate"],
        accelerate_config=Path("accelerate_configs/cpu.yaml"),
    )
    assert list(record) == ["label", "evaluate"]
    assert launched[0][launched[0].index("--config_file") + 1] == "accelerate_configs/cpu.yaml"  # label shards data
    assert "--config_file" not in launched[1]  # evaluate runs as a plain process
    with pytest.raises(SystemExit, match="orm2"):
        pipeline.run_pipeline(Path("recipes/toy-tiny"), tmp_path, only=["orm2"])


class Completed:
    returncode = 0


def test_a_comment_edit_keeps_a_finished_stage_and_a_settings_edit_does_not(tmp_path, monkeypatch):
    from ponder.training import pipeline

    recipes, out = tmp_path / "recipes", tmp_path / "out"
    recipes.mkdir()
    recipe = recipes / "evaluate.yaml"
    recipe.write_text(Path("recipes/toy-tiny/evaluate.yaml").read_text())
    launched = []
    monkeypatch.setattr(pipeline.subprocess, "run", lambda command, env: launched.append(command) or Completed())
    pipeline.run_pipeline(recipes, out)
    assert len(launched) == 1

    recipe.write_text("# a note added after the run\n" + recipe.read_text().replace("\n", "  \n"))
    assert pipeline.run_pipeline(recipes, out)["evaluate"]["skipped"] and len(launched) == 1

    # a marker written by an earlier ponder, which digested the recipe's text, is still honoured
    marker = out / "evaluate" / pipeline.COMPLETE_MARKER
    done = json.loads(marker.read_text())
    text_digest = pipeline.launch_fingerprint(
        done["command"], out, [recipe], [""] * pipeline.STAGE_ORDER.index("evaluate"), settings_only=False
    )
    assert text_digest != done["fingerprint"]
    marker.write_text(json.dumps(done | {"fingerprint": text_digest}))
    assert pipeline.run_pipeline(recipes, out)["evaluate"]["skipped"]

    recipe.write_text(recipe.read_text().replace("max_budget: 8", "max_budget: 4"))  # a setting, not a comment
    with pytest.raises(SystemExit, match="evaluate: completed by another run"):
        pipeline.run_pipeline(recipes, out)
