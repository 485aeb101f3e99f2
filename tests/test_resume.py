"""Resuming only what the same fingerprint made, and one writer per output folder (label and evaluate)."""

import json
import logging
import re
import shutil
import socket
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from ponder.inference.tasks import get_task
from ponder.training import evaluate as evaluate_stage
from ponder.training import labels
from ponder.training.core import data_stage
from ponder.training.core.configs import ConfigError
from ponder.training.core.locks import FolderLocked

PROBLEMS = get_task("arith").generate(4, level=1, seed=5, split="train")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def label_args(policy, problems, output_dir, *extra):
    return [
        "--config", "recipes/toy/label.yaml", "--policy", str(policy), "--problems_file", str(problems),
        "--samples_per_problem", "2", "--rollouts", "2", "--max_new_tokens", "48", "--shard_size", "2",
        "--backend", "hf", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def evaluate_args(policy, problems, output_dir, *extra):
    return [
        "--config", "recipes/toy/evaluate.yaml", "--policy", str(policy), "--prm", "oracle",
        "--problems_file", str(problems), "--strategies", "bon_weighted", "--max_budget", "2",
        "--difficulty_samples", "2", "--probe_samples", "1", "--difficulty_bins", "2", "--compare_budget", "2",
        "--solver_check_budget", "0", "--max_solution_tokens", "48", "--shard_size", "2",
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def labelled(small_policy, tmp_path_factory):
    """A finished label folder (``label/``) made from ``problems.jsonl``, both under one folder."""
    base = tmp_path_factory.mktemp("labelled")
    write_jsonl(base / "problems.jsonl", PROBLEMS)
    labels.main(label_args(small_policy, base / "problems.jsonl", base / "label"))
    return base


@pytest.fixture
def problems_folder(tmp_path):
    """A dataset folder of problems with a ``test`` and a ``train`` split."""
    folder = tmp_path / "problems"
    DatasetDict({"test": Dataset.from_list(PROBLEMS), "train": Dataset.from_list(PROBLEMS[:2])}).save_to_disk(
        str(folder)
    )
    return folder


@pytest.fixture
def label_copy(labelled, tmp_path):
    """A copy of the finished label folder and its problems file, free to change."""
    shutil.copytree(labelled, tmp_path, dirs_exist_ok=True)
    return tmp_path


def no_model(*_args, **_kwargs):
    raise AssertionError("a model was loaded")


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--rollouts", "16"], "rollouts: 2 → 16"), (["--seed", "7"], "seed: 0 → 7"), ([], "policy/model.safetensors")],
    ids=["rollouts", "seed", "policy"],
)
def test_a_rerun_with_other_settings_is_refused_naming_them(small_policy, label_copy, monkeypatch, flags, named):
    policy = small_policy
    if not flags:  # another policy: the same files, other weights
        policy = label_copy / "other_policy"
        shutil.copytree(small_policy, policy)
        with open(policy / "model.safetensors", "r+b") as weights:
            weights.seek(-4, 2)
            weights.write(b"\x00\x01\x02\x03")
    stats = (label_copy / "label" / "stats.json").read_bytes()
    monkeypatch.setattr(data_stage, "make_generator", no_model)
    with pytest.raises(ConfigError, match=named) as refused:
        labels.main(label_args(policy, label_copy / "problems.jsonl", label_copy / "label", *flags))
    assert "--overwrite_output_dir" in str(refused.value) and "new output_dir" in str(refused.value)
    assert (label_copy / "label" / "stats.json").read_bytes() == stats


def test_an_unchanged_rerun_reuses_every_shard_and_gives_the_same_dataset(
    small_policy, labelled, label_copy, monkeypatch
):
    moved = label_copy / "moved_policy"  # a checkpoint is known by its files, wherever it lies
    shutil.copytree(small_policy, moved)
    out = label_copy / "label"
    fingerprint = (out / "fingerprint.json").read_bytes()
    monkeypatch.setattr(data_stage, "make_generator", no_model)  # every shard is done: no model loads
    labels.main(label_args(moved, label_copy / "problems.jsonl", out))
    assert (out / "fingerprint.json").read_bytes() == fingerprint
    written = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file() and path.name != "stats.json")
    assert written == sorted(path.relative_to(labelled / "label") for path in (labelled / "label").rglob("*")
                             if path.is_file() and path.name != "stats.json")  # fmt: skip
    for path in written:
        assert (out / path).read_bytes() == (labelled / "label" / path).read_bytes(), path


def test_an_edited_problems_file_is_refused_by_label(small_policy, label_copy, monkeypatch):
    write_jsonl(label_copy / "problems.jsonl", PROBLEMS[:3])
    monkeypatch.setattr(data_stage, "make_generator", no_model)
    with pytest.raises(ConfigError, match="problems_file"):
        labels.main(label_args(small_policy, label_copy / "problems.jsonl", label_copy / "label"))


def test_overwrite_output_dir_starts_fresh(small_policy, label_copy, monkeypatch):
    out = label_copy / "label"
    stats = labels.main(label_args(small_policy, label_copy / "problems.jsonl", out, "--rollouts", "1",
                                   "--overwrite_output_dir"))  # fmt: skip
    assert stats["rollouts_per_prefix"] == 1 and stats["problems"] == len(PROBLEMS)
    assert json.loads((out / "fingerprint.json").read_text())["rollouts"] == 1
    monkeypatch.setattr(data_stage, "make_generator", no_model)
    rerun = labels.main(label_args(small_policy, label_copy / "problems.jsonl", out, "--rollouts", "1"))
    assert rerun["rows"] == stats["rows"] and rerun["shard_seconds"] == stats["shard_seconds"]  # nothing recomputed


