"""Whether two final answers are the same mathematical object, decided by math-verify.

Both answers are parsed as LaTeX (``\\frac12``, intervals, sets, matrices, ``\\text{...}``) with plain
expressions as a fallback, then compared symbolically and numerically. Each math-verify stage (parsing
one answer, one comparison) is cut off after `timeout_seconds` by math-verify's own ``SIGALRM`` timer, so
grading runs in the main thread (math-verify raises a ``ValueError`` saying so elsewhere). Unparsable or
timed-out input is simply not equivalent: grading garbage returns False and never raises.
"""

from __future__ import annotations

from functools import lru_cache

from math_verify import parse, verify

DEFAULT_TIMEOUT_SECONDS = 5


def equivalent(answer: str, gold: str, timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """True when `answer` and `gold` (LaTeX without ``$``, e.g. boxed contents) denote the same answer."""
    answer, gold = answer.strip(), gold.strip()
    if not answer or not gold:
        return False
    if answer == gold:
        return True
    gold_parsed = _parse_gold(gold, timeout_seconds)
    answer_parsed = _parse(answer, timeout_seconds)
    return bool(gold_parsed and answer_parsed) and verify(gold_parsed, answer_parsed, timeout_seconds=timeout_seconds)


def _parse(answer: str, timeout_seconds: int) -> list:
    """math-verify's parse of one answer: ``[sympy object, source text]``, or [] when nothing parses."""
    return parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout_seconds)


# Every sample of a problem is graded against the same gold answer: its parse is kept (and never mutated).
_parse_gold = lru_cache(maxsize=4096)(_parse)
