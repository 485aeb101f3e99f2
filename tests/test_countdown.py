"""The `countdown` task: generator, solver traces, the value oracle, and a policy trained on it."""

import json
import random
from functools import cache

import pytest

from ponder.inference.tasks import Task, get_task
from ponder.inference.tasks.countdown import (
    LEVELS,
    LIMIT,
    TARGETS,
    StepError,
    diagnose,
    legal_moves,
    moves_needed,
    parse_problem,
    sample_walk,
    state_value,
)
from ponder.inference.tasks.toy import in_test_split

task = get_task("countdown")
PROBLEM = {"problem": "02 03 05 -> 25", "answer": "02 03 05 -> 25"}
GOOD = "03+02=05 | 05 05\n05*05=25 | 25\nAnswer: 25"


@cache
def brute_force(numbers: tuple[int, ...]) -> frozenset[int]:
    """Every number that can appear, by trying every ordered pair and operation, without the task's helpers."""
    found = set(numbers)
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i == j:
                continue
            rest = tuple(n for k, n in enumerate(numbers) if k not in (i, j))
            for r in (a + b, a - b, a * b if a > 1 and b > 1 else 0, a // b if b > 1 and a % b == 0 else 0):
                if 0 < r < LIMIT:
                    found |= brute_force(tuple(sorted((*rest, r))))
    return frozenset(found)


def test_state_value_agrees_with_brute_force():
    rng = random.Random(0)
    states = [tuple(sorted(rng.randint(1, 12) for _ in range(rng.randint(1, 4)))) for _ in range(40)]
    for state in states:
        for target in range(1, LIMIT):
            assert state_value(state, target) == (target in brute_force(state)), (state, target)
    assert moves_needed([2, 3, 5], 25) == 2 and moves_needed([2, 3, 5], 5) == 0 and moves_needed([4, 6, 8], 20) is None


def test_reference_solution_is_a_shortest_correct_solution():
    assert task.reference_solution(PROBLEM) == GOOD
    assert task.grade(GOOD, PROBLEM["answer"]) and task.first_wrong_step(PROBLEM, GOOD) is None
    assert task.reference_solution({"problem": "02 03 04 -> 12"}) == "04*03=12 | 02 12\nAnswer: 12"
    with pytest.raises(ValueError, match="without a solution"):
        task.reference_solution({"problem": "04 06 08 -> 20"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("05*03=15 | 02 15", StepError(0, "dead_end")),  # legal, but 2 and 15 never make 25
        ("03+02=05 | 05 05\n05+05=10 | 10", StepError(1, "dead_end")),
        ("03+02=05 | 05 05\n05*05=25 | 25\nAnswer: 25", None),
        ("02+03=05 | 05 05\n05*05=25 | 25\nAnswer: 25", None),  # + and * either way round
        ("03+02=05 | 05 05\n05*05=25 | 25\nAnswer: 25\n", None),
        ("03+02=06 | 05 06", StepError(0, "invalid")),  # wrong result
        ("07+02=09 | 05 09", StepError(0, "invalid")),  # 7 is not given
        ("05+05=10 | 02 03 10", StepError(0, "invalid")),  # only one 5
        ("03+02=05 | 05", StepError(0, "invalid")),  # a number dropped
        ("03+02=05 | 05 05 05", StepError(0, "invalid")),  # a number added
        ("02-03=01 | 05 01", StepError(0, "invalid")),  # smaller minus larger
        ("03+02=05 | 05 05\n05-05=00 | 00", StepError(1, "invalid")),  # a zero is never of use
        ("05/02=02 | 03 02", StepError(0, "invalid")),  # inexact division
        ("03+02=05 | 05 05\n05*05=25 | 25\nAnswer: 24", StepError(2, "answer")),
        ("03+02=05 | 05 05\n05*05=25 | 25\n25-05=20 | 20", StepError(2, "answer")),  # the answer is due
        ("Answer: 25", StepError(0, "early_answer")),
        ("03+02=05 | 05 05\nAnswer: 25", StepError(1, "early_answer")),
        ("03+02=05 | 05 05\n05*05=25 | 25\nAnswer: 25\nAnswer: 25", StepError(3, "extra")),
        ("03+02=05 | 05 05\n\n05*05=25 | 25", StepError(1, "format")),  # empty step
        ("3+2=5 | 5 5", StepError(0, "format")),  # not two digits
        ("03+02=05", StepError(0, "format")),  # no remaining numbers
        ("03+02=05 | 05 05\n05*05=25 | 25\nAnswer 25", StepError(2, "format")),
        ("@@#\x00garbage", StepError(0, "format")),
    ],
)
def test_oracle_finds_first_wrong_step(text, expected):
    assert diagnose(PROBLEM["problem"], text) == expected
    assert task.first_wrong_step(PROBLEM, text) == (None if expected is None else expected.index)


def test_moves_by_one_and_a_step_where_the_answer_is_due():
    problem = "01 02 03 04 -> 12"
    assert diagnose(problem, "04*01=04 | 02 03 04") == StepError(0, "invalid")  # *1 only discards a 1
    assert diagnose(problem, "04/01=04 | 02 03 04") == StepError(0, "invalid")
    assert diagnose(problem, "04*03=12 | 01 02 12\n02-01=01 | 12 01") == StepError(1, "answer")
    assert diagnose(problem, "04*03=12 | 01 02 12\n12+02=14 | 01 14") == StepError(1, "answer")
    assert diagnose(problem, "04*03=12 | 01 02 12\n1+1") == StepError(1, "format")
    assert diagnose(problem, "04*03=12 | 01 02 12\nAnswer: 12") is None
    assert diagnose(problem, "03*04=12 | 12 02 01\nAnswer: 12") is None  # the remaining numbers in any order
    assert diagnose("02 03 05 -> 25", "05*03=15 | 02 15") == StepError(0, "dead_end")
    assert StepError(0, "dead_end").step_located and StepError(0, "invalid").step_located
    assert not StepError(0, "early_answer").step_located and not StepError(0, "format").step_located


def test_the_answer_is_the_solution_checked_against_the_problem():
    gold = PROBLEM["answer"]
    assert task.extract_answer(GOOD + "\nrambling") == GOOD
    assert task.extract_answer("03+02=05 | 05 05") is None
    assert task.check_answer(task.extract_answer(GOOD), gold)
    assert not task.grade("Answer: 25", gold)  # the answer line alone proves nothing
    assert not task.grade("03+02=05 | 05 05\n05*05=25 | 25", gold)  # unfinished
    assert not task.grade("03+02=06 | 05 06\n05*06=30 | 30\nAnswer: 25", gold)
    assert not task.grade(GOOD, "02 03 06 -> 25")  # a solution of another problem
    assert task.grade(GOOD + "\n", gold) and task.grade(GOOD.replace("03+02", "02+03"), gold)


def test_task_follows_the_protocol():
    assert isinstance(task, Task) and task.name == "countdown" and task.step_delimiter == "\n"
    assert task.make_prompt(PROBLEM) == PROBLEM["problem"]
    assert task.split_steps(GOOD + "\n") == GOOD.split("\n") and task.join_steps(task.split_steps(GOOD)) == GOOD
    assert task.split_steps("\n\n") == []
    row = task.problem_from_row(PROBLEM | {"level": 1}, 0)
    assert row == {"id": "0", "problem": PROBLEM["problem"], "answer": PROBLEM["answer"], "level": 1}
    assert sorted(task.levels) == sorted(LEVELS)


def test_generator_is_deterministic_solvable_and_of_its_level():
    for level, spec in LEVELS.items():
        rows = task.generate(20, level, seed=7)
        assert rows == task.generate(20, level, seed=7) and rows != task.generate(20, level, seed=8)
        assert len({row["problem"] for row in rows}) == 20
        for row in rows:
            parsed = parse_problem(row["problem"])
            assert row["level"] == level and row["id"].startswith(f"countdown-L{level}-test")
            assert row["answer"] == row["problem"] and list(parsed.numbers) == sorted(parsed.numbers)
            assert len(parsed.numbers) == spec.numbers and max(parsed.numbers) <= spec.largest
            assert parsed.target in TARGETS and parsed.target not in parsed.numbers
            assert task.grade(task.reference_solution(row), row["answer"])


def test_splits_are_disjoint_and_test_holds_200_per_level():
    for level in LEVELS:
        assert all(in_test_split(row["problem"]) for row in task.generate(200, level, seed=0, split="test"))
        assert not any(in_test_split(row["problem"]) for row in task.generate(500, level, seed=0, split="train"))
    with pytest.raises(ValueError, match="unknown countdown level 9"):
        task.generate(1, 9, seed=0)


def test_training_solutions_are_correct_and_spread_over_moves():
    rng = random.Random(0)
    for level in LEVELS:
        examples = [task.training_example(rng, levels=[level, level]) for _ in range(40)]
        for problem, solution in examples:
            assert not in_test_split(problem) and task.first_wrong_step({"problem": problem}, solution) is None
            assert task.grade(solution, problem)
            target, numbers = parse_problem(problem).target, list(parse_problem(problem).numbers)
            for step in task.split_steps(solution)[:-2]:  # no move before the last one could make the target
                assert target not in [move.result for move in legal_moves(numbers)]
                numbers = [int(n) for n in step.split(" | ")[1].split()]
    walks = [sample_walk(rng, LEVELS[5]) for _ in range(40)]
    detours = [len(steps) - 1 > moves_needed(parse_problem(p).numbers, parse_problem(p).target) for p, steps in walks]
    assert sum(detours) > 10  # random walks that keep the target reachable, not shortest solutions


POLICY = [
    "--config", "recipes/countdown/policy.yaml",
    "--levels", "1", "2", "--train_levels", "1", "2",
    "--hidden_size", "32", "--num_layers", "2", "--num_heads", "2", "--intermediate_size", "64",
    "--max_steps", "20", "--lr_scheduler_kwargs", '{"num_decay_steps": 5}', "--logging_steps", "10",
    "--warmup_steps", "5", "--learning_rate", "3e-3", "--max_train_minutes", "0",
    "--eval_problems_per_level", "3", "--eval_samples", "2", "--eval_max_new_tokens", "48",
    "--disable_tqdm", "true",
]  # fmt: skip


def test_policy_stage_trains_a_countdown_policy(tmp_path):
    from ponder.training.policy import main

    record = main(POLICY + ["--output_dir", str(tmp_path)])
    assert json.loads((tmp_path / "eval.json").read_text()) == record
    assert record["levels"] == [1, 2] and record["training"]["steps"] == 20
    assert sum(record["finish_reasons"].values()) == 2 * 3 * 2
    metadata = json.loads((tmp_path / "ponder.json").read_text())
    assert metadata == {"kind": "policy", "task": "countdown", "step_delimiter": "\n", "prompt": "chat_template"}
    assert (tmp_path / "model.safetensors").exists()


def test_policy_keys_of_another_task_are_named(tmp_path):
    from ponder.training.policy import main

    with pytest.raises(ValueError, match="train_digits: does not apply to task 'countdown'"):
        main(POLICY + ["--train_digits", "1", "2", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="train_levels: give an inclusive range"):
        main(POLICY + ["--train_levels", "0", "7", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="train_levels: does not apply to task 'arith'"):
        main(["--config", "recipes/toy/policy.yaml", "--train_levels", "1", "2", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="toy policies only"):
        main(POLICY + ["--task", "gsm8k", "--levels", "1", "--output_dir", str(tmp_path)])
