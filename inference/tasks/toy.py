"""What the toy tasks (`arith`, `countdown`) share: the line format, the held-out split, the generator
loop, the oracle's verdict, and the `Task` members that read a toy solution.

A toy solution has one step per line and ends with an answer line ``Answer: N``. A fixed 10 % of all
problem texts (by hash) is the test split; training streams never draw from it. Beyond the `Task`
protocol, a toy task trains a policy from scratch (`ponder policy`): `training_ranges` names the
inclusive ranges its training problems are drawn from (policy keys ``train_<name>``),
`training_example` draws one with the solution the policy learns from.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

from ponder.inference.tasks import problem_row, split_on_delimiter

STEP_DELIMITER = "\n"
ANSWER_PREFIX = "Answer: "
ANSWER_RE = re.compile(rf"^{ANSWER_PREFIX}([0-9]+)$")
TEST_SPLIT_MODULUS = 10
MAX_CONSECUTIVE_MISSES = 20_000  # draws without a new problem before a level counts as exhausted
UNLOCATED_KINDS = ("format", "early_answer", "extra")


@dataclass(frozen=True)
class StepError:
    """Where and how a solution first goes wrong: the step's index and a kind named by the task's `diagnose`.

    Every toy task uses ``format`` (an unparsable step), ``early_answer`` (an answer line before the
    solution is done) and ``extra`` (anything after the answer line); its other kinds are mistakes on
    a specific well-formed step.
    """

    index: int
    kind: str

    @property
    def step_located(self) -> bool:
        """True for a mistake on a specific well-formed step, as opposed to format garbage."""
        return self.kind not in UNLOCATED_KINDS


def split_steps(text: str) -> list[str]:
    """Steps of a solution; one trailing delimiter is ignored, empty steps are dropped."""
    return split_on_delimiter(text, STEP_DELIMITER)


def in_test_split(problem: str) -> bool:
    """Whether a problem text belongs to the held-out test split (a fixed 10 % by hash).

    Training streams never draw test problems, so every stage can evaluate on held-out data.
    """
    return zlib.crc32(problem.encode()) % TEST_SPLIT_MODULUS == 0


def check_range(key: str, bounds: list[int], low: int, high: int | None = None) -> None:
    """A ValueError naming `key` unless `bounds` is an inclusive range [a, b] with low <= a <= b (<= high)."""
    top = "" if high is None else f" <= {high}"
    if len(bounds) != 2 or not low <= bounds[0] <= bounds[1] or (high is not None and bounds[1] > high):
        raise ValueError(f"{key}: give an inclusive range [low, high] with {low} <= low <= high{top}, got {bounds}")


class ToyTask:
    """The `Task` members and the generator every toy task shares.

    A subclass sets `name` and `levels` (level number -> level spec) and provides `sample_problem(rng,
    spec)`, `answer_of(problem)`, `extract_answer`, `check_answer`, `reference_solution`, `diagnose`,
    and for policy training `training_ranges` (name -> default [low, high]),
    `check_training_ranges(**ranges)` and `training_level(rng, **ranges)` (the spec of the next
    training problem); it overrides `sample_example` to teach other solutions than the reference.
    """

    name: str
    step_delimiter = STEP_DELIMITER
    levels: dict
    training_ranges: dict[str, tuple[int, int]]

    def make_prompt(self, problem: dict) -> str:
        return problem["problem"]

    def problem_from_row(self, row: dict, index: int) -> dict:
        """A row of problems written by `generate` (``{id, problem, answer, level}``), checked."""
        return problem_row(row, index, question_key="problem", answer=row.get("answer"))

    def split_steps(self, text: str) -> list[str]:
        return split_steps(text)

    def join_steps(self, steps: list[str]) -> str:
        return STEP_DELIMITER.join(steps)

    def grade(self, text: str, gold: str) -> bool:
        answer = self.extract_answer(text)
        return answer is not None and self.check_answer(answer, gold)

    def first_wrong_step(self, problem: dict, text: str) -> int | None:
        error = self.diagnose(problem, text)
        return None if error is None else error.index

    def generate(self, n: int, level: int, seed: int, split: str = "test") -> list[dict]:
        """`n` distinct problems of `level` from `split`, the same for the same seed.

        Rows are ``{id, problem, answer, level}``.
        """
        if level not in self.levels:
            raise ValueError(f"unknown {self.name} level {level}; levels are {sorted(self.levels)}")
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
        rng = random.Random(f"{self.name}:{level}:{seed}:{split}")
        problems: list[dict] = []
        seen: set[str] = set()
        misses = 0
        while len(problems) < n:
            problem = self.sample_problem(rng, self.levels[level])
            if problem in seen or in_test_split(problem) != (split == "test"):
                misses += 1
                if misses > MAX_CONSECUTIVE_MISSES:
                    raise ValueError(f"level {level} has fewer than {n} distinct {split} problems")
                continue
            misses = 0
            seen.add(problem)
            row = {"id": f"{self.name}-L{level}-{split}-s{seed}-{len(problems)}", "problem": problem}
            problems.append(row | {"answer": self.answer_of(problem), "level": level})
        return problems

    def training_example(self, rng: random.Random, **ranges: list[int]) -> tuple[str, str]:
        """A fresh training problem (never one of the test split) drawn from the training `ranges`, and
        the solution a policy learns for it."""
        while True:
            problem, solution = self.sample_example(rng, self.training_level(rng, **ranges))
            if not in_test_split(problem):
                return problem, solution

    def sample_example(self, rng: random.Random, spec) -> tuple[str, str]:
        """A random problem of level `spec` and the solution a policy learns for it: the reference
        solution unless a task says otherwise."""
        problem = self.sample_problem(rng, spec)
        return problem, self.reference_solution({"problem": problem})
