"""The `gsm8k` task: grade-school word problems whose answer is a number after ``####``.

A solution ends with ``#### <number>`` (the GSM8K reference format); a ``\\boxed{}`` answer is accepted
too, and whichever of the two comes last in the text is the answer. The gold may be the number or a
whole GSM8K reference answer (worked solution ending in ``#### <number>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ponder.inference.tasks import problem_row
from ponder.inference.tasks.grading import equivalent
from ponder.inference.tasks.math import BOXED, MathTask, last_boxed

ANSWER_MARKER = "####"
PROMPT = (
    "{problem}\n\nSolve this step by step. Separate the steps with a blank line, "
    "and end with a last line of the form `#### <number>`."
)
_MARKED_ANSWER = re.compile(rf"{ANSWER_MARKER}[ \t]*([^\n]*)")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_WORDS = re.compile(r"(?<=\d)\s+[A-Za-z][A-Za-z ]*$")
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


def normalize_number(answer: str) -> str:
    """``"$1,000 dollars."`` → ``"1000"``: thousands commas, dollar signs, a closing period and unit words go."""
    answer = _THOUSANDS_COMMA.sub("", answer.replace("\\$", "").replace("$", "")).strip().rstrip(".").strip()
    return _TRAILING_WORDS.sub("", answer)


def marked_answer(text: str) -> str | None:
    """What follows the last ``####`` on its line, or None when there is no ``####`` or nothing after it."""
    answers = _MARKED_ANSWER.findall(text)
    return (answers[-1].strip() or None) if answers else None


@dataclass(frozen=True)
class GSM8KTask(MathTask):
    """GSM8K behind the `Task` protocol: the `math` task's steps and grading, ``####`` answers."""

    name = "gsm8k"
    prompt = PROMPT

    def extract_answer(self, text: str) -> str | None:
        use_marker = text.rfind(ANSWER_MARKER) > text.rfind(BOXED)
        answer = marked_answer(text) if use_marker else last_boxed(text)
        return None if answer is None else (normalize_number(answer) or None)

    def check_answer(self, answer: str, gold: str) -> bool:
        gold = (marked_answer(gold) or "") if ANSWER_MARKER in gold else gold
        return equivalent(normalize_number(answer), normalize_number(gold), self.timeout_seconds)

    def problem_from_row(self, row: dict, index: int) -> dict:
        """A GSM8K row (``question``, reference ``answer`` ending in ``#### n``) as a problem whose answer is n,
        with the reference as its ``solution``: one step per line, calculator annotations (``<<48/2=24>>``) removed."""
        reference = row.get("answer")
        worked = isinstance(reference, str) and ANSWER_MARKER in reference
        answer = marked_answer(reference) if worked else reference
        lines = _CALCULATOR_NOTE.sub("", reference).splitlines() if worked else []
        solution = self.join_steps([line for line in lines if line.strip()]) if worked else None
        question_key = "question" if "question" in row else "problem"
        return problem_row(row, index, question_key=question_key, answer=answer, solution=solution)
