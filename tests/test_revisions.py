"""Revisions: trajectory construction, the chat layout and its loss mask, the chain loop, the SFT stage."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rapidfuzz.distance import Levenshtein
from transformers import AutoTokenizer

from ponder.inference.generation import EngineConfig, make_generator
from ponder.inference.revision import (
    EARLIER_ATTEMPT_HEADER,
    Attempt,
    RevisionFormat,
    load_revision_format,
    run_chains,
    select_from_chains,
    verifier_question,
)
from ponder.inference.strategies import Strategy, execute, load_tools, plan_runs
from ponder.inference.tasks import get_task
from ponder.training.core.sft_examples import chat_example
from ponder.training.revision import main as train_revision
from ponder.training.revisions import RevisionsConfig, build_trajectories, revisions_shard
from ponder.training.toy.model import build_tokenizer

FMT = RevisionFormat("Again: {problem}", context_window=4)
CORRECT = "1+2=3\nAnswer: 3"
WRONG = ["1+2=4\nAnswer: 4", "1+2=9\nAnswer: 9", "7+7=7\nAnswer: 77", "1+2=5\nAnswer: 5", "0+0=0\nAnswer: 0"]


def attempts_of(trajectory) -> list[str]:
    return [m["content"] for m in trajectory["prompt"] if m["role"] == "assistant"]


def test_trajectories_draw_j_within_bounds_and_end_on_the_nearest_wrong_attempt():
    rng = random.Random(0)
    seen_j = set()
    for _ in range(200):
        wrong = WRONG[: rng.randint(0, len(WRONG))]
        (trajectory,) = build_trajectories("1+2", [CORRECT], wrong, 4, FMT, rng)
        shown = attempts_of(trajectory)
        j = trajectory["num_wrong"]
        seen_j.add(j)
        assert j == len(shown) <= min(4, len(wrong)) and len(set(shown)) == j and set(shown) <= set(wrong)
        if j:
            nearest = min(wrong, key=lambda w: Levenshtein.distance(w, CORRECT))
            assert shown[-1] == nearest and trajectory["edit_distance"] == Levenshtein.distance(nearest, CORRECT)
        else:
            assert trajectory["edit_distance"] is None and trajectory["prompt"] == [{"role": "user", "content": "1+2"}]
        assert trajectory["completion"] == [{"role": "assistant", "content": CORRECT}]
    assert seen_j == {0, 1, 2, 3, 4}


def test_fewer_wrong_attempts_than_drawn_and_duplicates():
    rng = random.Random(1)
    trajectories = build_trajectories("1+2", [CORRECT] * 50, [WRONG[0], WRONG[0]], 4, FMT, rng)
    # one distinct wrong solution: j is 0 or 1, and identical trajectories are kept once
    assert sorted(t["num_wrong"] for t in trajectories) == [0, 1]


def test_contexts_that_do_not_fit_lose_their_oldest_attempts_as_at_inference():
    tokenizer = build_tokenizer()
    question, long_wrong = "0001+0002", [w * 40 for w in WRONG]  # a few hundred tokens each
    full = FMT.prompt(tokenizer, question, long_wrong[:2])
    budget = len(tokenizer(full, add_special_tokens=False)["input_ids"]) - 1  # room for one of two attempts

    def fit(attempts):
        return FMT.fitted_prompt(tokenizer, question, attempts, budget)[1]

    rng, trimmed = random.Random(4), []
    for _ in range(100):
        (trajectory,) = build_trajectories(question, [CORRECT], long_wrong, 4, FMT, rng, fit=fit)
        shown = attempts_of(trajectory)
        prompt = tokenizer.apply_chat_template(trajectory["prompt"], tokenize=False, add_generation_prompt=True)
        assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= budget
        assert len(shown) <= 1 and trajectory["num_wrong"] == len(shown)
        if shown:  # the kept attempt is the last one drawn: the nearest wrong one
            assert shown[-1] == min(long_wrong, key=lambda w: Levenshtein.distance(w, CORRECT))
        trimmed.append(trajectory["trimmed"])
    assert max(trimmed) == 3 and min(trimmed) == 0


def test_keep_trajectories_end_on_a_correct_attempt_after_fewer_wrong_ones():
    rng = random.Random(2)
    trajectories = [t for _ in range(200) for t in build_trajectories("1+2", [CORRECT], WRONG, 4, FMT, rng, 0.5)]
    kept = [t for t in trajectories if t["last_correct"]]
    assert 0.35 < len(kept) / len(trajectories) < 0.65
    for t in kept:
        shown = attempts_of(t)
        assert shown[-1] == CORRECT and set(shown[:-1]) <= set(WRONG) and t["num_wrong"] == len(shown) - 1 <= 3
        assert t["edit_distance"] == 0
    assert {t["num_wrong"] for t in kept} == {0, 1, 2, 3}
    assert not any(t["last_correct"] for t in build_trajectories("1+2", [CORRECT] * 20, WRONG, 4, FMT, rng))


def test_sampled_contexts_show_the_problems_other_samples_right_or_wrong():
    rng = random.Random(3)
    correct = [CORRECT, "2+1=3\nAnswer: 3", "3=1+2\nAnswer: 3"]
    counts = set()
    for _ in range(100):
        trajectories = build_trajectories("1+2", correct, WRONG, 4, FMT, rng, context="sampled")
        for t in trajectories:
            solution = t["completion"][0]["content"]
            shown = attempts_of(t)
            counts.add(len(shown))
            assert len(shown) <= 4 and solution not in shown and set(shown) <= set(correct + WRONG)
            assert t["num_wrong"] == sum(a in WRONG for a in shown)
            assert t["last_correct"] == (bool(shown) and shown[-1] in correct)
    assert counts == {0, 1, 2, 3, 4}
    # both kinds of attempt appear, at about the rate the samples hold them (2 right of 7 others)
    rows = [t for _ in range(300) for t in build_trajectories("1+2", correct, WRONG, 4, FMT, rng, context="sampled")]
    shown = [a for t in rows for a in attempts_of(t)]
    assert 0.2 < sum(a in correct for a in shown) / len(shown) < 0.38
    with pytest.raises(ValueError, match="context must be one of"):
        RevisionsConfig(policy="p", task="arith", context="nearest")
    with pytest.raises(ValueError, match="keep_fraction applies to context 'snell' only"):
        RevisionsConfig(policy="p", task="arith", context="sampled", keep_fraction=0.5)


def test_keep_correct_copies_the_latest_correct_attempt_shown_and_revises_only_wrong_contexts():
    rng = random.Random(4)
    correct = [CORRECT, "2+1=3\nAnswer: 3", "3=1+2\nAnswer: 3"]
    rows = [
        t
        for _ in range(100)
        for t in build_trajectories("1+2", correct, WRONG, 4, FMT, rng, context="sampled", keep_correct=True)
    ]
    kept = [t for t in rows if t["kept"]]
    assert kept and len(kept) < len(rows)
    for t in rows:
        solution = t["completion"][0]["content"]
        shown_correct = [a for a in attempts_of(t) if a in correct]
        assert t["kept"] == bool(shown_correct)
        if shown_correct:
            assert solution == shown_correct[-1]  # the latest right answer is kept, even when an earlier one is too
        else:
            assert solution in correct  # an all-wrong context still ends on a fresh correct sample
    assert any(len({a for a in attempts_of(t) if a in correct}) > 1 for t in kept)
    # the default is unchanged: a correct sample after its drawn context, never marked kept
    default = build_trajectories("1+2", correct, WRONG, 4, FMT, random.Random(4), context="sampled")
    assert not any(t["kept"] for t in default)


def test_chat_layout_shows_the_last_attempts_and_repeats_the_question():
    messages = FMT.messages("1+2", [f"try {i}" for i in range(7)])
    roles = [m["role"] for m in messages]
    assert roles == ["user"] + ["assistant", "user"] * 4
    assert [m["content"] for m in messages if m["role"] == "assistant"] == ["try 3", "try 4", "try 5", "try 6"]
    assert all(m["content"] == "Again: 1+2" for m in messages[2::2]) and messages[0]["content"] == "1+2"
    assert RevisionFormat(context_window=0).messages("1+2", ["try"]) == [{"role": "user", "content": "1+2"}]


def test_a_verifier_question_shows_the_last_earlier_attempts():
    assert verifier_question("1+2", ["a", "b", "c"], 0) == "1+2"
    assert (
        verifier_question("1+2", ["a", "b", "c"], 2) == f"1+2\n{EARLIER_ATTEMPT_HEADER}\nb\n{EARLIER_ATTEMPT_HEADER}\nc"
    )
    assert verifier_question("1+2", [], 2) == "1+2"


def test_a_prompt_past_the_context_leaves_out_the_oldest_attempts(small_policy):
    tokenizer = AutoTokenizer.from_pretrained(small_policy)
    attempts = [f"{i}" * 40 for i in range(4)]

    def length(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    full, shown = FMT.fitted_prompt(tokenizer, "1+2", attempts, None)
    assert shown == 4 and full == FMT.prompt(tokenizer, "1+2", attempts)
    limit = length(FMT.prompt(tokenizer, "1+2", attempts[1:])) + 5  # room for 3 attempts, not 4
    text, shown = FMT.fitted_prompt(tokenizer, "1+2", attempts, limit)
    assert shown == 3 and text == FMT.prompt(tokenizer, "1+2", attempts[1:]) and length(text) <= limit
    with pytest.raises(ValueError, match="question alone"):
        FMT.fitted_prompt(tokenizer, "1+2" * 50, attempts, 20)


def test_selection_within_then_across_chains():
    def chain(*pairs):
        return [Attempt("", answer, 1, score) for answer, score in pairs]

    chains = [chain(("5", 0.9), ("6", 0.2), ("6", 0.3)), chain(("6", 0.4), (None, 5.0)), chain(("5", 0.1))]
    # chain winners: 5 (0.9), 6 (0.4), 5 (0.1) -> 5 with 1.0; flat majority: 6 (3 votes against 2)
    assert select_from_chains(chains, "hierarchical") == "5"
    assert select_from_chains(chains, "majority") == "6"
    assert select_from_chains([chain((None, 1.0))], "hierarchical") is None
    with pytest.raises(ValueError, match="unknown revision selection"):
        select_from_chains(chains, "best")


def test_chains_grow_turn_by_turn_with_context(small_policy):
    task = get_task("arith")
    generator = make_generator(str(small_policy), EngineConfig(backend="hf"))
    rows = task.generate(3, 1, seed=5, split="test")
    seen_prompts = []
    generate = generator.generate

    def recording(prompts, params):
        seen_prompts.append(prompts)
        return generate(prompts, params)

    generator.generate = recording
    per_problem = run_chains(generator, task, rows, chains=2, length=3, fmt=FMT, max_new_tokens=64, seed=1)
    assert [len(chains) for chains in per_problem] == [2, 2, 2]
    assert all(len(chain) == 3 for chains in per_problem for chain in chains)
    assert len(seen_prompts) == 3 and all(len(p) == 6 for p in seen_prompts)  # one batched call per turn
    first_chain = per_problem[0][0]
    expected = FMT.prompt(generator.tokenizer, task.make_prompt(rows[0]), [a.text for a in first_chain[:2]])
    assert seen_prompts[2][0] == expected and first_chain[1].text in expected
    assert [a.attempts_shown for a in first_chain] == [0, 1, 2]
    assert generator.stats.generated_tokens == sum(a.num_tokens for c in per_problem for ch in c for a in ch)


def test_loss_falls_on_the_final_attempt_only(small_policy, tmp_path):
    """A trajectory as SFTTrainer trains it: the prompt inference feeds, then the final attempt and EOS,
    which alone carry the loss (no template newline after EOS)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(small_policy)
    (trajectory,) = build_trajectories("0001+0002", [CORRECT], WRONG[:1], 1, FMT, random.Random(0))
    assert trajectory["num_wrong"] == 1
    row = chat_example(tokenizer, trajectory["prompt"], trajectory["completion"][0]["content"])
    args = SFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none", max_length=1024)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(small_policy),
        args=args,
        train_dataset=Dataset.from_list([row]),
        processing_class=tokenizer,
    )
    example = trainer.train_dataset[0]
    assert example["input_ids"] == row["input_ids"] and example["labels"] == row["labels"]
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(trained) == CORRECT + tokenizer.eos_token
    prompt = example["input_ids"][: len(example["input_ids"]) - len(trained)]
    assert tokenizer.decode(prompt) == FMT.prompt(tokenizer, "0001+0002", WRONG[:1])
    assert set(example["labels"][: len(prompt)]) == {-100}


