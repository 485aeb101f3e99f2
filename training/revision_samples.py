"""Revision-samples stage: the revision model's own attempts, graded, as rows for a revision ORM.

    ponder revision_samples --config recipes/toy/revision_samples.yaml
    ponder orm --config recipes/toy/orm-revision.yaml

Snell et al. found that a verifier trained on first attempts transfers poorly to revisions, so the
revision loop's verifier is trained on what the revision model writes inside its chains. For every
training problem the revision model runs `samples_per_problem` chains of `turns` attempts (the loop
of `ponder.inference.revision`, in the checkpoint's own attempt layout). Each attempt becomes one
ORM row whose prompt is the question followed by the chain's last `attempts_in_context` earlier
attempts (`verifier_question`), labelled by whether its answer is right; train the ORM with the same
`attempts_in_context` so that it reads attempts at inference exactly as here. Sharded,
multi-process and resumable like the label stage.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

from ponder.inference.engine import EngineConfig
from ponder.inference.revision import load_revision_format, run_chains, verifier_question
from ponder.inference.tasks import get_task
from ponder.training.core.configs import parse_config
from ponder.training.core.data_stage import SampledDataConfig, run_data_stage
from ponder.training.core.logs import setup_logging
from ponder.training.core.shards import shard_totals

logger = logging.getLogger(__name__)


@dataclass
class RevisionSamplesConfig(SampledDataConfig):
    """Which revision model runs which problems: `samples_per_problem` chains of `turns` attempts each."""

    policy: str | None = field(
        default=None, metadata={"help": "revision checkpoint whose chains are sampled (required)"}
    )
    samples_per_problem: int = field(default=4, metadata={"help": "chains run per problem"})
    turns: int = field(default=4, metadata={"help": "attempts per chain"})
    attempts_in_context: int = field(
        default=4,
        metadata={
            "help": "earlier attempts of the chain shown in each row's prompt; train the ORM with the same value"
        },
    )
    output_dir: str = field(
        default="outputs/revision_samples",
        metadata={"help": "folder for the attempts dataset, attempts.jsonl, stats.json and the shards"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.turns < 1:
            raise ValueError(f"turns must be at least 1, got {self.turns}")
        if self.attempts_in_context < 0:
            raise ValueError(f"attempts_in_context must be at least 0, got {self.attempts_in_context}")


def attempt_rows(task, problem: dict, chains, attempts_in_context: int) -> list[dict]:
    """One ORM row per attempt that wrote at least one step: ``{id, problem_id, level, turn, prompt, ...}``.

    `labels` repeat the outcome on every step (the stepwise format wants one per step; an ORM reads
    `answer_correct` only).
    """
    question = task.make_prompt(problem)
    rows = []
    for number, chain in enumerate(chains):
        for turn, attempt in enumerate(chain):
            steps = task.split_steps(attempt.text)
            if not steps:
                continue
            correct = attempt.is_correct(task, problem["answer"])
            rows.append(
                {
                    "id": f"{problem['id']}-c{number}-t{turn + 1}",
                    "problem_id": problem["id"],
                    "level": problem.get("level"),
                    "turn": turn + 1,
                    "prompt": verifier_question(question, [a.text for a in chain[:turn]], attempts_in_context),
                    "completions": steps,
                    "labels": [float(correct)] * len(steps),
                    "answer_correct": correct,
                }
            )
    return rows


def revision_samples_shard(generator, task, config: RevisionSamplesConfig, fmt, index: int, problems: list[dict]):
    """Run, grade and lay out one shard's chains; deterministic given the config and shard index."""
    start = time.monotonic()
    tokens_before = generator.stats.generated_tokens
    sampled = run_chains(
        generator,
        task,
        problems,
        chains=config.samples_per_problem,
        length=config.turns,
        fmt=fmt,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=zlib.crc32(f"revision_samples:{config.seed}:{index}".encode()),
    )
    rows = [
        row
        for problem, chains in zip(problems, sampled)
        for row in attempt_rows(task, problem, chains, config.attempts_in_context)
    ]
    attempts = len(problems) * config.samples_per_problem * config.turns
    stats = {
        "problems": len(problems),
        "attempts": attempts,
        "attempts_without_steps": attempts - len(rows),
        "generated_tokens": generator.stats.generated_tokens - tokens_before,
        "seconds": round(time.monotonic() - start, 2),
    }
    return {"rows": rows, "stats": stats}


def summarize(shard_stats: list[dict], rows: list[dict], wall_seconds: float) -> dict:
    """Totals over shards plus the accuracy of the attempts per turn (the revision model's pass@1 there)."""
    per_turn, right_per_turn = Counter(r["turn"] for r in rows), Counter(r["turn"] for r in rows if r["answer_correct"])
    return {
        **shard_totals(shard_stats, wall_seconds),
        "rows": len(rows),
        "correct_fraction": round(sum(r["answer_correct"] for r in rows) / len(rows), 4) if rows else None,
        "correct_fraction_per_turn": {str(t): round(right_per_turn[t] / n, 4) for t, n in sorted(per_turn.items())},
    }


def run_revision_samples(config: RevisionSamplesConfig, engine: EngineConfig | None = None) -> dict | None:
    """Build every shard this process owns; on the main process merge and write the outputs (the stats)."""
    task = get_task(config.task)
    fmt = load_revision_format(config.policy)
    return run_data_stage(
        config,
        engine,
        lambda generator, index, problems: revision_samples_shard(generator, task, config, fmt, index, problems),
        lambda shard_stats, rows, wall_seconds: (
            summarize(shard_stats, rows, wall_seconds) | {"attempts_in_context": config.attempts_in_context}
        ),
        "attempts.jsonl",
    )


CONFIG_TYPES = (RevisionSamplesConfig, EngineConfig)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict | None:
    setup_logging()
    config, engine = parse_config(CONFIG_TYPES, argv)
    stats = run_revision_samples(config, engine)
    if stats is not None:
        logger.info("revision samples: %d rows, correct per turn %s", stats["rows"], stats["correct_fraction_per_turn"])
    return stats


if __name__ == "__main__":
    main()
