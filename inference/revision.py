"""Revision loops: P parallel chains of L sequential attempts (budget N = P·L generations).

Each attempt of a chain sees the question and the chain's last `context_window` attempts as a chat
(user: question, assistant: attempt, user: instruction, assistant: attempt, ..., user: instruction),
the layout a revision model is fine-tuned on (docs/design.md, *Data formats*). A chain's first attempt sees the
question alone, so it is a plain sample. All chains of all problems advance one turn per batched
generator call.

The answer is chosen either by flat majority over every attempt, or hierarchically (Snell et al.):
verifier-weighted best-of-N within each chain, then across the chain winners.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ponder.inference.generation import SamplingParams
from ponder.inference.metrics import majority_answer
from ponder.inference.verifiers import METADATA_FILE, aggregate

DEFAULT_INSTRUCTION = "Your answer is wrong. Solve it again: {problem}"
REVISION_SELECTIONS = ("majority", "hierarchical")
EARLIER_ATTEMPT_HEADER = "Earlier attempt:"


@dataclass(frozen=True)
class RevisionFormat:
    """How attempts are shown to the model; stored in a revision checkpoint's ``ponder.json``.

    `instruction` is the user turn after each attempt; ``{problem}`` in it is replaced by the question
    (a tiny model keeps track of the question better when it is repeated right before the answer).
    """

    instruction: str = DEFAULT_INSTRUCTION
    context_window: int = 4

    def __post_init__(self):
        if self.context_window < 0:
            raise ValueError(f"context_window must be at least 0, got {self.context_window}")

    def messages(self, question: str, attempts: list[str]) -> list[dict]:
        """The chat for the next attempt: the question, then the last `context_window` attempts."""
        shown = attempts[-self.context_window :] if self.context_window else []
        messages = [{"role": "user", "content": question}]
        for attempt in shown:
            messages.append({"role": "assistant", "content": attempt})
            messages.append({"role": "user", "content": self.instruction.format(problem=question)})
        return messages

    def prompt(self, tokenizer, question: str, attempts: list[str]) -> str:
        """The chat-formatted prompt for the next attempt, ready for the assistant's answer."""
        return tokenizer.apply_chat_template(
            self.messages(question, attempts), tokenize=False, add_generation_prompt=True
        )

    def fitted_prompt(self, tokenizer, question: str, attempts: list[str], max_tokens: int | None) -> tuple[str, int]:
        """`prompt` with the oldest attempts left out until it is at most `max_tokens` tokens long.

        Returns the prompt and how many attempts it shows. A model fed past the positions it was
        trained on degrades silently (RoPE extrapolates), so a prompt that fits even without
        attempts is required: the question alone too long is an error.
        """
        shown = attempts[-self.context_window :] if self.context_window else []
        while True:
            text = self.prompt(tokenizer, question, shown)
            length = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # measured, not fed
            if max_tokens is None or length <= max_tokens:
                return text, len(shown)
            if not shown:
                raise ValueError(f"the question alone needs more than {max_tokens} prompt tokens: {question[:80]!r}")
            shown = shown[1:]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Attempt:
    """One attempt of a chain: its text, extracted answer (None if unfinished) and the compute it cost."""

    text: str
    answer: str | None
    num_tokens: int
    score: float = 0.0
    verifier_tokens: int = 0
    attempts_shown: int = 0  # earlier attempts in its prompt; fewer than the window when the context was full

    def is_correct(self, task, gold: str) -> bool:
        """Whether the attempt finished with an answer the task grades right against `gold`."""
        return self.answer is not None and task.check_answer(self.answer, gold)


Chains = list[list[Attempt]]  # one problem's chains, each a list of attempts in turn order


