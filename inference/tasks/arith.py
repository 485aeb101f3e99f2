"""The `arith` toy world: multi-step integer arithmetic with an oracle step checker.

A problem is a chain of additions and subtractions, ``"37+48-19+26"``. Each step writes the
problem's prefix one operation longer with its value, and the answer line ends the solution::

    37+48=85
    37+48-19=66
    37+48-19+26=92
    Answer: 92

Difficulty grows with the number of operands and their digits (`LEVELS`). Because every step's
ground truth is known, `diagnose` locates the first wrong step of any text: the oracle against which
labels, verifiers and search are measured. A step is a copy aligned with the line above plus one
operation: checking it needs the previous value, the new operand and every digit of the written
result at once, while producing it left to right needs the carries before they are written, so the
policy's errors are step-local slips that a verifier can re-check.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

STEP_DELIMITER = "\n"
ANSWER_PREFIX = "Answer: "
TEST_SPLIT_MODULUS = 10
MAX_CONSECUTIVE_MISSES = 20_000  # draws without a new problem before a level counts as exhausted


@dataclass(frozen=True)
class Level:
    """A difficulty level: how many operands, and at most how many digits each."""

    operands: int
    digits: int


LEVELS: dict[int, Level] = {
    1: Level(operands=3, digits=1),
    2: Level(operands=3, digits=2),
    3: Level(operands=4, digits=2),
    4: Level(operands=5, digits=3),
    5: Level(operands=6, digits=3),
    6: Level(operands=8, digits=3),
}

_NUMBER = r"-?(?:0|[1-9][0-9]*)"
_STEP_RE = re.compile(rf"^([0-9+-]+)=({_NUMBER})$")
_ANSWER_RE = re.compile(rf"^{ANSWER_PREFIX}({_NUMBER})$")
_ANSWER_SEARCH_RE = re.compile(rf"^{ANSWER_PREFIX}({_NUMBER})$", re.MULTILINE)
_PROBLEM_RE = re.compile(r"^[1-9][0-9]*(?:[+-][1-9][0-9]*)+$")


@dataclass(frozen=True)
class StepError:
    """Where and how a solution first goes wrong.

    kind is one of: ``arithmetic`` (well-formed step whose value is wrong), ``copy`` (the expression
    is not the problem's prefix one operation longer), ``answer`` (answer line disagrees with the
    last value), ``early_answer`` (answer line before the last operation), ``format`` (unparsable
    step), ``extra`` (anything after the answer line).
    """

    index: int
    kind: str

    @property
    def step_located(self) -> bool:
        """True for a slip on a specific well-formed step, as opposed to format garbage."""
        return self.kind in ("arithmetic", "copy", "answer")


def parse_problem(problem: str) -> tuple[int, list[tuple[str, int]]]:
    """Split ``"37+48-19"`` into the first operand and ``[("+", 48), ("-", 19)]``."""
    if not _PROBLEM_RE.match(problem):
        raise ValueError(f"not an arith problem: {problem!r}")
    tokens = re.findall(r"[+-]|[0-9]+", problem)
    first = int(tokens[0])
    ops = [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2)]
    return first, ops


def _apply(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand


def _expression(first: int, ops: list[tuple[str, int]]) -> str:
    return str(first) + "".join(f"{op}{operand}" for op, operand in ops)


def reference_steps(problem: str) -> list[str]:
    """The correct solution of `problem` as a list of steps (the answer line last)."""
    first, ops = parse_problem(problem)
    value, steps = first, []
    for index, (op, operand) in enumerate(ops):
        value = _apply(value, op, operand)
        steps.append(f"{_expression(first, ops[: index + 1])}={value}")
    steps.append(f"{ANSWER_PREFIX}{value}")
    return steps


def diagnose(problem: str, text: str) -> StepError | None:
    """The first wrong step of `text` as a solution of `problem`, or None if no step is wrong.

    Only the steps that are written are judged: a correct but unfinished prefix returns None (a
    search can score partial solutions with it); `grade` decides whether a solution is finished and
    right.
    """
    first, ops = parse_problem(problem)
    value = first
    for index, step in enumerate(split_steps(text)):
        if index < len(ops):
            match = _STEP_RE.match(step)
            if match is None:
                kind = "early_answer" if step.startswith(ANSWER_PREFIX.strip()) else "format"
                return StepError(index, kind)
            expression, result = match.groups()
            if expression != _expression(first, ops[: index + 1]):
                return StepError(index, "copy")
            value = _apply(value, *ops[index])
            if int(result) != value or result == "-0":
                return StepError(index, "arithmetic")
        elif index == len(ops):
            match = _ANSWER_RE.match(step)
            if match is None:
                return StepError(index, "format")
            if int(match.group(1)) != value or match.group(1) == "-0":
                return StepError(index, "answer")
        else:
            return StepError(index, "extra")
    return None


def split_steps(text: str) -> list[str]:
    """Steps of a solution; one trailing delimiter is ignored, empty steps inside are kept."""
    if text.endswith(STEP_DELIMITER):
        text = text[: -len(STEP_DELIMITER)]
    return text.split(STEP_DELIMITER) if text else []


def extract_answer(text: str) -> str | None:
    """The number on the last ``Answer: N`` line, or None when there is none."""
    answers = _ANSWER_SEARCH_RE.findall(text)
    return answers[-1] if answers else None


def in_test_split(problem: str) -> bool:
    """Whether a problem text belongs to the held-out test split (a fixed 10 % by hash).

    Training streams never draw test problems, so every stage can evaluate on held-out data.
    """
    return zlib.crc32(problem.encode()) % TEST_SPLIT_MODULUS == 0


def generate(n: int, level: int, seed: int, split: str = "test") -> list[dict]:
    """`n` distinct problems of `level` from `split`, the same for the same seed.

    Rows are ``{id, problem, answer, level}``.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown arith level {level}; levels are {sorted(LEVELS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    spec = LEVELS[level]
    rng = random.Random(f"arith:{level}:{seed}:{split}")
    problems: list[dict] = []
    seen: set[str] = set()
    misses = 0
    while len(problems) < n:
        problem = sample_problem(rng, spec)
        if problem in seen or in_test_split(problem) != (split == "test"):
            misses += 1
            if misses > MAX_CONSECUTIVE_MISSES:
                raise ValueError(f"level {level} has fewer than {n} distinct {split} problems")
            continue
        misses = 0
        seen.add(problem)
        answer = reference_steps(problem)[-1][len(ANSWER_PREFIX) :]
        row = {"id": f"arith-L{level}-{split}-s{seed}-{len(problems)}", "problem": problem, "answer": answer}
        problems.append(row | {"level": level})
    return problems


def sample_problem(rng: random.Random, spec: Level) -> str:
    """One random problem text of the given level."""
    high = 10**spec.digits - 1
    parts = [str(rng.randint(1, high))]
    for _ in range(spec.operands - 1):
        parts.append(rng.choice("+-") + str(rng.randint(1, high)))
    return "".join(parts)


class ArithTask:
    """The `arith` task behind the common `Task` interface, plus the generator and the oracle."""

    name = "arith"
    step_delimiter = STEP_DELIMITER
    levels = LEVELS

    def make_prompt(self, problem: dict) -> str:
        return problem["problem"]

    def split_steps(self, text: str) -> list[str]:
        return split_steps(text)

    def join_steps(self, steps: list[str]) -> str:
        return STEP_DELIMITER.join(steps)

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)

    def check_answer(self, answer: str, gold: str) -> bool:
        return int(answer) == int(gold)

    def grade(self, text: str, gold: str) -> bool:
        answer = extract_answer(text)
        return answer is not None and self.check_answer(answer, gold)

    def generate(self, n: int, level: int, seed: int, split: str = "test") -> list[dict]:
        return generate(n, level, seed, split)

    def reference_solution(self, problem: dict) -> str:
        return self.join_steps(reference_steps(problem["problem"]))

    def diagnose(self, problem: dict, text: str) -> StepError | None:
        return diagnose(problem["problem"], text)

    def first_wrong_step(self, problem: dict, text: str) -> int | None:
        error = diagnose(problem["problem"], text)
        return None if error is None else error.index
