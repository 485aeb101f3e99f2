"""Label stage: rollout values, the three modes, oracle agreement, sharding, 2 processes, resume after a kill."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import load_from_disk

from ponder.inference.generation import Completion, EngineConfig, make_generator
from ponder.inference.tasks import get_task
from ponder.training.core import data_stage
from ponder.training.labelling.quality import agreement
from ponder.training.labelling.rollouts import RolloutLabeller, Sample, stepwise_row, success_stages
from ponder.training.labels import LabelConfig
from ponder.training.verifiers.data import check_row

task = get_task("arith")
PROBLEMS = task.generate(6, level=1, seed=3, split="train")


def stage_args(policy, output_dir, *extra):
    return [
        "-m", "ponder.training.labels", "--config", "recipes/toy/label.yaml", "--policy", str(policy),
        "--levels", "1", "--problems_per_level", "6", "--samples_per_problem", "2", "--rollouts", "3",
        "--shard_size", "1", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def labeller(small_policy):
    generator = make_generator(str(small_policy), EngineConfig(backend="hf"))
    return RolloutLabeller(generator, task, rollouts=4, temperature=0.8, top_p=1.0, max_new_tokens=64)


def test_per_step_values_and_binary_search_budget(labeller):
    samples = [s for group in labeller.sample(PROBLEMS, n=4, seed=1) for s in group]
    assert {s.correct for s in samples} == {True, False}  # the small policy solves some, not all
    start = labeller.counter.rollouts
    labeller.per_step(samples, seed=2)
    per_step_rollouts = labeller.counter.rollouts - start
    distinct_prefixes = {(s.problem["id"], tuple(s.steps[: i + 1])) for s in samples for i in range(len(s.steps) - 1)}
    assert per_step_rollouts == 4 * len(distinct_prefixes) < 4 * sum(len(s.steps) - 1 for s in samples)
    values = {}
    for s in samples:  # a prefix shared by several samples is rolled out once and has one value
        for i in range(len(s.steps) - 1):
            assert values.setdefault((s.problem["id"], tuple(s.steps[: i + 1])), s.values[i]) == s.values[i]
    for s in samples:
        assert s.rollouts == [4] * (len(s.steps) - 1) + [0]
        assert s.values[-1] == float(s.correct) and all(v in (0, 0.25, 0.5, 0.75, 1.0) for v in s.values)
    per_step_hard = {(s.problem["id"], s.index): [v > 0 for v in s.values] for s in samples}

    fresh = [Sample(s.problem, s.prompt, s.index, s.steps, s.correct) for s in samples]
    start = labeller.counter.rollouts
    labeller.binary_search(fresh, seed=2)
    assert labeller.counter.rollouts - start < per_step_rollouts
    probes = [(s, len(s.steps) // 2) for s in samples if len(s.steps) > 1]
    labeller.estimate(probes, seed=3, stop_at_success=True)
    for s, j in probes:  # rollouts stop at the first success; a dead prefix used all k
        assert (s.values[j] > 0 and 1 <= s.rollouts[j] <= 4) or (s.values[j] == 0 and s.rollouts[j] == 4)
    assert success_stages(8) == [1, 1, 2, 4] and success_stages(5) == [1, 1, 2, 1]
    right = {(s.problem["id"], tuple(s.steps[: i + 1])) for s in fresh if s.correct for i in range(len(s.steps))}
    for s in fresh:  # steps shared with a right sample of the problem are positive without rollouts
        shared = 0
        while shared < len(s.steps) - 1 and (s.problem["id"], tuple(s.steps[: shared + 1])) in right:
            shared += 1
        assert s.values[:shared] == [1.0] * shared and s.rollouts[:shared] == [0] * shared
    for s in fresh:
        assert s.values == sorted(s.values, reverse=True)  # ones, then zeros from the located step
        assert (s.correct and s.values == [1.0] * len(s.steps) and sum(s.rollouts) == 0) or not s.correct
        assert s.values[-1] == float(s.correct) and len(per_step_hard[(s.problem["id"], s.index)]) == len(s.values)
        assert sum(s.rollouts) <= 4 * (math.ceil(math.log2(len(s.steps))) + 1)  # opening probe + bisection: O(k log M)


def test_outcome_labels_every_step_with_its_samples_outcome_without_rollouts(labeller):
    samples = [s for group in labeller.sample(PROBLEMS, n=4, seed=1) for s in group]
    start = labeller.counter.rollouts, labeller.counter.generated_tokens
    labeller.outcome(samples)
    assert (labeller.counter.rollouts, labeller.counter.generated_tokens) == start
    assert {s.correct for s in samples} == {True, False}
    for s in samples:  # the rest of the sample is the one rollout of each prefix
        assert s.values == [float(s.correct)] * len(s.steps)
        assert s.rollouts == [1] * (len(s.steps) - 1) + [0]
    rows = [stepwise_row(s, "keep") for s in samples]
    assert all(row["labels"] == [float(row["answer_correct"])] * len(row["completions"]) for row in rows)


def test_rollouts_sample_at_their_own_temperature(labeller):
    greedy = RolloutLabeller(
        labeller.generator, task, rollouts=4, temperature=0.8, top_p=1.0, max_new_tokens=64, rollout_temperature=0
    )
    samples = [s for group in greedy.sample(PROBLEMS, n=4, seed=1) for s in group]
    assert len({tuple(s.steps) for s in samples}) > len(PROBLEMS)  # solutions still sampled at 0.8
    greedy.per_step(samples, seed=2)
    assert {v for s in samples for v in s.values} <= {0.0, 1.0}  # greedy rollouts all agree
    assert LabelConfig(policy="p", task="arith", temperature=0.6).rollout_temperature == 0.6


def test_a_successful_rollout_vouches_for_the_steps_it_writes_verbatim(labeller):
    sample = Sample({"id": "p", "answer": "7"}, "Q", 0, ["s1", "s2", "s3", "s4", "Answer: 8"], correct=False)
    sample.successes[0] = "s2\ns3\nt4\nAnswer: 7"
    assert labeller.steps_followed(sample, 0) == 2  # prefixes ending at s2 and s3 reach the answer too
    sample.successes[1] = "t3\nAnswer: 7"
    assert labeller.steps_followed(sample, 1) == 0


def test_rows_keep_or_drop_after_the_first_zero():
    sample = Sample(PROBLEMS[0], PROBLEMS[0]["problem"], 2, ["a", "b", "c", "Answer: 1"], correct=False)
    sample.values, sample.rollouts = [0.5, 0.0, 0.25, 0.0], [4, 4, 4, 0]
    kept = stepwise_row(sample, "keep")
    assert kept["labels"] == [0.5, 0.0, 0.25, 0.0] and kept["hard"] == [True, False, True, False]
    assert kept["id"] == f"{PROBLEMS[0]['id']}-s2" and kept["level"] == 1 and kept["rollouts"] == [4, 4, 4, 0]
    dropped = stepwise_row(sample, "drop")
    assert dropped["completions"] == ["a", "b"] and dropped["labels"] == [0.5, 0.0]
    assert stepwise_row(Sample(PROBLEMS[0], "q", 0, [], correct=False), "keep") is None


def test_agreement_with_the_oracle_on_constructed_rows():
    problem = "0005+0003-0002"  # 0008, then 0006
    right = {"prompt": problem, "level": 1, "answer_correct": True, "hard": [True, True, True]}
    right["completions"] = ["0005+0003=0008", "0008-0002=0006", "Answer: 0006"]
    slip = {"prompt": problem, "level": 1, "answer_correct": False, "hard": [True, False, False]}
    slip["completions"] = ["0005+0003=0009", "0009-0002=0007", "Answer: 0007"]  # oracle: wrong from step 0
    result = agreement(task, [right, slip])["1"]
    assert result["steps"] == 6 and result["step_agreement"] == pytest.approx(5 / 6, abs=1e-4)
    assert result["negative_precision"] == 1.0 and result["negative_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["wrong_solutions"] == 1 and result["first_error_agreement"] == 0.0


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="mode: use one of"):
        LabelConfig(policy="p", task="arith", mode="exhaustive")
    with pytest.raises(ValueError, match="after_first_zero"):
        LabelConfig(policy="p", task="arith", after_first_zero="truncate")


def _rows(output_dir):
    return [json.loads(line) for line in (output_dir / "labels.jsonl").read_text().splitlines()]


def test_two_processes_and_resume_after_kill_give_the_same_dataset(small_policy, tmp_path):
    single = tmp_path / "single"
    subprocess.run([sys.executable, *stage_args(small_policy, single)], check=True, capture_output=True)
    stats = json.loads((single / "stats.json").read_text())
    assert stats["problems"] == 6 and stats["samples"] == 12 and stats["rows"] == len(_rows(single))
    assert stats["rollouts"] > 0 and stats["generated_tokens"] > 0 and stats["oracle_agreement"]["1"]["steps"] > 0
    assert load_from_disk(str(single / "dataset")).to_list() == _rows(single)

    two = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml"]
    subprocess.run([*launch, *stage_args(small_policy, two)], check=True, capture_output=True)
    assert _rows(two) == _rows(single)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *stage_args(small_policy, killed)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "shards" / "shard-00001.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "stats.json").exists() and len(list((killed / "shards").glob("*.json"))) < 6
    subprocess.run([sys.executable, *stage_args(small_policy, killed)], check=True, capture_output=True)
    assert _rows(killed) == _rows(single)


def test_push_to_hub_sends_the_merged_dataset_with_its_stats(small_policy, tmp_path, monkeypatch):
    from ponder.training import labels

    pushed = []

    def record_push(folder, repo_id):
        pushed.append((repo_id, json.loads((Path(folder) / "stats.json").read_text())["rows"]))

    monkeypatch.setattr(data_stage, "push_dataset", record_push)  # ponder.training.core.hub's; tested in test_hub
    args = stage_args(small_policy, tmp_path, "--push_to_hub", "true", "--hub_dataset_id", "me/arith-labels")
    stats = labels.main(args[2:])  # in this process: the Hub is the only thing mocked
    assert pushed == [("me/arith-labels", stats["rows"])] and stats["rows"] > 0
    with pytest.raises(ValueError, match="push_to_hub: set hub_dataset_id"):
        LabelConfig(policy="p", task="arith", push_to_hub=True)


def test_jobs_of_a_split_run_compute_their_shards_and_a_run_without_a_split_merges(small_policy, tmp_path, monkeypatch):
    from ponder.training import labels

    single = labels.main(stage_args(small_policy, tmp_path / "single", "--backend", "hf", "--dtype", "float32")[2:])
    assert single["config"]["backend"] == "hf" and single["config"]["dtype"] == "float32"  # the engine is recorded
    split = tmp_path / "split"
    for index in (1, 0):  # job 1 of 2 takes shards 1, 3, 5 of the six
        job = stage_args(small_policy, split, "--shard_index", str(index), "--num_shards", "2")[2:]
        assert labels.main(job) is None
        assert not (split / "stats.json").exists()
        if index == 1:
            assert sorted(p.name for p in (split / "shards").glob("*.json")) == [
                f"shard-{i:05d}.json" for i in (1, 3, 5)
            ]

    def no_model(*_args, **_kwargs):
        raise AssertionError("a merge with every shard done loads no model")

    monkeypatch.setattr(data_stage, "make_generator", no_model)
    assert labels.main(stage_args(small_policy, split)[2:])["rows"] == single["rows"]
    assert _rows(split) == _rows(tmp_path / "single")


class Scripted:
    """A generator that answers every prompt with one text, blank lines and all."""

    tokenizer = SimpleNamespace(apply_chat_template=lambda messages, **_: messages[0]["content"] + "\n")

    def __init__(self, text):
        self.text = text

    def generate(self, prompts, params):
        return [[Completion(self.text, 8, "eos") for _ in range(params.n)] for _ in prompts]


def test_labels_of_solutions_with_blank_lines_have_no_empty_steps():
    math = get_task("math")
    text = "We add.\n\n\n\n1 + 1 = 2.\n\n \n\nSo the answer is $\\boxed{2}$."
    labeller = RolloutLabeller(Scripted(text), math, rollouts=2, temperature=0.8, top_p=1.0, max_new_tokens=64)
    (samples,) = labeller.sample([{"id": "p", "problem": "What is 1 + 1?", "answer": "2"}], n=2, seed=0)
    labeller.per_step(samples, seed=1)
    for index, sample in enumerate(samples):
        row = stepwise_row(sample, "keep")
        check_row(row, index)  # the PRM stage's check: no empty step
        assert row["completions"] == ["We add.", "1 + 1 = 2.", "So the answer is $\\boxed{2}$."]
        assert not any(math.step_delimiter in step for step in row["completions"])
