"""The `arith` toy world: multi-step integer arithmetic with an oracle step checker.

A problem is a chain of additions and subtractions whose running value never drops below zero,
written with every number zero-padded to four digits, ``"0037+0048-0019+0026"``. Each step applies
one operation to the running value, and the answer line ends the solution::

    0037+0048=0085
    0085-0019=0066
    0066+0026=0092
    Answer: 0092

Difficulty grows with the number of operands and their digits (`LEVELS`). The fixed width puts
every digit at a fixed distance from the digits it depends on (the running value one line up, the
operand), on every level, so a small model learns one digit circuit shared by all levels instead of
spending its capacity on finding where numbers start; what stays hard is carrying and not slipping
over many steps. Because every
step's ground truth is known, `diagnose` locates the first wrong step of any text: the oracle
against which labels, verifiers and search are measured.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ponder.inference.tasks import split_on_delimiter
from ponder.inference.tasks.toy import (
    ANSWER_PREFIX,
    ANSWER_RE,
    STEP_DELIMITER,
    StepError,
    ToyTask,
    check_range,
    in_test_split,
)

NUMBER_WIDTH = 4  # every number of every level is zero-padded to this many digits


@dataclass(frozen=True)
class Level:
    """A difficulty level: how many operands, and at most how many digits each."""

    operands: int
    digits: int


LEVELS: dict[int, Level] = {
    1: Level(operands=4, digits=1),
    2: Level(operands=3, digits=2),
    3: Level(operands=4, digits=2),
    4: Level(operands=4, digits=3),
    5: Level(operands=6, digits=3),
    6: Level(operands=10, digits=3),
}
assert all(len(str(spec.operands * (10**spec.digits - 1))) <= NUMBER_WIDTH for spec in LEVELS.values())

_STEP_RE = re.compile(r"^([0-9]+)([+-])([0-9]+)=([0-9]+)$")
_ANSWER_SEARCH_RE = re.compile(rf"^{ANSWER_PREFIX}(-?[0-9]+)$", re.MULTILINE)
_PROBLEM_RE = re.compile(r"^([0-9]+)(?:[+-][0-9]+)+$")


@dataclass(frozen=True)
class Problem:
    """A parsed problem: the first operand, the operations, and the width numbers are written in."""

    first: int
    ops: list[tuple[str, int]]
    width: int

    def values(self) -> list[int]:
        """The running value after each operation."""
        value, values = self.first, []
        for op, operand in self.ops:
            value = value + operand if op == "+" else value - operand
            values.append(value)
        return values


def parse_problem(problem: str) -> Problem:
    """Parse ``"037+048-019"``: equal-width numbers joined by ``+``/``-``."""
    match = _PROBLEM_RE.match(problem)
    numbers = re.findall(r"[0-9]+", problem)
    if match is None or len({len(n) for n in numbers}) != 1:
        raise ValueError(f"not an arith problem: {problem!r}")
    signs = re.findall(r"[+-]", problem)
    return Problem(int(numbers[0]), [(s, int(n)) for s, n in zip(signs, numbers[1:])], len(numbers[0]))


def reference_steps(problem: str) -> list[str]:
    """The correct solution of `problem` as a list of steps (the answer line last)."""
    parsed = parse_problem(problem)
    w, previous, steps = parsed.width, parsed.first, []
    for (op, operand), value in zip(parsed.ops, parsed.values()):
        steps.append(f"{previous:0{w}d}{op}{operand:0{w}d}={value:0{w}d}")
        previous = value
    steps.append(f"{ANSWER_PREFIX}{previous:0{w}d}")
    return steps


def diagnose(problem: str, text: str) -> StepError | None:
    """The first wrong step of `text` as a solution of `problem`, or None if no step is wrong.

    Kinds: ``arithmetic`` (well-formed step whose value is wrong), ``copy`` (the step does not apply
    the problem's next operation to the running value), ``answer`` (answer line disagrees with the
    last value), ``early_answer`` (answer line before the last operation), ``format`` (unparsable step
    or a number not of the problem's width), ``extra`` (anything after the answer line).

    Only the steps that are written are judged: a correct but unfinished prefix returns None (a
    search can score partial solutions with it); `grade` decides whether a solution is finished and
    right. The text is judged as written: a blank line is a step of the wrong format.
    """
    parsed = parse_problem(problem)
    previous, values = parsed.first, parsed.values()
    for index, step in enumerate(split_on_delimiter(text, STEP_DELIMITER, keep_empty=True)):
        if index < len(parsed.ops):
            match = _STEP_RE.match(step)
            if match is None or any(len(match.group(g)) != parsed.width for g in (1, 3, 4)):
                kind = "early_answer" if step.startswith(ANSWER_PREFIX.strip()) else "format"
                return StepError(index, kind)
            left, op, operand, result = match.groups()
            if (int(left), op, int(operand)) != (previous, *parsed.ops[index]):
                return StepError(index, "copy")
            previous = values[index]
            if int(result) != previous:
                return StepError(index, "arithmetic")
        elif index == len(parsed.ops):
            match = ANSWER_RE.match(step)
            if match is None:
                return StepError(index, "format")
            if int(match.group(1)) != previous:
                return StepError(index, "answer")
        else:
            return StepError(index, "extra")
    return None


def extract_answer(text: str) -> str | None:
    """The number on the last ``Answer: N`` line without its zero padding, or None when there is none."""
    answers = _ANSWER_SEARCH_RE.findall(text)
    return str(int(answers[-1])) if answers else None


def sample_problem(rng: random.Random, spec: Level) -> str:
    """One random problem text of the given level; a subtraction that would go below zero is an addition."""
    high, w = 10**spec.digits - 1, NUMBER_WIDTH
    value = rng.randint(1, high)
    parts = [f"{value:0{w}d}"]
    for _ in range(spec.operands - 1):
        operand = rng.randint(1, high)
        op = "-" if rng.random() < 0.5 and operand <= value else "+"
        value = value + operand if op == "+" else value - operand
        parts.append(f"{op}{operand:0{w}d}")
    return "".join(parts)


class ArithTask(ToyTask):
    """The `arith` task behind the common `Task` interface, plus the generator and the oracle."""

    name = "arith"
    levels = LEVELS
    training_ranges = {"operands": (2, 10), "digits": (1, 3)}

    def sample_problem(self, rng: random.Random, spec: Level) -> str:
        return sample_problem(rng, spec)

    def answer_of(self, problem: str) -> str:
        return str(parse_problem(problem).values()[-1])

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)

    def check_answer(self, answer: str, gold: str) -> bool:
        return int(answer) == int(gold)

    def reference_solution(self, problem: dict) -> str:
        return self.join_steps(reference_steps(problem["problem"]))

    def diagnose(self, problem: dict, text: str) -> StepError | None:
        return diagnose(problem["problem"], text)

    def check_training_ranges(self, operands: list[int], digits: list[int]) -> None:
        """A ValueError naming the policy key when training problems would not fit `NUMBER_WIDTH`."""
        check_range("train_operands", operands, 2)
        check_range("train_digits", digits, 1)
        if len(str(operands[1] * (10 ** digits[1] - 1))) > NUMBER_WIDTH:
            raise ValueError(f"train_operands/train_digits: running values would exceed {NUMBER_WIDTH} digits")

    def training_level(self, rng: random.Random, operands: list[int], digits: list[int]) -> Level:
        """Operand count and digits of the next training problem, each uniform over its range."""
        return Level(rng.randint(*operands), rng.randint(*digits))


__all__ = [
    "LEVELS",
    "NUMBER_WIDTH",
    "ArithTask",
    "Level",
    "StepError",
    "diagnose",
    "extract_answer",
    "in_test_split",
    "parse_problem",
    "reference_steps",
    "sample_problem",
]