def run_chains(
    generator,
    task,
    rows: list[dict],
    chains: int,
    length: int,
    fmt: RevisionFormat,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    seed: int = 0,
) -> list[Chains]:
    """`chains` chains of `length` attempts for every problem in `rows`; one generator call per turn.

    Prompts leave room for `max_new_tokens` within the model's context (`context_limit`): the oldest
    attempts are left out of a prompt that would not (counted in each `Attempt.attempts_shown`).
    """
    if chains < 1 or length < 1:
        raise ValueError(f"chains and length must be at least 1, got {chains} and {length}")
    max_prompt_tokens = prompt_room(generator.tokenizer, max_new_tokens)
    questions = [task.make_prompt(row) for row in rows]
    results: list[Chains] = [[[] for _ in range(chains)] for _ in rows]
    for turn in range(length):
        params = SamplingParams(
            n=1,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=zlib.crc32(f"revision:{seed}:{turn}".encode()),
        )
        slots = [(p, c) for p in range(len(rows)) for c in range(chains)]
        fitted = [
            fmt.fitted_prompt(generator.tokenizer, questions[p], [a.text for a in results[p][c]], max_prompt_tokens)
            for p, c in slots
        ]
        completions = generator.generate([prompt for prompt, _ in fitted], params)
        for (p, c), (_, shown), (completion,) in zip(slots, fitted, completions):
            answer = task.extract_answer(completion.text) if completion.finish_reason == "eos" else None
            results[p][c].append(Attempt(completion.text, answer, completion.num_tokens, attempts_shown=shown))
    return results


def prompt_room(tokenizer, max_new_tokens: int) -> int | None:
    """Prompt tokens that leave `max_new_tokens` of the model's context for the answer; None without a limit."""
    limit = context_limit(tokenizer)
    if limit is None:
        return None
    if limit - max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no prompt room in the model's {limit} positions")
    return limit - max_new_tokens


def context_limit(tokenizer) -> int | None:
    """The tokenizer's `model_max_length`, or None where it is the "no limit" placeholder (about 1e30)."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else None


def load_revision_format(checkpoint: str | Path) -> RevisionFormat:
    """The attempt layout a revision checkpoint was trained on, from its ``ponder.json``."""
    metadata_path = Path(checkpoint) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    if metadata.get("kind") != "revision" or "revision_format" not in metadata:
        raise ValueError(f"{metadata_path}: not a revision checkpoint (needs kind 'revision' and revision_format)")
    return RevisionFormat(**metadata["revision_format"])


def verifier_question(question: str, earlier: list[str], window: int) -> str:
    """The text a verifier with attempts in context reads as the question: it, then the last `window` earlier attempts.

    A revision ORM (Snell et al.) is trained on rows whose prompt is this text, so it judges an
    attempt knowing what the chain tried before; with `window` 0 it is the question alone.
    """
    shown = earlier[-window:] if window else []
    return "\n".join([question, *(f"{EARLIER_ATTEMPT_HEADER}\n{attempt}" for attempt in shown)])


def score_attempts(verifier, task, rows: list[dict], per_problem: list[Chains], aggregation: str = "last") -> None:
    """Set every attempt's verifier score, in one batched verifier call.

    A verifier with ``attempts_in_context`` (a revision ORM) reads each attempt after the chain's
    earlier ones (`verifier_question`); others read the question alone.
    """
    window = getattr(verifier, "attempts_in_context", 0)
    attempts = [
        (verifier_question(task.make_prompt(rows[p]), [a.text for a in chain[:turn]], window), attempt)
        for p, chains in enumerate(per_problem)
        for chain in chains
        for turn, attempt in enumerate(chain)
    ]
    outputs = verifier.score([q for q, _ in attempts], [task.split_steps(a.text) for _, a in attempts])
    for (_, attempt), output in zip(attempts, outputs):
        attempt.score = aggregate(output.step_scores, aggregation)
        attempt.verifier_tokens = output.num_tokens


def select_from_chains(chains: Chains, how: str) -> str | None:
    """The chosen answer of one problem's chains: flat `majority`, or `hierarchical` weighted selection.

    Hierarchical: within each chain, the answer with the highest summed verifier score wins and
    carries that sum; across chains, the winner answer with the highest total of carried sums.
    Attempts without an answer never take part.
    """
    if how == "majority":
        return majority_answer([a.answer for chain in chains for a in chain])
    if how != "hierarchical":
        raise ValueError(f"unknown revision selection {how!r}; use one of {REVISION_SELECTIONS}")
    across: dict[str, float] = defaultdict(float)
    for chain in chains:
        within: dict[str, float] = defaultdict(float)
        for attempt in chain:
            if attempt.answer is not None:
                within[attempt.answer] += attempt.score
        if within:
            winner = max(within, key=within.__getitem__)
            across[winner] += within[winner]
    return max(across, key=across.__getitem__) if across else None
