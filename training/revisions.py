"""Revisions stage: on-policy revision trajectories from the policy's own samples (Snell et al.).

    ponder revisions --config recipes/toy/revisions.yaml
    accelerate launch --config_file accelerate_configs/cpu.yaml -m ponder.training.revisions \\
        --config recipes/toy/revisions.yaml

For every training problem the policy samples `samples_per_problem` solutions, which are graded.
Each correct sample becomes one trajectory (identical ones kept once) with j earlier attempts in
context, j uniform in 0..`max_wrong_in_context`. With `context: snell` they are wrong ones, capped
by the distinct wrong solutions at hand: the last is the one nearest to the correct solution by
character edit distance, the others are drawn at random. With `context: sampled` they are the
problem's other samples, right or wrong, as a chain of the model's own attempts shows them at
inference. With `keep_correct`, a trajectory whose context shows a correct attempt ends on a copy
of the latest one: the model learns to keep a right answer and to revise only wrong ones. A context
that would not leave `max_new_tokens` of the model's positions for the answer loses its oldest
attempts, as a chain's prompt does at inference. Trajectories are chats in the prompt-completion
layout that the revision model trains on (prompt: question, attempts and instruction turns;
completion: the correct solution), so the loss falls on the final assistant turn only. With
`reference_solutions`, a problem none of whose samples is correct ends on the dataset's reference
solution instead (off-policy). Sharded, multi-process and resumable like the label stage.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from ponder.inference.engine import EngineConfig
from ponder.inference.revision import DEFAULT_INSTRUCTION, RevisionFormat, prompt_room, run_chains
from ponder.inference.tasks import get_task
from ponder.training.core.configs import parse_config
from ponder.training.core.data_stage import SampledDataConfig, run_data_stage
from ponder.training.core.logs import setup_logging
from ponder.training.core.shards import shard_totals

logger = logging.getLogger(__name__)

# snell: j wrong attempts, the nearest wrong one last (Snell et al.); sampled: j of the problem's other
# samples, right or wrong, in random order (what a chain shows at inference)
CONTEXTS = ("snell", "sampled")


@dataclass
class RevisionsConfig(SampledDataConfig):
    """Which problems, how many samples each, and how trajectories are laid out.

    `context`: which earlier attempts a trajectory shows (`CONTEXTS`, `build_trajectories`), at most
    `max_wrong_in_context` of them (all wrong with ``snell``); `keep_fraction`: with ``snell``, the
    share of trajectories that end on a correct attempt; `keep_correct`: a trajectory whose context
    shows a correct attempt completes with a copy of it.
    """

    problems_per_level: int = field(
        default=64, metadata={"help": "generated problems per level (unused with problems_file)"}
    )
    samples_per_problem: int = field(
        default=64, metadata={"help": "solutions sampled per problem; each correct one becomes a trajectory"}
    )
    max_wrong_in_context: int = field(
        default=4,
        metadata={"help": "most earlier attempts a trajectory shows (drawn from 0 to this); also the context window"},
    )
    context: str = field(
        default="snell",
        metadata={
            "help": "earlier attempts shown: snell (wrong ones, the nearest last) or sampled (other samples, "
            "right or wrong)"
        },
    )
    keep_fraction: float = field(
        default=0.0,
        metadata={"help": "with context snell: share of trajectories that end on a correct attempt instead (0 to 1)"},
    )
    keep_correct: bool = field(
        default=False,
        metadata={
            "help": "a trajectory whose context shows a correct attempt ends on a copy of the latest one, so the "
            "model learns to keep a right answer and to revise only wrong ones"
        },
    )
    instruction: str = field(
        default=DEFAULT_INSTRUCTION,
        metadata={"help": "user turn after each earlier attempt; {problem} in it is replaced by the question"},
    )
    reference_solutions: bool = field(
        default=False,
        metadata={
            "help": "a problem none of whose samples is correct ends its trajectory on the dataset's reference "
            "solution (off-policy; for a policy too weak to solve its training problems)"
        },
    )
    output_dir: str = field(
        default="outputs/revisions",
        metadata={"help": "folder for the trajectories dataset, trajectories.jsonl, stats.json and the shards"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.keep_fraction and self.context != "snell":
            raise ValueError(f"keep_fraction applies to context 'snell' only, got context {self.context!r}")
        if self.max_wrong_in_context < 0:
            raise ValueError(f"max_wrong_in_context must be at least 0, got {self.max_wrong_in_context}")
        if not 0 <= self.keep_fraction <= 1 or (self.keep_fraction and not self.max_wrong_in_context):
            raise ValueError(
                f"keep_fraction must be in [0, 1] and needs max_wrong_in_context >= 1, got {self.keep_fraction}"
            )

    @property
    def revision_format(self) -> RevisionFormat:
        return RevisionFormat(self.instruction, self.max_wrong_in_context)


def build_trajectories(
    question: str,
    correct: list[str],
    wrong: list[str],
    max_wrong: int,
    fmt: RevisionFormat,
    rng: random.Random,
    keep_fraction: float = 0.0,
    context: str = "snell",
    fit=None,
    keep_correct: bool = False,
) -> list[dict]:
    """One trajectory per correct sample, duplicates dropped: ``{prompt, completion, num_wrong, last_correct,
    edit_distance}``.

    ``snell``: j ~ uniform(0, max_wrong), capped by the distinct wrong solutions; the last attempt
    shown is the wrong solution nearest to the correct one by edit distance, the j - 1 before it
    random others. With probability `keep_fraction` the trajectory instead ends on a correct sample
    of the problem after 0..max_wrong - 1 random wrong ones, so the model also sees right answers in
    context and learns to keep them.
    ``sampled``: j ~ uniform(0, max_wrong) of the problem's other samples, right or wrong at the
    rate the policy makes them, in random order: the contexts a chain of the model's own attempts
    shows at inference, where a Snell context is all wrong.
    `num_wrong` counts the wrong attempts shown; `edit_distance` is the last attempt's distance (None
    without attempts). `fit(attempts)` returns how many of the last attempts fit the model's context
    (`RevisionFormat.fitted_prompt`); older ones are left out, as at inference, and the row counts
    them in `trimmed`. With `keep_correct`, a trajectory whose shown attempts include a correct one
    ends on a copy of the latest (`kept` in the row) instead of its own sample. Identical correct
    samples (common when a problem has one natural solution) still give distinct trajectories when
    their drawn contexts differ; identical trajectories are kept once.
    """
    contexts = (
        _sampled_contexts(correct, wrong, max_wrong, rng)
        if context == "sampled"
        else _snell_contexts(correct, wrong, max_wrong, rng, keep_fraction)
    )
    wrong_set = set(wrong)
    trajectories, seen = [], set()
    for solution, drawn in contexts:
        attempts = drawn[len(drawn) - fit(drawn) :] if fit else drawn
        shown_correct = [a for a in attempts if a not in wrong_set]
        kept = keep_correct and bool(shown_correct)
        if kept:
            solution = shown_correct[-1]
        key = (solution, *attempts)
        if key in seen:
            continue
        seen.add(key)
        trajectories.append(
            {
                "prompt": fmt.messages(question, attempts),
                "completion": [{"role": "assistant", "content": solution}],
                "num_wrong": sum(a in wrong_set for a in attempts),
                "last_correct": bool(attempts) and attempts[-1] not in wrong_set,
                "edit_distance": Levenshtein.distance(attempts[-1], solution) if attempts else None,
                "trimmed": len(drawn) - len(attempts),
                "kept": kept,
            }
        )
    return trajectories


def _snell_contexts(correct, wrong, max_wrong, rng, keep_fraction) -> Iterator[tuple[str, list[str]]]:
    """``snell`` contexts of `build_trajectories`: (correct sample, attempts shown before it)."""
    wrong = list(dict.fromkeys(wrong))
    for solution in correct:
        if keep_fraction > 0 and rng.random() < keep_fraction:
            j = min(rng.randint(0, max_wrong - 1), len(wrong))
            yield solution, rng.sample(wrong, j) + [rng.choice(correct)]
            continue
        j = min(rng.randint(0, max_wrong), len(wrong))
        attempts = []
        if j:
            nearest = min(wrong, key=lambda w: Levenshtein.distance(w, solution))
            attempts = rng.sample([w for w in wrong if w != nearest], j - 1) + [nearest]
        yield solution, attempts


def _sampled_contexts(correct, wrong, max_wrong, rng) -> Iterator[tuple[str, list[str]]]:
    """``sampled`` contexts of `build_trajectories`: each correct sample after j of the other samples."""
    for index, solution in enumerate(correct):
        others = correct[:index] + correct[index + 1 :] + wrong
        yield solution, rng.sample(others, min(rng.randint(0, max_wrong), len(others)))


def _attempts_that_fit(fmt: RevisionFormat, tokenizer, question: str, max_prompt_tokens, attempts: list[str]) -> int:
    """How many of the last `attempts` a prompt of at most `max_prompt_tokens` tokens can show."""
    return fmt.fitted_prompt(tokenizer, question, attempts, max_prompt_tokens)[1]


def revisions_shard(generator, task, config: RevisionsConfig, index: int, problems: list[dict]) -> dict:
    """Sample, grade and build one shard's trajectories; deterministic given the config and shard index."""
    seed = zlib.crc32(f"revisions:{config.seed}:{index}".encode())
    start = time.monotonic()
    tokens_before = generator.stats.generated_tokens
    fmt = config.revision_format
    sampled = run_chains(
        generator,
        task,
        problems,
        chains=config.samples_per_problem,
        length=1,
        fmt=fmt,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
    )
    rng = random.Random(seed)
    max_prompt_tokens = prompt_room(generator.tokenizer, config.max_new_tokens)
    rows, correct_samples, without_correct, references = [], 0, 0, 0
    for problem, chains in zip(problems, sampled):
        texts = [chain[0].text for chain in chains]
        graded = [chain[0].is_correct(task, problem["answer"]) for chain in chains]
        correct = [t for t, ok in zip(texts, graded) if ok]
        wrong = [t for t, ok in zip(texts, graded) if not ok]
        correct_samples += len(correct)
        without_correct += not correct
        if not correct and config.reference_solutions and problem.get("solution"):
            correct = [problem["solution"]]
            references += 1
        question = task.make_prompt(problem)
        fit = functools.partial(_attempts_that_fit, fmt, generator.tokenizer, question, max_prompt_tokens)
        trajectories = build_trajectories(
            question,
            correct,
            wrong,
            config.max_wrong_in_context,
            fmt,
            rng,
            keep_fraction=config.keep_fraction,
            context=config.context,
            fit=fit,
            keep_correct=config.keep_correct,
        )
        for number, trajectory in enumerate(trajectories):
            rows.append({"id": f"{problem['id']}-r{number}", "level": problem.get("level"), **trajectory})
    stats = {
        "problems": len(problems),
        "samples": len(problems) * config.samples_per_problem,
        "correct_samples": correct_samples,
        "duplicate_trajectories": correct_samples + references - len(rows),
        "problems_without_correct": without_correct,
        "reference_solutions": references,
        "generated_tokens": generator.stats.generated_tokens - tokens_before,
        "seconds": round(time.monotonic() - start, 2),
    }
    return {"rows": rows, "stats": stats}


