"""Inputs are refused before any work, naming what is wrong and where: recipes, checkpoints, problems, rows."""

import json

import pytest

from ponder.inference.tasks import get_task
from ponder.training.core.configs import ConfigError, parse_config
from ponder.training.core.problems import load_problems
from ponder.training.core.rows import BadRowError, EmptyDatasetError, load_rows
from ponder.training.evaluate import main as evaluate_main
from ponder.training.labels import LabelConfig
from ponder.training.labels import main as label_main
from ponder.training.prm import main as prm_main
from ponder.training.revision import main as revision_main
from ponder.training.revisions import main as revisions_main

GOOD = [{"id": "a", "problem": "0001+0002", "answer": "3"}, {"id": "b", "problem": "0004-0001", "answer": "3"}]
# (row, the fault named): the toy tokenizer has 1,024 positions and one token per character
BAD_PROBLEMS = {
    "empty answer": ({"id": "c", "problem": "0001+0001", "answer": ""}, "empty answer"),
    "id given twice": ({"id": "a", "problem": "0002+0002", "answer": "4"}, r"the id of an earlier problem \(.*row 0\)"),
    "no room to answer": (
        {"id": "c", "problem": "0001+" * 202 + "0001", "answer": "203"},  # fits 1,024 alone, not with 8 more
        "a prompt of 1018 tokens leaves no room for max_new_tokens=8 in the model's 1024 positions",
    ),
    "unknown characters": (
        {"id": "c", "problem": "0001+0002 ∑é", "answer": "3"},
        "the policy's tokenizer cannot encode '∑é'",
    ),
}
STAGES = {
    "label": (label_main, ["--samples_per_problem", "1", "--rollouts", "1", "--max_new_tokens", "8"]),
    "revisions": (revisions_main, ["--samples_per_problem", "1", "--max_new_tokens", "8"]),
    "evaluate": (evaluate_main, ["--prm", "oracle", "--max_solution_tokens", "8", "--strategies", "bon_naive"]),
}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("policy: p\ntask: arith\n" + text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("rollouts: 4.5\n", "'rollouts' must be int, got 4.5"), ("levels: 1\n", "'levels' must be list\\[int\\], got 1")],
)
def test_recipe_values_are_checked_against_their_types(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config((LabelConfig,), ["--config", write_recipe(tmp_path, text)])


def test_an_empty_recipe_and_a_key_given_twice_are_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# no keys\n")
    with pytest.raises(ConfigError, match="the recipe is empty"):
        parse_config((LabelConfig,), ["--config", str(empty)])
    with pytest.raises(ConfigError, match="key 'rollouts' given twice \\(line 4\\)"):
        parse_config((LabelConfig,), ["--config", write_recipe(tmp_path, "rollouts: 4\nrollouts: 5\n")])


@pytest.mark.parametrize("stage", STAGES)
def test_a_policy_that_is_neither_a_folder_nor_a_hub_id_is_named(tmp_path, stage):
    main, flags = STAGES[stage]
    policy = tmp_path / "no" / "such" / "policy"
    with pytest.raises(ConfigError, match=f"policy: '{policy}' is neither a folder nor a valid Hub id"):
        main(["--policy", str(policy), "--task", "arith", "--output_dir", str(tmp_path / "out"), *flags])


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fault", BAD_PROBLEMS)
def test_a_bad_problem_is_refused_before_any_work(tiny_model, tmp_path, stage, fault):
    row, message = BAD_PROBLEMS[fault]
    problems = write_jsonl(tmp_path / "problems.jsonl", [*GOOD, row])
    main, flags = STAGES[stage]
    command = ["--policy", str(tiny_model), "--task", "arith", "--problems_file", problems, *flags]
    with pytest.raises(BadRowError, match=f"problems.jsonl: row 2 \\(id '{row['id']}'\\): {message}"):
        main([*command, "--output_dir", str(tmp_path / "out")])
    assert not list(tmp_path.rglob("shard-*.json"))


@pytest.mark.parametrize("stage", ["label", "evaluate"])
def test_bad_problems_are_skipped_and_counted_when_the_recipe_says_so(tiny_model, tmp_path, stage):
    problems = write_jsonl(tmp_path / "problems.jsonl", [*GOOD, *(row for row, _ in BAD_PROBLEMS.values())])
    main, flags = STAGES[stage]
    command = ["--policy", str(tiny_model), "--task", "arith", "--problems_file", problems, *flags]
    if stage == "evaluate":
        command += ["--max_budget", "1", "--difficulty_samples", "1", "--probe_samples", "1", "--difficulty_bins", "1",
                    "--compare_budget", "1", "--solver_check_budget", "0"]  # fmt: skip
    record = main([*command, "--skip_bad_rows", "true", "--output_dir", str(tmp_path / "out")])
    assert record["problems"] == 2 and record["skipped_problems"] == len(BAD_PROBLEMS)
    assert record["skipped_problem_examples"][0].endswith("(id 'c'): empty answer")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"problem": "\xff"}', "line 4: not UTF-8"),
        (b'{"problem": ', "line 4: not JSON"),
        (b"[1, 2]", "line 4: a row must be a JSON object, got list"),
    ],
)
def test_a_jsonl_line_that_cannot_be_read_is_named_by_file_and_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n\n" + json.dumps(GOOD[1]).encode() + b"\n" + line + b"\n")
    with pytest.raises(BadRowError, match=f"rows.jsonl {message}"):
        load_problems(get_task("arith"), str(path))
    with pytest.raises(BadRowError, match=f"rows.jsonl {message}"):
        load_rows(str(path))


def test_an_empty_verifier_dataset_is_a_named_error(tiny_model, tmp_path):
    dataset = tmp_path / "labels.jsonl"
    dataset.write_text("")
    with pytest.raises(EmptyDatasetError, match="labels.jsonl: nothing to train on: 0 training rows"):
        prm_main(
            ["--dataset", str(dataset), "--model_name_or_path", str(tiny_model), "--task", "arith"]
            + ["--output_dir", str(tmp_path / "prm"), "--report_to", "none"]
        )


def test_trajectories_all_held_out_are_a_named_error(tiny_model, tmp_path):
    trajectory = {
        "prompt": [{"role": "user", "content": "0001+0002"}],
        "completion": [{"role": "assistant", "content": "0001+0002=0003\nAnswer: 0003"}],
    }
    dataset = write_jsonl(tmp_path / "trajectories.jsonl", [trajectory])
    with pytest.raises(EmptyDatasetError, match="eval_fraction 0.9 holds out the problems of all 1 trajectories"):
        revision_main(
            ["--dataset", dataset, "--model_name_or_path", str(tiny_model), "--task", "arith", "--eval_fraction", "0.9"]
            + ["--eval_problems_per_level", "0", "--bf16", "false", "--report_to", "none"]
            + ["--output_dir", str(tmp_path / "revision")]
        )
