"""The `countdown` toy world: reach a target by combining numbers, where a valid step can be a dead end.

A problem gives a few numbers, ascending, and a target, every number zero-padded to two digits. Each
step combines two of the remaining numbers and writes the numbers that remain: those it did not use,
in the order they stood, then its result. The answer line follows as soon as the target is among the
remaining numbers (numbers may be left unused)::

    02 03 05 -> 25
    03+02=05 | 05 05
    05*05=25 | 25
    Answer: 25

A move is ``a+b``, ``a-b`` (only when a > b: a zero is never of use), ``a*b`` (both above 1) or
``a/b`` (exact, b above 1); ``*1`` and ``/1`` would only discard a 1, which no solution needs. Every
result stays below 100, so every number keeps the two-digit width a small model reads at fixed
offsets. The larger operand is written first; the oracle also takes ``+`` and ``*`` the other way
round. Difficulty grows with how many numbers are given and how large they are (`LEVELS`).

Unlike `arith`, where a wrong step is an arithmetic slip, a low-probability token for any model that
can do the arithmetic, most wrong steps here are legal moves after which the target can no longer be
reached: dead ends. Whether a state can still reach the target is its value, and `state_value`
computes it exactly by memoized exhaustive search, so `diagnose` reports the first dead end and the
oracle PRM measures value, what Monte-Carlo rollouts estimate.

A solution is right when its moves are legal from the problem's numbers and reach its target, which
only the whole problem decides: the gold answer of a row is its problem text, `extract_answer` returns
the solution itself (its lines up to the last answer line) and `check_answer` replays it. Majority
voting thus counts identical solutions.

Problems are built by random walks (`sample_walk`), and a toy policy learns from the walks
themselves, cut short by the move that makes the target as soon as one does. Given its target, a
walk favours the moves from which random continuations often make the target: never a dead end, and
spread over the moves that keep the target reachable. The policy so learns legal moves, to finish
when it can, and an approximate sense of which moves stay live; its mistakes are mostly dead ends,
moves as plausible to it as the live ones. Shortest solutions (`reference_steps`) would teach one
choice per state, which a small policy either learns perfectly or cannot replace with a legal
alternative when it misses it. The walks also cost nothing to draw, where a solver drawing uniformly
among the live moves needs a search per move.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

from ponder.inference.tasks import split_on_delimiter
from ponder.inference.tasks.toy import ANSWER_PREFIX, ANSWER_RE, STEP_DELIMITER, StepError, ToyTask, check_range

NUMBER_WIDTH = 2  # every number, given or made, is zero-padded to this many digits
LIMIT = 10**NUMBER_WIDTH  # every number is below this
TARGETS = range(10, LIMIT)  # targets have all the digits
OPERATIONS = "+-*/"


@dataclass(frozen=True)
class Level:
    """A difficulty level: how many numbers are given, and how large each may be."""

    numbers: int
    largest: int


LEVELS: dict[int, Level] = {
    1: Level(numbers=3, largest=12),
    2: Level(numbers=4, largest=12),
    3: Level(numbers=4, largest=20),
    4: Level(numbers=5, largest=20),
    5: Level(numbers=6, largest=20),
    6: Level(numbers=6, largest=30),
}
assert all(spec.largest < LIMIT for spec in LEVELS.values())

_NUMBER = rf"[0-9]{{{NUMBER_WIDTH}}}"
_PROBLEM_RE = re.compile(rf"^({_NUMBER}(?: {_NUMBER})+) -> ({_NUMBER})$")
_STEP_RE = re.compile(rf"^({_NUMBER})([-+*/])({_NUMBER})=({_NUMBER}) \| ({_NUMBER}(?: {_NUMBER})*)$")


@dataclass(frozen=True)
class Problem:
    """A parsed problem: the given numbers and the target."""

    numbers: tuple[int, ...]
    target: int


@dataclass(frozen=True)
class Move:
    """One move: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int


def parse_problem(problem: str) -> Problem:
    """Parse ``"03 05 07 09 -> 41"``: two or more two-digit numbers, an arrow and the target."""
    match = _PROBLEM_RE.match(problem)
    if match is None:
        raise ValueError(f"not a countdown problem: {problem!r}")
    return Problem(tuple(int(n) for n in match.group(1).split()), int(match.group(2)))


def written(numbers: Sequence[int]) -> str:
    """Numbers as a step or a problem writes them: zero-padded, separated by spaces."""
    return " ".join(f"{n:0{NUMBER_WIDTH}d}" for n in numbers)


def format_problem(numbers: Sequence[int], target: int) -> str:
    """The problem text of `numbers` (written ascending) and `target`."""
    return f"{written(sorted(numbers))} -> {target:0{NUMBER_WIDTH}d}"


