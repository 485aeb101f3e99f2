"""Problems for a stage: the task's own generator (the toy world) or the rows of a dataset (real math).

A dataset source is a JSONL file, a folder written by `datasets.save_to_disk`, or a Hub dataset id
(``HuggingFaceH4/MATH-500``, ``openai/gsm8k`` with ``config_name: main``); the task turns each row
into ``{id, problem, answer, level}`` and names the row when one lacks a field.

Problems are checked when they are loaded, before any work (`ProblemCheck`): a question and an
answer that are not empty and an id that no other problem has; given the policy, a prompt that its
tokenizer encodes without unknown tokens and that leaves `max_new_tokens` of the model's positions
for the answer. A bad problem is a `BadRowError` naming the source and the row, or is skipped and
counted with ``skip_bad_rows``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.inference.generation import chat_prompt
from ponder.inference.revision import context_limit
from ponder.training.core.configs import checkpoint_path
from ponder.training.core.rows import BadRowError, read_jsonl

logger = logging.getLogger(__name__)
EXAMPLES_KEPT = 5  # skipped problems named in a stage's stats


def skip_bad_rows_field():
    """The ``skip_bad_rows`` key of a stage that loads problems."""
    return field(
        default=False,
        metadata={
            "help": "skip and count problems that cannot run (empty question or answer, an id given twice, a prompt "
            "too long for the policy or with characters its tokenizer lacks) instead of stopping at the first"
        },
    )


@dataclass
class ProblemCheck:
    """What a problem must be before a stage spends work on it (module docstring).

    Without a `tokenizer` only the question, the answer and the id are checked. `positions` is the
    model's context length (None: unlimited). Skipped problems are noted in `skipped`.
    """

    tokenizer: Any = None
    max_new_tokens: int = 0
    positions: int | None = None
    skip_bad_rows: bool = False
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def for_policy(cls, key: str, policy: str, max_new_tokens: int, skip_bad_rows: bool) -> ProblemCheck:
        """The check for problems that the checkpoint `policy` (named by the config key `key`) will answer."""
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint_path(key, policy))
        model_positions = getattr(AutoConfig.from_pretrained(policy), "max_position_embeddings", None)
        limits = [context_limit(tokenizer), model_positions]
        positions = min((limit for limit in limits if limit is not None), default=None)
        return cls(tokenizer, max_new_tokens, positions, skip_bad_rows)

    def keep(self, task, located: Iterable[tuple[str, dict]]) -> list[dict]:
        """The problems of `located`, (where, problem) pairs, that pass; each bad one is refused (`refuse`)."""
        kept, seen = [], {}
        for where, problem in located:
            fault = self.fault(task, problem, seen)
            if fault is None:
                seen[problem["id"]] = where
                kept.append(problem)
            else:
                self.refuse(f"{where} (id {problem['id']!r}): {fault}")
        if self.skipped:
            logger.warning("skipped %d bad problems, e.g. %s", len(self.skipped), self.skipped[0])
        return kept

    def refuse(self, message: str) -> None:
        """Raise `BadRowError` with `message`, or with `skip_bad_rows` note it in `skipped`."""
        if not self.skip_bad_rows:
            raise BadRowError(message)
        self.skipped.append(message)

    def fault(self, task, problem: dict, seen: dict[str, str]) -> str | None:
        """Why `problem` cannot run, or None; `seen` maps the ids kept so far to where their problems are."""
        if not str(problem["problem"]).strip():
            return "empty question"
        if not str(problem["answer"]).strip():
            return "empty answer"
        if problem["id"] in seen:
            return f"the id of an earlier problem ({seen[problem['id']]})"
        if self.tokenizer is None:
            return None
        question = task.make_prompt(problem)
        ids = self.token_ids(chat_prompt(self.tokenizer, question))
        unknown = self.tokenizer.unk_token_id
        if unknown is not None and unknown in ids:
            lacking = "".join(c for c in dict.fromkeys(question) if unknown in self.token_ids(c))
            return f"the policy's tokenizer cannot encode {lacking!r}"
        if self.positions is not None and len(ids) + self.max_new_tokens > self.positions:
            return (
                f"a prompt of {len(ids)} tokens leaves no room for max_new_tokens={self.max_new_tokens} "
                f"in the model's {self.positions} positions"
            )
        return None

    def token_ids(self, text: str) -> list[int]:
        """`text` encoded by the policy's tokenizer, as generation encodes a prompt (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def summary(self) -> dict:
        """How many problems were skipped, and the first few of them, for a stage's stats."""
        return {"skipped_problems": len(self.skipped), "skipped_problem_examples": self.skipped[:EXAMPLES_KEPT]}


def read_rows(source: str, split: str, config_name: str | None = None) -> list[dict]:
    """All rows of `source`: a JSONL file, a saved dataset folder (`split` of a DatasetDict) or a Hub dataset."""
    path = Path(source)
    if path.is_file():
        return [row for _, row in read_jsonl(path)]
    import datasets

    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return (loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded).to_list()
    return datasets.load_dataset(source, config_name, split=split).to_list()


def load_problems(
    task,
    source: str,
    split: str = "test",
    limit: int | None = None,
    config_name: str | None = None,
    seed: int = 0,
    check: ProblemCheck | None = None,
) -> list[dict]:
    """`limit` rows of `source` drawn at random with `seed` (all when None), in file order, as the task's problems
    that pass `check` (default: the checks that need no tokenizer).

    A file ordered by subject or difficulty (MATH's train split) has no representative first rows.
    """
    check = check or ProblemCheck()
    rows = read_rows(source, split, config_name)
    indices = range(len(rows))
    if limit is not None and limit < len(rows):
        indices = sorted(random.Random(seed).sample(indices, limit))
    located = []
    for index in indices:
        try:
            located.append((f"{source}: row {index}", task.problem_from_row(rows[index], index)))
        except ValueError as error:
            check.refuse(f"{source}: {error}")
    return check.keep(task, located)