def test_the_stage_fits_every_context_to_the_policys_positions(small_policy):
    generator = make_generator(str(small_policy), EngineConfig(backend="hf"))
    room = 120  # prompt tokens left: the question and about one level-1 attempt
    max_new_tokens = generator.tokenizer.model_max_length - room
    config = RevisionsConfig(policy=str(small_policy), task="arith", levels=[1], samples_per_problem=6,
                             context="sampled", max_new_tokens=max_new_tokens)  # fmt: skip
    task = get_task("arith")
    shard = revisions_shard(generator, task, config, 0, task.generate(6, 1, 0, "train"))
    rows = shard["rows"]
    tokenizer = generator.tokenizer
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert rows and max(lengths) <= room and sum(r["trimmed"] for r in rows) > 0
    assert all(len(attempts_of(r)) <= 4 - r["trimmed"] for r in rows)


def test_reference_solutions_end_the_trajectories_of_problems_the_policy_never_solves(small_policy):
    generator = make_generator(str(small_policy), EngineConfig(backend="hf"))
    task = get_task("arith")
    unsolvable = [p | {"answer": "-1", "solution": f"reference {p['id']}"} for p in task.generate(3, 1, 0, "train")]

    def shard(**keys) -> dict:
        config = RevisionsConfig(policy=str(small_policy), task="arith", samples_per_problem=3, **keys)
        return revisions_shard(generator, task, config, 0, unsolvable)

    assert shard()["rows"] == [] and shard()["stats"]["problems_without_correct"] == 3
    with_references = shard(reference_solutions=True)
    completions = [row["completion"][-1]["content"] for row in with_references["rows"]]
    assert completions == [f"reference {p['id']}" for p in unsolvable]
    assert with_references["stats"]["reference_solutions"] == 3