def move_result(left: int, op: str, right: int) -> int | None:
    """``left op right`` when that is a legal move, else None."""
    if op == "+":
        value = left + right
    elif op == "-":
        value = left - right
    elif op == "*":
        value = left * right if left > 1 and right > 1 else 0
    else:
        value = left // right if right > 1 and left % right == 0 else 0
    return value if 0 < value < LIMIT else None


def legal_moves(numbers: Sequence[int]) -> list[Move]:
    """Every distinct legal move on `numbers`, the larger operand first, in a fixed order."""
    pairs = dict.fromkeys((max(a, b), op, min(a, b)) for a, b in combinations(numbers, 2) for op in OPERATIONS)
    return [Move(a, op, b, value) for a, op, b in pairs if (value := move_result(a, op, b)) is not None]


def remaining(numbers: Sequence[int], move: Move) -> list[int]:
    """The numbers after `move`: those it did not use, in the order they stood, then its result."""
    rest = list(numbers)
    rest.remove(move.left)
    rest.remove(move.right)
    return rest + [move.result]


def state_value(numbers: Sequence[int], target: int) -> bool:
    """Whether `target` is among `numbers` or can still be made from them (exhaustive search, memoized)."""
    return moves_needed(numbers, target) is not None


def moves_needed(numbers: Sequence[int], target: int) -> int | None:
    """The fewest moves that put `target` among `numbers`, or None when no moves do."""
    masks = _made_within(tuple(sorted(numbers)))
    return next((moves for moves, mask in enumerate(masks) if mask >> target & 1), None)


@lru_cache(maxsize=1 << 17)
def _made_within(state: tuple[int, ...]) -> tuple[int, ...]:
    """Bit masks of the numbers that can be among the sorted `state` after at most 0, 1, ... len - 1 moves.

    The masks do not depend on a target, so every target and every problem sharing a state share them.
    """
    masks = [sum(1 << n for n in set(state))] * len(state)
    for child in _successors(state):
        for moves, mask in enumerate(_made_within(child), 1):
            masks[moves] |= mask
    return tuple(masks)


def _successors(state: tuple[int, ...]) -> set[tuple[int, ...]]:
    """The sorted states one legal move away from the sorted `state` (the search's inner loop, without `Move`s)."""
    found = set()
    for i, j in combinations(range(len(state)), 2):
        right, left = state[i], state[j]
        rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
        for op in OPERATIONS:
            value = move_result(left, op, right)
            if value is not None:
                found.add(tuple(sorted((*rest, value))))
    return found


def step_text(move: Move, after: Sequence[int]) -> str:
    """The step line of `move`, which leaves `after`."""
    w = NUMBER_WIDTH
    return f"{move.left:0{w}d}{move.op}{move.right:0{w}d}={move.result:0{w}d} | {written(after)}"


def answer_line(target: int) -> str:
    """The line that ends a solution reaching `target`."""
    return f"{ANSWER_PREFIX}{target:0{NUMBER_WIDTH}d}"


def reference_steps(problem: str) -> list[str]:
    """A shortest solution of `problem` as steps (the answer line last): each move the first, in
    `legal_moves` order, that leaves the target fewest moves away."""
    parsed = parse_problem(problem)
    numbers, target, steps = list(parsed.numbers), parsed.target, []
    if not state_value(numbers, target):
        raise ValueError(f"countdown problem without a solution: {problem!r}")
    while target not in numbers:
        options = [(move, remaining(numbers, move)) for move in legal_moves(numbers)]
        live = [(move, after) for move, after in options if state_value(after, target)]
        move, numbers = min(live, key=lambda option: moves_needed(option[1], target))
        steps.append(step_text(move, numbers))
    return steps + [answer_line(target)]


def sample_walk(rng: random.Random, spec: Level) -> tuple[str, list[str]]:
    """A random problem of a level, built from a random walk, and a solution that follows the walk.

    The numbers are uniform in 1..largest. The walk draws each move uniformly from the legal ones
    until one number is left; the target is the result of a step drawn uniformly from those that
    make a number of `TARGETS` not seen before in the walk (the numbers are drawn again when no step
    does). The solution follows the walk until the target is one move away, then makes it (a move
    drawn uniformly from those that do).
    """
    while True:
        given = sorted(rng.randint(1, spec.largest) for _ in range(spec.numbers))
        numbers, seen, walk, ends = given, set(given), [], []
        while len(numbers) > 1:
            move = rng.choice(legal_moves(numbers))
            walk.append((numbers, move))
            numbers = remaining(numbers, move)
            if move.result in TARGETS and move.result not in seen:
                ends.append(move.result)
            seen.add(move.result)
        if ends:
            break
    target, steps = rng.choice(ends), []
    for numbers, move in walk:
        finishing = [other for other in legal_moves(numbers) if other.result == target]
        move = rng.choice(finishing) if finishing else move
        steps.append(step_text(move, remaining(numbers, move)))
        if finishing:
            return format_problem(given, target), steps + [answer_line(target)]
    raise AssertionError("the walk makes its target")


