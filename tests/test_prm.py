"""PRM/ORM training end to end on the small policy: heads, saved checkpoints, LoRA, ZeRO-3 on 2 processes."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.inference.step_format import StepFormat, encode_many
from ponder.inference.tasks import get_task
from ponder.inference.verifiers import HFVerifier, load_verifier
from ponder.training.core.lora import ADAPTER_DIR
from ponder.training.prm import main as train_prm
from ponder.training.verifiers.stage import VerifierConfig


def stepwise_rows(count: int) -> list[dict]:
    """Reference solutions and copies with one wrong digit, labelled by the oracle (1 before the error)."""
    task = get_task("arith")
    rows = []
    for problem in task.generate(count, 1, seed=3, split="train"):
        steps = task.split_steps(task.reference_solution(problem))
        bad_step = int(problem["id"].rsplit("-", 1)[-1]) % (len(steps) - 1)
        wrong = list(steps)
        digit = wrong[bad_step][-1]
        wrong[bad_step] = wrong[bad_step][:-1] + str((int(digit) + 1) % 10)
        question = task.make_prompt(problem)
        rows.append(
            {
                "id": problem["id"],
                "problem_id": problem["id"],
                "prompt": question,
                "completions": steps,
                "labels": [1.0] * len(steps),
                "answer_correct": True,
            }
        )
        rows.append({"id": problem["id"] + "-x", "problem_id": problem["id"], "prompt": question,
                     "completions": wrong, "labels": [1.0] * bad_step + [0.0] * (len(steps) - bad_step),
                     "answer_correct": False})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("prm_data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in stepwise_rows(48)))
    return path


def prm_args(policy, dataset, output_dir, *extra):
    return [
        "--config", "recipes/toy/prm.yaml", "--dataset", str(dataset), "--model_name_or_path", str(policy),
        "--output_dir", str(output_dir), "--max_steps", "12", "--per_device_train_batch_size", "8",
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--logging_steps", "4", "--eval_fraction", "0.25",
        "--oracle_eval_policy", str(policy), "--oracle_eval_levels", "1", "--oracle_eval_problems_per_level", "6",
        "--oracle_eval_samples", "4", "--oracle_eval_max_new_tokens", "64", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def flat(scored) -> list[float]:
    return [x for s in scored for x in s.step_scores]


QUESTIONS = ["0003+0004-0002", "0001+0009"]
STEPS = [["0003+0004=0007", "0007-0002=0005", "Answer: 0005"], ["0001+0009=0011", "Answer: 0011"]]


def test_token_classification_prm_trains_and_reports(small_policy, dataset, tmp_path):
    record = train_prm(prm_args(small_policy, dataset, tmp_path))
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved["training"]["steps"] == 12 and saved["training"]["data"]["labelled_steps"] > 0
    for key in ("step_auc", "step_accuracy", "first_error_f1"):
        assert 0.0 <= saved["label_set"][f"eval_{key}"] <= 1.0
    oracle = saved["oracle"]
    assert oracle["verifier"]["all"]["samples"] == oracle["policy_likelihood"]["all"]["samples"] > 0
    for key in ("step_auc_oracle", "step_auc_within_problem", "first_error_f1"):
        assert saved[key] == oracle["verifier"]["all"][key] == record[key]
    metadata = json.loads((tmp_path / "ponder.json").read_text())
    assert metadata["kind"] == "prm_token_classification" and metadata["step_delimiter"] == "\n"
    verifier = load_verifier(tmp_path)
    scores = verifier.score(QUESTIONS, STEPS)
    assert [len(s.step_scores) for s in scores] == [3, 2]
    assert all(0.0 < x < 1.0 for s in scores for x in s.step_scores)


def test_causal_lm_prm_scores_p_plus_at_the_tags(small_policy, dataset, tmp_path):
    train_prm(prm_args(small_policy, dataset, tmp_path, "--head", "causal_lm", "--step_tag", "#",
                       "--num_labels", "2", "--oracle_eval_policy", ""))  # fmt: skip
    verifier = load_verifier(tmp_path)
    assert verifier.kind == "prm_causal_lm"
    scored = verifier.score(QUESTIONS, STEPS)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    plus, minus = tokenizer.convert_tokens_to_ids("+"), tokenizer.convert_tokens_to_ids("-")
    for encoded, result in zip(encode_many(tokenizer, StepFormat(step_tag="#"), QUESTIONS, STEPS), scored):
        assert [tokenizer.decode([encoded.input_ids[p]]) for p in encoded.step_positions] == ["#"] * len(
            encoded.step_positions
        )
        with torch.no_grad():
            logits = model(torch.tensor([encoded.input_ids])).logits[0, encoded.step_positions]
        direct = torch.softmax(logits[:, [minus, plus]], -1)[:, 1]
        assert torch.allclose(torch.tensor(result.step_scores), direct, atol=1e-6)


def test_lora_adapter_is_saved_and_the_merged_model_scores_alike(small_policy, dataset, tmp_path):
    from peft import PeftModel

    train_prm(prm_args(small_policy, dataset, tmp_path, "--use_peft", "true", "--lora_r", "4",
                       "--oracle_eval_policy", ""))  # fmt: skip
    assert (tmp_path / ADAPTER_DIR / "adapter_config.json").exists()
    merged = load_verifier(tmp_path)
    config = VerifierConfig(dataset=str(dataset), model_name_or_path=str(small_policy), task="arith")
    from ponder.training.verifiers.stage import load_model

    base = load_model(config, merged.tokenizer)
    unmerged = PeftModel.from_pretrained(base, tmp_path / ADAPTER_DIR)
    reference = HFVerifier(unmerged, merged.tokenizer, "prm_token_classification", StepFormat())
    a, b = merged.score(QUESTIONS, STEPS), reference.score(QUESTIONS, STEPS)
    assert flat(a) == pytest.approx(flat(b), abs=1e-5)
    base_scores = HFVerifier(load_model(config, merged.tokenizer), merged.tokenizer, "prm_token_classification",
                             StepFormat()).score(QUESTIONS, STEPS)  # fmt: skip
    assert flat(a) != pytest.approx(flat(base_scores), abs=1e-4)


def test_orm_labels_the_answer(small_policy, dataset, tmp_path):
    from ponder.training.orm import main as train_orm

    train_orm(prm_args(small_policy, dataset, tmp_path, "--config", "recipes/toy/orm.yaml", "--oracle_eval_policy", ""))
    verifier = load_verifier(tmp_path)
    assert verifier.kind == "orm" and [len(s.step_scores) for s in verifier.score(QUESTIONS, STEPS)] == [1, 1]


def test_zero3_lora_run_on_two_processes_trains_like_one_process_and_is_judged(small_policy, dataset, tmp_path):
    """ZeRO-3 with LoRA: the held-out rows and the oracle are judged and the merged model saved, as on one process."""
    common = ["--config", "recipes/toy-tiny/prm.yaml", "--max_steps", "12", "--use_peft", "true", "--lora_r", "4",
              "--eval_fraction", "0.1", "--seed", "7"]  # fmt: skip
    single = tmp_path / "single"
    args = prm_args(small_policy, dataset, single, *common, "--per_device_train_batch_size", "8",
                    "--oracle_eval_policy", "")  # fmt: skip
    subprocess.run([sys.executable, "-m", "ponder.training.prm", *args], check=True, capture_output=True)
    zero3 = tmp_path / "zero3"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/zero3.yaml",
        "--num_processes", "2", "--mixed_precision", "no", "--zero3_init_flag", "false",
    ]  # fmt: skip
    # DeepSpeed on CPU: its CPU accelerator, and gloo named so that accelerate counts the processes.
    args = prm_args(
        small_policy, dataset, zero3, *common, "--per_device_train_batch_size", "4", "--ddp_backend", "gloo"
    )
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([*launch, "-m", "ponder.training.prm", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((zero3 / "eval_results.json").read_text())
    assert record["training"]["distributed"] == {"processes": 2, "type": "DEEPSPEED", "zero_stage": 3}
    assert record["held_out_rows"]["all"]["rows"] > 0 and "eval_step_auc" in record["label_set"]
    assert record["oracle"]["verifier"]["all"]["samples"] > 0
    assert (zero3 / ADAPTER_DIR / "adapter_config.json").exists()
    a = load_verifier(single).score(QUESTIONS, STEPS)
    b = load_verifier(zero3).score(QUESTIONS, STEPS)
    assert flat(a) == pytest.approx(flat(b), abs=1e-4)


# The stage, killed (SIGKILL, no clean-up) right after its first checkpoint is saved.
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from transformers import Trainer
save = Trainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
Trainer._save_checkpoint = save_then_die
from ponder.training.prm import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def resumed(small_policy, dataset, tmp_path_factory):
    """A PRM run killed after its checkpoint at step 4 of 12, then run again: (output folder, log, record)."""
    output_dir = tmp_path_factory.mktemp("resumed")
    args = prm_args(small_policy, dataset, output_dir, "--config", "recipes/toy-tiny/prm.yaml", "--max_steps", "12",
                    "--oracle_eval_policy", "")  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT, *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL and not (output_dir / "eval_results.json").exists()
    first = output_dir / "checkpoint-4" / "trainer_state.json"
    saved_at = first.stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-m", "ponder.training.prm", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert first.stat().st_mtime_ns == saved_at  # not trained and saved again
    return output_dir, done.stderr, json.loads((output_dir / "eval_results.json").read_text())


def test_a_killed_run_resumes_from_its_last_checkpoint(resumed):
    output_dir, log, record = resumed
    assert f"resuming from {output_dir / 'checkpoint-4'}" in log
    assert record["training"]["resumed_from"] == str(output_dir / "checkpoint-4")
    assert record["training"]["steps"] == 12 and record["held_out_rows"]["all"]["rows"] > 0
    state = json.loads((output_dir / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12 and [e["step"] for e in state["log_history"] if "loss" in e] == [4, 8, 12]
    assert load_verifier(output_dir).kind == "prm_token_classification"


def test_eval_only_judges_a_saved_checkpoint(small_policy, dataset, resumed, tmp_path):
    checkpoint, _, trained = resumed
    train_prm(prm_args(small_policy, dataset, tmp_path, "--config", "recipes/toy-tiny/prm.yaml",
                       "--model_name_or_path", str(checkpoint), "--eval_only", "true"))  # fmt: skip
    judged = json.loads((tmp_path / "eval_results.json").read_text())
    assert judged["held_out_rows"] == trained["held_out_rows"]  # the same rows held out, the same scores
    assert judged["oracle"]["verifier"]["all"]["samples"] > 0 and "step_auc_oracle" in judged
    assert "training" not in judged and not (tmp_path / "model.safetensors").exists()


def test_likelihood_prm_is_trained_on_the_scores_the_likelihood_verifier_reads(small_policy, dataset, tmp_path):
    """head likelihood: the training-time step probability of a solution is the saved verifier's score of it."""
    from ponder.training.verifiers.data import build_features
    from ponder.training.verifiers.trainer import StepCollator, step_log_likelihoods

    train_prm(prm_args(small_policy, dataset, tmp_path, "--head", "likelihood", "--label_type", "hard",
                       "--aggregation", "min", "--oracle_eval_policy", ""))  # fmt: skip
    verifier = load_verifier(tmp_path)
    assert verifier.kind == "policy_likelihood" and verifier.aggregation == "min"
    rows = [{"prompt": q, "completions": s, "labels": [1.0] * len(s)} for q, s in zip(QUESTIONS, STEPS)]
    features, _ = build_features(rows, verifier.tokenizer, StepFormat(), None, read="step_min")
    batch = StepCollator(verifier.tokenizer.pad_token_id)(features)
    with torch.no_grad():
        logprobs, labels = step_log_likelihoods(verifier.model, batch)
    trained = [
        p for row, mask in zip(logprobs.exp().tolist(), (labels != -100).tolist()) for p, m in zip(row, mask) if m
    ]
    assert trained == pytest.approx(flat(verifier.score(QUESTIONS, STEPS)), abs=1e-5)
    base = HFVerifier(AutoModelForCausalLM.from_pretrained(small_policy), verifier.tokenizer, "policy_likelihood",
                      StepFormat()).score(QUESTIONS, STEPS)  # fmt: skip
    assert flat(base) != pytest.approx(trained, abs=1e-4)  # the fine-tune moved the likelihood
