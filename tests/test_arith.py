"""The `arith` task: generator, grading and the oracle step checker."""

import pytest

from ponder.inference.tasks import get_task
from ponder.inference.tasks.arith import (
    LEVELS,
    NUMBER_WIDTH,
    StepError,
    diagnose,
    in_test_split,
    parse_problem,
    reference_steps,
)

task = get_task("arith")
PROBLEM = {"problem": "037+048-019+026", "answer": "92"}
GOOD = "037+048=085\n085-019=066\n066+026=092\nAnswer: 092"


def test_reference_solution_is_canonical_and_correct():
    assert task.reference_solution(PROBLEM) == GOOD
    assert task.grade(GOOD, "92")
    assert task.first_wrong_step(PROBLEM, GOOD) is None
    assert task.split_steps(GOOD) == ["037+048=085", "085-019=066", "066+026=092", "Answer: 092"]
    assert task.join_steps(task.split_steps(GOOD)) == GOOD


def test_running_value_reaching_zero():
    steps = reference_steps("05-05+03")
    assert steps == ["05-05=00", "00+03=03", "Answer: 03"]
    assert diagnose("05-05+03", "\n".join(steps)) is None
    assert diagnose("05-05+03", "05-05=01\n01+03=04\nAnswer: 04") == StepError(0, "arithmetic")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("037+048=084\n084-019=065\n065+026=091\nAnswer: 091", StepError(0, "arithmetic")),  # off by one
        ("037+048=086\n085-019=066\n066+026=092\nAnswer: 092", StepError(0, "arithmetic")),  # slip, recovers
        ("037+048=085\n085-019=067\n067+026=093\nAnswer: 093", StepError(1, "arithmetic")),
        ("037+048=085\n085-019=066\n066+026=102\nAnswer: 102", StepError(2, "arithmetic")),
        ("037+048=085\n085-019=066\n066+026=092\nAnswer: 093", StepError(3, "answer")),
        ("037+048=085\n085-019=066\n066+026=092\nAnswer: 92", None),  # unpadded answer is the same number
        ("037+048=085\n085+019=104\n104+026=130\nAnswer: 130", StepError(1, "copy")),  # wrong operator
        ("037+048=085\n085-091=000\n000+026=026\nAnswer: 026", StepError(1, "copy")),  # wrong operand
        ("037+048=085\n086-019=067\n067+026=093\nAnswer: 093", StepError(1, "copy")),  # value miscopied
        ("037+048=085\n066+026=092\nAnswer: 092", StepError(1, "copy")),  # skipped an operation
        ("037+048=085\n037+048=085", StepError(1, "copy")),  # repeated step
        ("037+048=085\n085-019=066\nAnswer: 066", StepError(2, "early_answer")),
        ("037+048=085\n085-019=066\n066+026=092\nAnswer: 092\n1+1=2", StepError(4, "extra")),
        ("037+048=085\n\n085-019=066", StepError(1, "format")),  # empty step
        ("37+48=85", StepError(0, "format")),  # not the problem's width
        ("037+048=0085", StepError(0, "format")),
        ("037 + 048 = 085", StepError(0, "format")),
        ("037+048=-85", StepError(0, "format")),
        ("037+048=085\n085-019=066\n066+026=092\nAnswer 092", StepError(3, "format")),
        ("037+048=085\n085-019=066\n066+026=092\n092", StepError(3, "format")),
        ("037+048=085\n085-019=066\n066+026=092\nAnswer: -92", StepError(3, "format")),
        ("@@#\x00garbage", StepError(0, "format")),
        ("037+048=08\u0665", StepError(0, "format")),  # non-ASCII digit
        ("001+001=002", StepError(0, "copy")),
    ],
)
def test_oracle_finds_first_wrong_step(text, expected):
    assert diagnose(PROBLEM["problem"], text) == expected
    assert task.first_wrong_step(PROBLEM, text) == (None if expected is None else expected.index)


def test_correct_prefixes_have_no_wrong_step_but_do_not_grade():
    for prefix in ["", "037+048=085", "037+048=085\n", "037+048=085\n085-019=066\n066+026=092"]:
        assert task.first_wrong_step(PROBLEM, prefix) is None
        assert not task.grade(prefix, "92")


def test_step_located_kinds():
    assert StepError(0, "arithmetic").step_located and StepError(3, "copy").step_located
    assert StepError(3, "answer").step_located
    assert not StepError(0, "format").step_located and not StepError(4, "extra").step_located


def test_grade_and_extract_answer():
    assert task.extract_answer("3+4\nAnswer: 3") == "3"
    assert task.extract_answer("Answer: -12") == "-12"
    assert task.extract_answer("3+4") is None
    assert task.extract_answer("Answer: 3\nAnswer: 4") == "4"
    assert task.extract_answer("Answer: 0092") == "92" and task.extract_answer("Answer: -0") == "0"
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
            parsed = parse_problem(p["problem"])
            assert len(parsed.ops) + 1 == LEVELS[level].operands and parsed.width == NUMBER_WIDTH
            assert max([parsed.first] + [x for _, x in parsed.ops]) < 10 ** LEVELS[level].digits
            assert min(parsed.values()) >= 0
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
    with pytest.raises(ValueError, match="not an arith problem"):
        parse_problem("037+48")
    with pytest.raises(ValueError, match="unknown arith level 9"):
        task.generate(1, 9, seed=0)
    with pytest.raises(ValueError, match="unknown split"):
        task.generate(1, 1, seed=0, split="dev")
    with pytest.raises(ValueError, match="fewer than"):
        task.generate(10_000, 1, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