def diagnose(problem: str, text: str) -> StepError | None:
    """The first wrong step of `text` as a solution of `problem`, or None if no step is wrong.

    Kinds: ``dead_end`` (a legal move after which the target can no longer be reached), ``invalid``
    (a well-formed step that is no legal move: an operand not among the remaining numbers, a move the
    rules forbid, a wrong result or wrong remaining numbers), ``answer`` (the answer line names
    another number, or a step stands where the answer line is due), ``early_answer`` (an answer line
    before the target is among the remaining numbers), ``format`` (unparsable, or a number not two
    digits), ``extra`` (anything after the answer line).

    Only the steps that are written are judged: a correct but unfinished prefix returns None; the text
    is judged as written: a blank line is a step of the wrong format.
    """
    parsed = parse_problem(problem)
    numbers, target, answered = list(parsed.numbers), parsed.target, False
    for index, step in enumerate(split_on_delimiter(text, STEP_DELIMITER, keep_empty=True)):
        answer, move = ANSWER_RE.match(step), _STEP_RE.match(step)
        if answered:
            return StepError(index, "extra")
        if target in numbers:
            if answer is None:
                return StepError(index, "answer" if move else "format")
            if int(answer.group(1)) != target:
                return StepError(index, "answer")
            answered = True
        elif answer is not None:
            return StepError(index, "early_answer")
        elif move is None:
            return StepError(index, "format")
        else:
            left, op, right, value = int(move.group(1)), move.group(2), int(move.group(3)), int(move.group(4))
            after = [int(n) for n in move.group(5).split()]
            if not _is_legal(numbers, Move(left, op, right, value), after):
                return StepError(index, "invalid")
            numbers = after
            if not state_value(numbers, target):
                return StepError(index, "dead_end")
    return None


def _is_legal(numbers: list[int], move: Move, after: list[int]) -> bool:
    """Whether `move` takes two of `numbers`, is allowed, is computed right and leaves `after` (in any order)."""
    rest = list(numbers)
    for operand in (move.left, move.right):
        if operand not in rest:
            return False
        rest.remove(operand)
    return move_result(move.left, move.op, move.right) == move.result and sorted(rest + [move.result]) == sorted(after)


def extract_answer(text: str) -> str | None:
    """The solution `text` claims: its lines up to the last answer line, or None when it has none."""
    lines = text.split(STEP_DELIMITER)
    last = max((i for i, line in enumerate(lines) if ANSWER_RE.match(line)), default=None)
    return None if last is None else STEP_DELIMITER.join(lines[: last + 1])


def solves(problem: str, text: str) -> bool:
    """Whether `text` is a finished solution of `problem` with no wrong step."""
    steps = split_on_delimiter(text, STEP_DELIMITER, keep_empty=True)
    return bool(steps) and ANSWER_RE.match(steps[-1]) is not None and diagnose(problem, text) is None


class CountdownTask(ToyTask):
    """The `countdown` task behind the common `Task` interface, plus the generator and the oracle."""

    name = "countdown"
    levels = LEVELS
    training_ranges = {"levels": (min(LEVELS), max(LEVELS))}

    def sample_problem(self, rng: random.Random, spec: Level) -> str:
        return sample_walk(rng, spec)[0]

    def sample_example(self, rng: random.Random, spec: Level) -> tuple[str, str]:
        """A `sample_walk` problem and its walk: the training traces of a countdown policy."""
        problem, steps = sample_walk(rng, spec)
        return problem, self.join_steps(steps)

    def answer_of(self, problem: str) -> str:
        return problem

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)

    def check_answer(self, answer: str, gold: str) -> bool:
        """Whether the solution `answer` solves the problem `gold`."""
        return solves(gold, answer)

    def reference_solution(self, problem: dict) -> str:
        return self.join_steps(reference_steps(problem["problem"]))

    def diagnose(self, problem: dict, text: str) -> StepError | None:
        return diagnose(problem["problem"], text)

    def check_training_ranges(self, levels: list[int]) -> None:
        check_range("train_levels", levels, min(LEVELS), max(LEVELS))

    def training_level(self, rng: random.Random, levels: list[int]) -> Level:
        """The level of the next training problem, uniform over the range."""
        return LEVELS[rng.randint(*levels)]
