"""Label stage: Monte-Carlo-rollout PRM labels from the policy's own samples.

    ponder label --config recipes/toy/label.yaml
    accelerate launch --config_file accelerate_configs/cpu.yaml -m ponder.training.labels \\
        --config recipes/toy/label.yaml

Problems are cut into shards; under `accelerate launch` each process labels its own shards (several
jobs split them with `shard_index`/`num_shards`: `ponder.training.core.shards`), and the main process
merges them into a `datasets` dataset in the stepwise format (docs/design.md, *Data formats*), saved to disk, with an
exact JSONL export (`labels.jsonl`) and `stats.json`. Finished shards are kept, so a rerun after a
crash resumes and ends with the same dataset as an uninterrupted run; a rerun with other settings or
inputs is refused (`ponder.training.core.output_folder.OutputFolder`).
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field

from ponder.inference.engine import EngineConfig
from ponder.inference.tasks import get_task
from ponder.training.core.configs import parse_config
from ponder.training.core.data_stage import SampledDataConfig, run_data_stage
from ponder.training.core.logs import setup_logging
from ponder.training.core.shards import shard_totals
from ponder.training.labelling.quality import agreement
from ponder.training.labelling.rollouts import MODES, RolloutLabeller, stepwise_row

logger = logging.getLogger(__name__)
AFTER_FIRST_ZERO = ("keep", "drop")


@dataclass
class LabelConfig(SampledDataConfig):
    """What to label and how. `policy` is a checkpoint folder; problems come from the task's generator.

    `rollout_temperature` samples the rollouts (default: `temperature`, which samples the solutions).
    """

    rollouts: int = field(
        default=8,
        metadata={
            "help": "rollouts from each step prefix; a step's value is the share of them that reach the right answer"
        },
    )
    rollout_temperature: float | None = field(
        default=None, metadata={"help": "sampling temperature of the rollouts (unset: temperature)"}
    )
    mode: str = field(
        default="per_step",
        metadata={
            "help": "per_step (roll out from every step prefix), outcome (no rollouts: every step takes its sample's "
            "outcome, a one-rollout estimate) or binary_search (bisect wrong samples for their first zero-value step; "
            "hard labels, fewer rollouts)"
        },
    )
    after_first_zero: str = field(
        default="keep",
        metadata={"help": "keep (every step stays labelled) or drop (a row ends at its first zero-value step)"},
    )
    filter_uniform_problems: bool = field(
        default=False, metadata={"help": "drop problems whose samples are all right or all wrong before labelling"}
    )
    output_dir: str = field(
        default="outputs/label",
        metadata={"help": "folder for the labels dataset, labels.jsonl, stats.json and the shards"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode: use one of {MODES}, got {self.mode!r}")
        if self.after_first_zero not in AFTER_FIRST_ZERO:
            raise ValueError(f"after_first_zero: use one of {AFTER_FIRST_ZERO}, got {self.after_first_zero!r}")
        if self.rollouts < 1:
            raise ValueError(f"rollouts must be at least 1, got {self.rollouts}")
        if self.rollout_temperature is None:
            self.rollout_temperature = self.temperature


def label_shard(labeller: RolloutLabeller, config: LabelConfig, index: int, problems: list[dict]) -> dict:
    """Sample, optionally filter, and label one shard; deterministic given the config and shard index."""
    seed = zlib.crc32(f"labels:{config.seed}:{index}".encode())
    start = time.monotonic()
    before = (labeller.counter.rollouts, labeller.counter.generated_tokens)
    per_problem = labeller.sample(problems, config.samples_per_problem, seed)
    filtered = 0
    if config.filter_uniform_problems:
        kept = [s for s in per_problem if len({x.correct for x in s}) == 2]
        filtered = len(per_problem) - len(kept)
        per_problem = kept
    samples = [s for group in per_problem for s in group]
    if config.mode == "per_step":
        labeller.per_step(samples, seed + 1)
    elif config.mode == "outcome":
        labeller.outcome(samples)
    else:
        labeller.binary_search(samples, seed + 1)
    rows = [r for r in (stepwise_row(s, config.after_first_zero) for s in samples) if r is not None]
    stats = {
        "problems": len(problems),
        "problems_filtered": filtered,
        "samples": len(samples),
        "samples_without_steps": len(samples) - len(rows),
        "correct_samples": sum(s.correct for s in samples),
        "rollouts": labeller.counter.rollouts - before[0],
        "generated_tokens": labeller.counter.generated_tokens - before[1],
        "seconds": round(time.monotonic() - start, 2),
    }
    return {"rows": rows, "stats": stats}


def summarize(config: LabelConfig, shard_stats: list[dict], rows: list[dict], task, wall_seconds: float) -> dict:
    steps = sum(len(r["hard"]) for r in rows)
    stats = {
        "mode": config.mode,
        "rollouts_per_prefix": 1 if config.mode == "outcome" else config.rollouts,  # outcome: the sample's own rest
        "rollout_temperature": config.rollout_temperature,
        "samples_per_problem": config.samples_per_problem,
        **shard_totals(shard_stats, wall_seconds),
        "rows": len(rows),
        "steps": steps,
        "positive_step_fraction": round(sum(sum(r["hard"]) for r in rows) / steps, 4) if steps else None,
    }
    if hasattr(task, "first_wrong_step"):
        stats["oracle_agreement"] = agreement(task, rows)
    return stats


def run_labels(config: LabelConfig, engine: EngineConfig | None = None) -> dict | None:
    """Label every shard this process owns; on the main process merge and write the outputs (the stats)."""
    task = get_task(config.task)

    def labeller(generator) -> RolloutLabeller:
        return RolloutLabeller(
            generator,
            task,
            config.rollouts,
            config.temperature,
            config.top_p,
            config.max_new_tokens,
            rollout_temperature=config.rollout_temperature,
        )

    return run_data_stage(
        config,
        engine,
        lambda labeller, index, problems: label_shard(labeller, config, index, problems),
        lambda shard_stats, rows, wall_seconds: summarize(config, shard_stats, rows, task, wall_seconds),
        "labels.jsonl",
        sampler=labeller,
    )


CONFIG_TYPES = (LabelConfig, EngineConfig)  # what the stage's recipe and flags fill


def main(argv: list[str] | None = None) -> dict | None:
    setup_logging()
    config, engine = parse_config(CONFIG_TYPES, argv)
    stats = run_labels(config, engine)
    if stats is not None:
        logger.info("labels: %d rows, %d rollouts, stats in %s", stats["rows"], stats["rollouts"], config.output_dir)
    return stats


if __name__ == "__main__":
    main()
