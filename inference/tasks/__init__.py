"""Tasks: prompt format, step splitting, answer extraction and grading.

Every stage (labelling, training, search) talks to a task through the small `Task` protocol, so the
same code runs on the toy `arith` world and on real math.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    """What every task provides. `make_prompt` returns the user turn; chat templates wrap it."""

    name: str
    step_delimiter: str

    def make_prompt(self, problem: dict) -> str: ...

    def split_steps(self, text: str) -> list[str]: ...

    def join_steps(self, steps: list[str]) -> str: ...

    def extract_answer(self, text: str) -> str | None: ...

    def check_answer(self, answer: str, gold: str) -> bool: ...

    def grade(self, text: str, gold: str) -> bool: ...

    def problem_from_row(self, row: dict, index: int) -> dict: ...


def split_on_delimiter(text: str, delimiter: str, keep_empty: bool = False) -> list[str]:
    """Steps of a solution; one trailing delimiter is ignored.

    Empty or whitespace-only steps (a run of delimiters, as in ``"\n\n\n\n"``) are dropped, so no
    step is blank and none holds the delimiter; `keep_empty` keeps them, for judging a text as written.
    """
    if text.endswith(delimiter):
        text = text[: -len(delimiter)]
    steps = text.split(delimiter) if text else []
    return steps if keep_empty else [step for step in steps if step.strip()]


def problem_row(row: dict, index: int, question_key: str, answer, solution: str | None = None) -> dict:
    """``{id, problem, answer, level}`` from a dataset row, with the reference ``solution`` when there is one
    (written the way the task's solutions are); a missing field is an error naming the row."""
    if question_key not in row or answer is None:
        raise ValueError(f"row {index}: needs {question_key!r} and an answer, has keys {sorted(row)}")
    identifier = row.get("unique_id", row.get("id", index))
    problem = {"id": str(identifier), "problem": row[question_key], "answer": str(answer), "level": row.get("level")}
    return problem if solution is None else problem | {"solution": solution}


TASK_NAMES = ("arith", "countdown", "math", "gsm8k")


def get_task(name: str) -> Task:
    """Return the task registered under `name` (one of `TASK_NAMES`)."""
    if name == "arith":
        from ponder.inference.tasks.arith import ArithTask

        return ArithTask()
    if name == "countdown":
        from ponder.inference.tasks.countdown import CountdownTask

        return CountdownTask()
    if name == "math":
        from ponder.inference.tasks.math import MathTask

        return MathTask()
    if name == "gsm8k":
        from ponder.inference.tasks.gsm8k import GSM8KTask

        return GSM8KTask()
    raise ValueError(f"unknown task {name!r}; known tasks: {TASK_NAMES}")


__all__ = ["TASK_NAMES", "Task", "get_task", "problem_row", "split_on_delimiter"]