def summarize(shard_stats: list[dict], rows: list[dict], wall_seconds: float) -> dict:
    """Totals over shards plus the trajectory figures: count, j histogram, trajectories ending on a correct
    attempt, trajectories that copy one (`keep_correct`), mean edit distance of the last wrong attempt."""
    distances = [r["edit_distance"] for r in rows if r["edit_distance"] is not None and not r.get("last_correct")]
    per_level = Counter(r["level"] for r in rows)
    return {
        **shard_totals(shard_stats, wall_seconds),
        "trajectories": len(rows),
        "num_wrong_histogram": {str(j): n for j, n in sorted(Counter(r["num_wrong"] for r in rows).items())},
        "last_correct": sum(bool(r.get("last_correct")) for r in rows),
        "kept": sum(bool(r.get("kept")) for r in rows),
        "trimmed_attempts": sum(r.get("trimmed", 0) for r in rows),
        "trajectories_per_level": {str(level): n for level, n in sorted(per_level.items())},
        "mean_edit_distance": round(sum(distances) / len(distances), 2) if distances else None,
    }


def run_revisions(config: RevisionsConfig, engine: EngineConfig | None = None) -> dict | None:
    """Build every shard this process owns; on the main process merge and write the outputs (the stats)."""
    task = get_task(config.task)
    return run_data_stage(
        config,
        engine,
        lambda generator, index, problems: revisions_shard(generator, task, config, index, problems),
        lambda shard_stats, rows, wall_seconds: (
            summarize(shard_stats, rows, wall_seconds) | {"revision_format": config.revision_format.to_dict()}
        ),
        "trajectories.jsonl",
    )


CONFIG_TYPES = (RevisionsConfig, EngineConfig)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict | None:
    setup_logging()
    config, engine = parse_config(CONFIG_TYPES, argv)
    stats = run_revisions(config, engine)
    if stats is not None:
        logger.info("revisions: %d trajectories, j histogram %s", stats["trajectories"], stats["num_wrong_histogram"])
    return stats


if __name__ == "__main__":
    main()
