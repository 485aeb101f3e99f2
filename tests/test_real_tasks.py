"""The `math` and `gsm8k` tasks: answer extraction, math-verify grading, and the grader on real data.

On ../shared/data the grader must mark every reference solution right against its own gold answer
(MATH-500: >= 99.6 %, GSM8K likewise) and reject it against the next problem's gold (>= 99 %).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.inference.tasks import Task, get_task
from ponder.inference.tasks.gsm8k import marked_answer
from ponder.inference.tasks.math import MathTask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def grading_rates(task, solutions: list[str], golds: list[str]) -> tuple[float, float]:
    """Share of solutions graded right against their own gold, and wrong against the next problem's.

    Pairs whose two golds are the same text (up to spaces) are left out of the second share.
    """
    own = sum(task.grade(solution, gold) for solution, gold in zip(solutions, golds)) / len(solutions)
    rejected = tried = 0
    for index, solution in enumerate(solutions):
        other = golds[(index + 1) % len(golds)]
        if "".join(other.split()) == "".join(golds[index].split()):
            continue
        tried += 1
        rejected += not task.grade(solution, other)
    return own, rejected / tried


def test_math500_reference_solutions_grade_against_their_answers():
    rows = read_jsonl(DATA / "math500" / "test.jsonl")
    assert len(rows) == 500
    start = time.perf_counter()
    own, rejected = grading_rates(get_task("math"), [r["solution"] for r in rows], [r["answer"] for r in rows])
    print(f"MATH-500: own {own:.4f}, mismatched rejected {rejected:.4f}, {time.perf_counter() - start:.1f} s")
    assert own >= 0.996 and rejected >= 0.99


def test_gsm8k_reference_solutions_grade_against_their_answers():
    rows = read_jsonl(DATA / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    task = get_task("gsm8k")
    golds = [marked_answer(r["answer"]) for r in rows]
    start = time.perf_counter()
    own, rejected = grading_rates(task, [r["answer"] for r in rows], golds)
    print(f"GSM8K: own {own:.4f}, mismatched rejected {rejected:.4f}, {time.perf_counter() - start:.1f} s")
    assert own >= 0.996 and rejected >= 0.99
    assert task.grade(rows[0]["answer"], rows[0]["answer"])  # a whole reference answer is a gold too

    # as problems, each keeps its reference as a solution in the task's own step layout
    problems = [task.problem_from_row(row, index) for index, row in enumerate(rows)]
    assert all(task.grade(p["solution"], p["answer"]) for p in problems)
    assert not any("<<" in p["solution"] or "\n\n\n" in p["solution"] for p in problems)
    assert task.split_steps(problems[0]["solution"])[-1] == "#### 18"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("the answer is $\\boxed 5$.", "5"),
        ("\\boxed{\\text{Monday}}", "\\text{Monday}"),
        ("\\boxed{(-\\infty, 3]}", "(-\\infty, 3]"),
        ("\\boxed{ 7 }", "7"),
        ("no answer here", None),
        ("cut off \\boxed{\\frac{1}{2}", None),
        ("\\boxed{}", None),
        ("\\boxedtext{3}", None),
    ],
)
def test_math_answer_is_the_last_boxed(text, answer):
    assert get_task("math").extract_answer(text) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("She pays 2 * 500 = 1,000.\n#### 1,000", "1000"),
        ("#### $1,234,567.", "1234567"),
        ("#### 18 dollars", "18"),
        ("#### -3", "-3"),
        ("so \\boxed{42}", "42"),
        ("\\boxed{5}\n#### 6", "6"),
        ("#### 6\nso \\boxed{5}", "5"),
        ("####", None),
        ("The answer is 5", None),
    ],
)
def test_gsm8k_answer_is_the_last_marked_or_boxed_number(text, answer):
    assert get_task("gsm8k").extract_answer(text) == answer


@pytest.mark.parametrize(
    ("answer", "gold", "same"),
    [
        ("\\frac12", "\\frac{1}{2}", True),
        ("0.5", "\\dfrac{1}{2}", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\text{(C)}", "C", True),
        ("\\text{odd}", "\\text{even}", False),
        ("(-\\infty,3]", "(-\\infty, 3]", True),
        ("[1, 3)", "(1, 3]", False),
        ("\\{2, 1\\}", "\\{1, 2\\}", True),
        ("10,\\!000", "10000", True),
        ("3", "4", False),
        ("}}{{", "1", False),
        ("", "1", False),
    ],
)
def test_math_answers_are_compared_by_math_verify(answer, gold, same):
    assert get_task("math").check_answer(answer, gold) is same


def test_grading_pathological_answers_is_bounded_and_false():
    task = MathTask(timeout_seconds=1)
    start = time.perf_counter()
    assert not task.grade("\\boxed{9^{9^{9^{9}}}}", "5")
    assert time.perf_counter() - start < 10
    assert not task.grade("\\boxed{\\frac{\\sqrt{}}{{}}}", "1") and not task.grade("", "1")


def test_gsm8k_golds_may_be_whole_reference_answers():
    task = get_task("gsm8k")
    assert task.check_answer("1000", "It costs 2 * 500 = 1,000\n#### 1,000")
    assert task.grade("so \\boxed{\\frac{1}{2}}", "0.5") and not task.grade("#### 17", "18")


@pytest.mark.parametrize("name", ["math", "gsm8k"])
def test_real_tasks_follow_the_task_protocol(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name and task.step_delimiter == "\n\n"
    prompt = task.make_prompt({"problem": "What is 1 + 1?"})
    assert prompt.startswith("What is 1 + 1?") and ("\\boxed{}" in prompt or "####" in prompt)
    steps = task.split_steps("We add.\n\n1 + 1 = 2.\n\nThe answer is 2.\n\n")
    assert steps == ["We add.", "1 + 1 = 2.", "The answer is 2."] and task.split_steps("") == []
    assert task.join_steps(steps) == "We add.\n\n1 + 1 = 2.\n\nThe answer is 2."


@pytest.mark.parametrize("name", ["math", "gsm8k", "arith"])
def test_runs_of_delimiters_and_blank_steps_are_dropped_when_splitting(name):
    task = get_task(name)
    text = task.step_delimiter.join(["First.", "", "  ", "Second.", "", "Third."]) + task.step_delimiter
    assert task.split_steps(text) == ["First.", "Second.", "Third."]  # "\n\n\n\n" is one break, not an empty step
    assert task.split_steps(task.step_delimiter * 3) == []


def test_max_problems_is_a_seeded_sample_of_the_file_in_file_order(tmp_path):
    from ponder.training.core.data_stage import SampledDataConfig
    from ponder.training.core.problems import load_problems
    from ponder.training.evaluate import EvaluateConfig

    path = tmp_path / "ordered.jsonl"  # ordered like MATH's train split: the first rows are one kind
    path.write_text("".join(json.dumps({"problem": f"q{i}", "answer": str(i)}) + "\n" for i in range(100)))
    task = get_task("math")
    picked = load_problems(task, str(path), "train", limit=10, seed=0)
    indices = [int(p["id"]) for p in picked]
    assert indices == sorted(set(indices)) and len(indices) == 10 and max(indices) >= 50  # not the first rows
    assert [p["answer"] for p in picked] == [str(i) for i in indices]  # each problem is its own row
    assert load_problems(task, str(path), "train", limit=10, seed=0) == picked
    assert load_problems(task, str(path), "train", limit=10, seed=1) != picked
    data = SampledDataConfig(policy="p", task="math", problems_file=str(path), split="train", max_problems=10)
    assert data.problems(task) == picked
    evaluation = EvaluateConfig(policy="p", prm="oracle", task="math", problems_file=str(path), max_problems=10)
    assert evaluation.problems(task) == picked


def test_real_tasks_need_no_training_stack():
    script = (
        "import sys\n"
        "for name in ('trl', 'peft', 'deepspeed', 'accelerate', 'datasets'):\n"
        "    sys.modules[name] = None\n"
        "from ponder.inference.tasks import get_task\n"
        "import ponder.inference.prm_formats\n"
        "assert get_task('math').grade('\\\\boxed{\\\\frac12}', '0.5') and get_task('gsm8k').grade('#### 2', '2')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dataset_rows_become_problems_and_a_bad_row_is_named(tmp_path):
    from ponder.training.core.problems import load_problems

    math_rows = {row["unique_id"]: row for row in read_jsonl(DATA / "math500" / "test.jsonl")}
    problems = load_problems(get_task("math"), str(DATA / "math500" / "test.jsonl"), limit=3)
    assert len(problems) == 3
    for problem in problems:
        row = math_rows[problem["id"]]
        assert all(problem[key] == row[key] for key in ("problem", "answer", "level"))

    gsm8k = load_problems(get_task("gsm8k"), str(DATA / "gsm8k" / "test.jsonl"))
    assert gsm8k[0]["answer"] == "18" and gsm8k[0]["problem"].startswith("Janet")

    # MATH's train split has no answer field: the reference solution's last boxed answer is the gold
    assert MathTask().problem_from_row({"problem": "1+1?", "solution": "So $\\boxed{2}$."}, 0)["answer"] == "2"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"question": "x?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: row 1: needs 'problem'"):
        load_problems(get_task("math"), str(bad))