def test_a_folder_without_a_fingerprint_is_refused(small_policy, label_copy):
    (label_copy / "label" / "fingerprint.json").unlink()
    with pytest.raises(ConfigError, match="no fingerprint.json"):
        labels.main(label_args(small_policy, label_copy / "problems.jsonl", label_copy / "label"))


def test_a_live_lock_refuses_a_second_run(small_policy, label_copy):
    folder = label_copy / "label"
    args = label_args(small_policy, label_copy / "problems.jsonl", folder)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = {"host": socket.gethostname(), "pid": holder.pid, "command": "ponder label", "started": "now"}
    named = f"held by process {holder.pid} on {live['host']}"
    try:
        (folder / "lock").write_text(json.dumps(live))
        with pytest.raises(FolderLocked, match=named):
            labels.main(args)
        (folder / "lock").rename(folder / "lock-job-1-of-2")
        with pytest.raises(FolderLocked, match=named):  # a run without a split waits for every job of a split
            labels.main(args)
        assert labels.main(args + ["--shard_index", "0", "--num_shards", "2"]) is None  # jobs of a split run together
        assert [lock.name for lock in folder.glob("lock*")] == ["lock-job-1-of-2"]
    finally:
        holder.kill()
        holder.wait()
    (folder / "lock-job-1-of-2").unlink()
    (folder / "lock").write_text(json.dumps(live | {"host": "elsewhere"}))
    with pytest.raises(FolderLocked, match=f"on elsewhere.*If it does not, delete {folder / 'lock'}"):
        labels.main(args)


def test_a_stale_lock_is_taken_over(small_policy, label_copy, monkeypatch, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = label_copy / "label" / "lock"
    holder = {"host": socket.gethostname(), "pid": int(gone.stdout), "command": "ponder label", "started": "then"}
    lock.write_text(json.dumps(holder))
    monkeypatch.setattr(data_stage, "make_generator", no_model)
    with caplog.at_level(logging.WARNING):
        assert labels.main(label_args(small_policy, label_copy / "problems.jsonl", label_copy / "label")) is not None
    assert "taking over the lock" in caplog.text and not lock.exists()


def test_evaluate_refuses_another_split_config_or_edited_problems(small_policy, problems_folder, monkeypatch):
    args = evaluate_args(small_policy, problems_folder, problems_folder.parent / "eval")
    evaluate_stage.main(args)
    monkeypatch.setattr(evaluate_stage, "load_tools", no_model)
    refused = {"--problems_split": ("train", 'problems_split: "test" → "train"'),
               "--problems_config": ("main", 'problems_config: null → "main"')}  # fmt: skip
    for flag, (value, named) in refused.items():
        with pytest.raises(ConfigError, match=re.escape(named)):
            evaluate_stage.main(args + [flag, value])
    edited = problems_folder.parent / "edited"
    DatasetDict({"test": Dataset.from_list(PROBLEMS[:3]), "train": Dataset.from_list(PROBLEMS[:2])}).save_to_disk(
        str(edited)
    )
    shutil.rmtree(problems_folder)
    edited.rename(problems_folder)  # the same folder, other rows
    with pytest.raises(ConfigError, match="problems_file/test/"):
        evaluate_stage.main(args)


def test_a_failed_start_leaves_the_folder_to_the_right_command(small_policy, problems_folder, tmp_path):
    out = tmp_path / "eval"
    args = evaluate_args(small_policy, problems_folder, out)
    with pytest.raises(ValueError, match="no 'kind'"):  # not a checkpoint folder
        evaluate_stage.main(args + ["--prm", str(tmp_path / "no_prm")])
    assert not (out / "fingerprint.json").exists() and not (out / "lock").exists()
    assert evaluate_stage.main(args)["accuracy"] and (out / "fingerprint.json").exists()


def test_a_training_stage_resumes_only_checkpoints_of_its_own_settings(tmp_path):
    from conftest import SMALL_POLICY

    from ponder.training.policy import main as train_policy

    args = [*SMALL_POLICY, "--output_dir", str(tmp_path), "--max_steps", "4", "--save_strategy", "steps"]
    args += ["--save_steps", "2", "--save_total_limit", "None", "--eval_problems_per_level", "2", "--eval_samples", "1"]
    first = train_policy(args)
    assert first["training"]["resumed_from"] is None and (tmp_path / "checkpoint-4").is_dir()
    with pytest.raises(ConfigError, match=r"(?s)other settings.*learning_rate: 0\.002 → 0\.001"):
        train_policy([*args, "--learning_rate", "1e-3"])
    again = train_policy([*args, "--logging_steps", "1"])  # how often it logs changes nothing it trains
    assert again["training"]["resumed_from"] == str(tmp_path / "checkpoint-4")
    explicit = train_policy(
        [*args, "--learning_rate", "1e-3", "--resume_from_checkpoint", str(tmp_path / "checkpoint-2")]
    )
    assert explicit["training"]["resumed_from"] == str(tmp_path / "checkpoint-2")
