"""The `arith` task: generator, grading and the oracle step checker."""

import pytest

from ponder.inference.tasks import get_task
from ponder.inference.tasks.arith import LEVELS, StepError, diagnose, in_test_split, parse_problem, reference_steps

task = get_task("arith")
PROBLEM = {"problem": "37+48-19+26", "answer": "92"}
GOOD = "37+48=85\n37+48-19=66\n37+48-19+26=92\nAnswer: 92"


def test_reference_solution_is_canonical_and_correct():
    assert task.reference_solution(PROBLEM) == GOOD
    assert task.grade(GOOD, "92")
    assert task.first_wrong_step(PROBLEM, GOOD) is None
    assert task.split_steps(GOOD) == ["37+48=85", "37+48-19=66", "37+48-19+26=92", "Answer: 92"]
    assert task.join_steps(task.split_steps(GOOD)) == GOOD


def test_negative_running_values():
    steps = reference_steps("5-9-3")
    assert steps == ["5-9=-4", "5-9-3=-7", "Answer: -7"]
    assert diagnose("5-9-3", "\n".join(steps)) is None
    assert diagnose("5-9-3", "5-9=4\n5-9-3=1\nAnswer: 1") == StepError(0, "arithmetic")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37+48=84\n37+48-19=65\n37+48-19+26=91\nAnswer: 91", StepError(0, "arithmetic")),  # off by one
        ("37+48=86\n37+48-19=66\n37+48-19+26=92\nAnswer: 92", StepError(0, "arithmetic")),  # slip, recovers
        ("37+48=85\n37+48-19=67\n37+48-19+26=93\nAnswer: 93", StepError(1, "arithmetic")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=102\nAnswer: 102", StepError(2, "arithmetic")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=-92\nAnswer: -92", StepError(2, "arithmetic")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=92\nAnswer: 93", StepError(3, "answer")),
        ("37+48=85\n37+48+19=104\n37+48+19+26=130\nAnswer: 130", StepError(1, "copy")),  # wrong operator
        ("37+48=85\n37+48-91=-6\n37+48-91+26=20\nAnswer: 20", StepError(1, "copy")),  # wrong operand
        ("37+48=85\n37+48-19+26=92\nAnswer: 92", StepError(1, "copy")),  # two operations at once
        ("37+48=85\n37+48=85", StepError(1, "copy")),  # repeated step
        ("37+48=85\n37+48-19=66\nAnswer: 66", StepError(2, "early_answer")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=92\nAnswer: 92\n1+1=2", StepError(4, "extra")),
        ("37+48=85\n\n37+48-19=66", StepError(1, "format")),  # empty step
        ("37+48=085", StepError(0, "format")),  # leading zero
        ("37 + 48 = 85", StepError(0, "format")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=92\nAnswer 92", StepError(3, "format")),
        ("37+48=85\n37+48-19=66\n37+48-19+26=92\n92", StepError(3, "format")),
        ("@@#\x00garbage", StepError(0, "format")),
        ("37+48=8\u0665", StepError(0, "format")),  # non-ASCII digit
        ("1+1=2", StepError(0, "copy")),
    ],
)
def test_oracle_finds_first_wrong_step(text, expected):
    assert diagnose(PROBLEM["problem"], text) == expected
    assert task.first_wrong_step(PROBLEM, text) == expected.index


def test_correct_prefixes_have_no_wrong_step_but_do_not_grade():
    for prefix in ["", "37+48=85", "37+48=85\n", "37+48=85\n37+48-19=66\n37+48-19+26=92"]:
        assert task.first_wrong_step(PROBLEM, prefix) is None
        assert not task.grade(prefix, "92")


def test_negative_zero_is_wrong():
    assert diagnose("5-5+1", "5-5=-0\n5-5+1=1\nAnswer: 1") == StepError(0, "arithmetic")


def test_step_located_kinds():
    assert StepError(0, "arithmetic").step_located and StepError(3, "copy").step_located
    assert StepError(3, "answer").step_located
    assert not StepError(0, "format").step_located and not StepError(4, "extra").step_located


def test_grade_and_extract_answer():
    assert task.extract_answer("3+4\nAnswer: 3") == "3"
    assert task.extract_answer("Answer: -12") == "-12"
    assert task.extract_answer("3+4") is None
    assert task.extract_answer("Answer: 3\nAnswer: 4") == "4"
    assert not task.grade("Answer: 3x", "3")
    assert task.grade("Answer: 92", "92") and not task.grade("Answer: 91", "92")
    assert task.check_answer("-0", "0")


def test_generator_is_deterministic_and_distinct_per_seed():
    for level in LEVELS:
        a, b = task.generate(50, level, seed=7), task.generate(50, level, seed=7)
        assert a == b
        assert a != task.generate(50, level, seed=8)
        assert len({p["problem"] for p in a}) == 50
        for p in a:
            first, ops = parse_problem(p["problem"])
            assert len(ops) + 1 == LEVELS[level].operands
            assert max([first] + [x for _, x in ops]) < 10 ** LEVELS[level].digits
            assert task.grade(task.reference_solution(p), p["answer"])
            assert p["level"] == level and p["id"].startswith(f"arith-L{level}-test")


def test_splits_are_disjoint_and_test_holds_200_per_level():
    for level in LEVELS:
        test = task.generate(200, level, seed=0, split="test")
        train = task.generate(500, level, seed=0, split="train")
        assert all(in_test_split(p["problem"]) for p in test)
        assert not any(in_test_split(p["problem"]) for p in train)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="not an arith problem"):
        parse_problem("37+-48")
    with pytest.raises(ValueError, match="unknown arith level 9"):
        task.generate(1, 9, seed=0)
    with pytest.raises(ValueError, match="unknown split"):
        task.generate(1, 1, seed=0, split="dev")
    with pytest.raises(ValueError, match="fewer than"):
        task.generate(10_000, 1, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