def stage(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"ponder.training.{module}", *args]


def test_revisions_and_revision_stages_end_to_end(small_policy, tmp_path):
    data = tmp_path / "revisions"
    data_args = ["--config", "recipes/toy/revisions.yaml", "--policy", str(small_policy), "--levels", "1",
                 "--problems_per_level", "12", "--samples_per_problem", "8", "--max_new_tokens", "64",
                 "--shard_size", "4", "--output_dir", str(data)]  # fmt: skip
    subprocess.run(stage("revisions", *data_args), check=True, capture_output=True)
    stats = json.loads((data / "stats.json").read_text())
    rows = [json.loads(line) for line in (data / "trajectories.jsonl").read_text().splitlines()]
    assert stats["trajectories"] == len(rows) > 0 and stats["samples"] == 96
    assert sum(stats["num_wrong_histogram"].values()) == len(rows)
    recipe = yaml.safe_load(Path("recipes/toy/revisions.yaml").read_text())
    assert stats["revision_format"] == {"instruction": recipe["instruction"], "context_window": 4}
    assert recipe["context"] == "sampled"  # earlier attempts right or wrong: some trajectories end on a right one
    assert 0 < stats["last_correct"] == sum(r["last_correct"] for r in rows) < len(rows)

    model = tmp_path / "revision"
    train_args = ["--config", "recipes/toy/revision.yaml", "--dataset", str(data / "dataset"),
                  "--model_name_or_path", str(small_policy), "--eval_control_policy", str(small_policy),
                  "--output_dir", str(model), "--max_steps", "4", "--per_device_train_batch_size", "8",
                  "--eval_levels", "1", "--eval_problems_per_level", "4", "--eval_turns", "3",
                  "--eval_max_new_tokens", "64", "--use_peft", "true", "--eval_fraction", "0.25",
                  "--disable_tqdm", "true"]  # fmt: skip
    subprocess.run(stage("revision", *train_args), check=True, capture_output=True)
    metadata = json.loads((model / "ponder.json").read_text())
    assert metadata["kind"] == "revision" and metadata["revision_format"] == stats["revision_format"]
    record = json.loads((model / "eval.json").read_text())
    assert record["training"]["eval_trajectories"] > 0 and record["training"]["eval_loss"] is not None
    assert len(record["pass_at_1_per_turn"]["1"]) == 3 and len(record["correct_to_wrong_per_turn"]["1"]) == 2
    for control in ("revision_model_no_context", "policy_no_context"):
        assert len(record["evaluation"][control]["pass_at_1_per_turn"]["1"]) == 3
        gains = record["evaluation"]["gains_over_controls"][control]["1"]
        passes = [record["evaluation"][name]["pass_at_1_per_turn"]["1"] for name in ("revision_model", control)]
        assert [g["gain"] for g in gains] == pytest.approx([a - b for a, b in zip(*passes)], abs=1e-3)
        assert all(g["standard_error"] >= 0 for g in gains)
    assert (model / "adapter" / "adapter_config.json").exists() and (model / "model.safetensors").exists()
    judged = tmp_path / "judged"
    eval_args = ["--config", "recipes/toy/revision.yaml", "--model_name_or_path", str(model), "--eval_only", "true",
                 "--eval_control_policy", str(small_policy), "--eval_levels", "1", "--eval_problems_per_level", "3",
                 "--eval_turns", "2", "--eval_max_new_tokens", "64", "--output_dir", str(judged)]  # fmt: skip
    subprocess.run(stage("revision", *eval_args), check=True, capture_output=True)
    again = json.loads((judged / "eval.json").read_text())
    assert again["evaluation"]["problems_per_level"] == 3 and len(again["pass_at_1_per_turn"]["1"]) == 2
    assert not (judged / "model.safetensors").exists()  # nothing trained

    # The revision ORM: the revision model's own graded attempts with earlier ones in context.
    samples = tmp_path / "revision_samples"
    sample_args = ["--config", "recipes/toy/revision_samples.yaml", "--policy", str(model), "--levels", "1",
                   "--problems_per_level", "8", "--samples_per_problem", "2", "--turns", "2",
                   "--attempts_in_context", "1", "--max_new_tokens", "64", "--output_dir", str(samples)]  # fmt: skip
    subprocess.run(stage("revision_samples", *sample_args), check=True, capture_output=True)
    sample_stats = json.loads((samples / "stats.json").read_text())
    attempts = [json.loads(line) for line in (samples / "attempts.jsonl").read_text().splitlines()]
    assert sample_stats["attempts"] == 32 and sample_stats["rows"] == len(attempts) > 0
    assert set(sample_stats["correct_fraction_per_turn"]) <= {"1", "2"}
    for row in attempts:
        assert (EARLIER_ATTEMPT_HEADER in row["prompt"]) == (row["turn"] == 2)
        assert row["labels"] == [float(row["answer_correct"])] * len(row["completions"])

    orm = tmp_path / "orm-revision"
    orm_args = ["--config", "recipes/toy/orm-revision.yaml", "--dataset", str(samples / "dataset"),
                "--model_name_or_path", str(model), "--output_dir", str(orm), "--max_steps", "2",
                "--attempts_in_context", "1", "--eval_fraction", "0.5", "--disable_tqdm", "true"]  # fmt: skip
    subprocess.run(stage("orm", *orm_args), check=True, capture_output=True)
    assert json.loads((orm / "ponder.json").read_text())["attempts_in_context"] == 1
    held_out = json.loads((orm / "eval_results.json").read_text())["held_out_rows"]
    assert held_out["all"]["rows"] > 0 and "solution_auc_within_problem" in held_out["all"]

    task = get_task("arith")
    tools = load_tools(task, str(small_policy), "oracle", revision=str(model), revision_verifier=str(orm))
    assert tools.attempt_verifier is tools.revision_verifier and tools.revision_verifier.attempts_in_context == 1
    (run,) = plan_runs([Strategy.parse("revision_l2")], [2])
    rows = execute(run, task.generate(2, 1, seed=0), tools)
    assert len(rows) == 2 and all(r["verifier_calls"] == 2 and r["verifier_tokens"] > 0 for r in rows)
    assert tools.revision_verifier.stats.sequences == 4  # 2 problems x 1 chain x 2 attempts, one batched call


def test_no_trajectories_stop_the_revision_stage_or_leave_the_base_model_untrained(small_policy, tmp_path):
    """A policy that solves none of its problems (SmolLM2 on GSM8K) leaves the revisions stage no rows."""
    from datasets import Dataset

    empty = tmp_path / "dataset"
    Dataset.from_list([]).save_to_disk(str(empty))  # as the revisions stage saves no trajectories
    args = ["--config", "recipes/toy/revision.yaml", "--dataset", str(empty), "--model_name_or_path", str(small_policy),
            "--eval_problems_per_level", "0", "--output_dir", str(tmp_path / "revision")]  # fmt: skip
    with pytest.raises(ValueError, match="no trajectories, the policy solved none of its problems"):
        train_revision(args)
    record = train_revision([*args, "--untrained_without_trajectories", "true"])
    assert record == {"training": {"steps": 0, "train_rows": 0, "untrained": True}}
    assert load_revision_format(tmp_path / "revision").context_window == 4
    assert (tmp_path / "revision" / "model.safetensors").exists()
