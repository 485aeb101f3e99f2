"""The `math` task: competition math (MATH, MATH-500) with ``\\boxed{}`` answers graded by math-verify.

Steps are separated by a blank line (``"\\n\\n"``), as in search-and-learn and compute-optimal TTS;
the final answer is the content of the last ``\\boxed{...}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ponder.inference.tasks import problem_row, split_on_delimiter
from ponder.inference.tasks.grading import DEFAULT_TIMEOUT_SECONDS, equivalent

STEP_DELIMITER = "\n\n"
BOXED = "\\boxed"
PROMPT = (
    "{problem}\n\nSolve this step by step. Separate the steps with a blank line, "
    "and put the final answer in \\boxed{{}}."
)
_UNBRACED_ARGUMENT = re.compile(r"\s+([^\s$]+)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced, ``\\{`` skipped) or ``\\boxed x``.

    None when there is no boxed answer, when the last one is never closed (a cut-off generation) or empty.
    """
    start = text.rfind(BOXED)
    while start >= 0 and text[start + len(BOXED) : start + len(BOXED) + 1].isalpha():
        start = text.rfind(BOXED, 0, start)  # a longer command such as \boxedx
    if start < 0:
        return None
    rest = text[start + len(BOXED) :]
    if not rest.startswith("{"):
        match = _UNBRACED_ARGUMENT.match(rest)
        return match.group(1) if match else None
    depth, index = 0, 0
    while index < len(rest):
        char = rest[index]
        if char == "\\":
            index += 1  # an escaped character, \{ or \} included
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:index].strip() or None
        index += 1
    return None


@dataclass(frozen=True)
class MathTask:
    """Competition math behind the `Task` protocol; problems are ``{id, problem, answer}`` rows.

    `timeout_seconds` bounds each math-verify stage of one grading call.
    """

    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    name = "math"
    step_delimiter = STEP_DELIMITER
    prompt = PROMPT

    def make_prompt(self, problem: dict) -> str:
        return self.prompt.format(problem=problem["problem"])

    def split_steps(self, text: str) -> list[str]:
        return split_on_delimiter(text, self.step_delimiter)

    def join_steps(self, steps: list[str]) -> str:
        return self.step_delimiter.join(steps)

    def extract_answer(self, text: str) -> str | None:
        return last_boxed(text)

    def check_answer(self, answer: str, gold: str) -> bool:
        return equivalent(answer, gold, self.timeout_seconds)

    def grade(self, text: str, gold: str) -> bool:
        answer = self.extract_answer(text)
        return answer is not None and self.check_answer(answer, gold)

    def problem_from_row(self, row: dict, index: int) -> dict:
        """A MATH / MATH-500 row as a problem: ``problem`` and ``answer`` (else the reference ``solution``'s last
        boxed answer, as in MATH's train split); ``unique_id``, ``level`` and the ``solution`` are kept."""
        answer = row.get("answer") or last_boxed(row.get("solution") or "")
        return problem_row(row, index, question_key="problem", answer=answer, solution=row.get("solution"))
