"""What the data stages (label, revisions, revision_samples) share: their keys, their run and their outputs.

A data stage samples from a policy on problems (a task's generator, or a dataset's rows), checked
before any work (`ProblemCheck`). Every process computes its shards (`ponder.training.core.shards`)
inside the stage's guarded folder (`OutputFolder`), loading the policy only when a shard is left;
the main process then merges the rows and writes them as a `datasets` dataset, an exact JSONL
export and ``stats.json``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.inference.engine import EngineConfig
from ponder.inference.generation import make_generator
from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.training.core.configs import ConfigError, config_to_dict, require
from ponder.training.core.fingerprint import stage_fingerprint
from ponder.training.core.hub import push_dataset
from ponder.training.core.output_folder import OVERWRITE_HELP, OutputFolder
from ponder.training.core.outputs import write_json_atomic, write_text_atomic
from ponder.training.core.problems import ProblemCheck, load_problems, skip_bad_rows_field
from ponder.training.core.shards import SHARD_DIR, JobSplitConfig, process_state, run_sharded_stage

DATA_STAGE_OUTPUTS = (SHARD_DIR, "dataset", "stats.json", "*.jsonl")  # what a data stage writes in its folder


@dataclass
class SampledDataConfig(JobSplitConfig):
    """Keys every data stage shares: which policy samples which problems, how, and where rows go.

    Problems come from the task's generator (`problems_per_level` per level of `levels`, `split`), or,
    when `problems_file` is set, from that dataset's `split` (a JSONL file, a saved dataset folder or
    a Hub dataset id; `problems_config` names a Hub config): all rows, or `max_problems` of them drawn
    at random with `seed`, kept in file order.
    """

    policy: str | None = field(
        default=None, metadata={"help": "checkpoint folder or Hub id of the model that samples (required)"}
    )
    task: str | None = field(
        default=None,
        metadata={"help": f"task that prompts, splits steps and grades: {', '.join(TASK_NAMES)} (required)"},
    )
    levels: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        metadata={"help": "difficulty levels of generated problems (unused with problems_file)"},
    )
    problems_per_level: int = field(
        default=32, metadata={"help": "generated problems per level (unused with problems_file)"}
    )
    split: str = field(
        default="train",
        metadata={"help": "split the problems come from: the generator's ('train' or 'test') or problems_file's"},
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed of the generated problems, of the rows drawn from problems_file and of the sampling"},
    )
    samples_per_problem: int = field(default=4, metadata={"help": "solutions sampled per problem (at least 1)"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature of the solutions"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling probability of the solutions (1: off)"})
    max_new_tokens: int = field(default=192, metadata={"help": "token cap of one sampled solution"})
    shard_size: int = field(
        default=16,
        metadata={"help": "problems per shard: the unit of work that is saved, skipped on a rerun and handed out"},
    )
    problems_file: str | None = field(
        default=None,
        metadata={"help": "JSONL file, saved dataset folder or Hub dataset id of the problems (unset: the generator)"},
    )
    problems_config: str | None = field(default=None, metadata={"help": "config name of the Hub dataset problems_file"})
    max_problems: int | None = field(
        default=None, metadata={"help": "rows of problems_file drawn at random with seed (unset: every row)"}
    )
    output_dir: str = field(
        default="outputs/data", metadata={"help": "folder for the dataset, its JSONL export, stats.json and the shards"}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "upload the finished dataset folder to the Hub (needs hub_dataset_id)"}
    )
    hub_dataset_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repository the dataset is pushed to, e.g. 'user/arith-labels'"}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})
    skip_bad_rows: bool = skip_bad_rows_field()

    def __post_init__(self):
        super().__post_init__()
        require(self, "policy", "task")
        if self.problems_file is None and not hasattr(get_task(self.task), "generate"):
            raise ConfigError(f"problems_file: required, task {self.task!r} has no problem generator")
        if self.samples_per_problem < 1:
            raise ValueError(f"samples_per_problem must be at least 1, got {self.samples_per_problem}")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub: set hub_dataset_id")

    def problems(self, task, check: ProblemCheck | None = None) -> list[dict]:
        """The configured problems that pass `check`: the dataset's rows, or the generator's level by level."""
        check = check or ProblemCheck()
        if self.problems_file:
            source = (self.problems_file, self.split, self.max_problems, self.problems_config, self.seed)
            return load_problems(task, *source, check)
        generated = (
            p for level in self.levels for p in task.generate(self.problems_per_level, level, self.seed, self.split)
        )
        return check.keep(task, ((f"the {self.task} generator", p) for p in generated))

    def output_folder(self, state, engine) -> OutputFolder:
        """The stage's `OutputFolder`, fingerprinted by this config, `engine`, the policy and the problems file."""
        fingerprint = functools.partial(stage_fingerprint, self, engine, ("policy",), ("problems_file",))
        return OutputFolder(state, self, self.output_dir, fingerprint, DATA_STAGE_OUTPUTS, self.overwrite_output_dir)


def run_data_stage(
    config: SampledDataConfig,
    engine: EngineConfig | None,
    compute_shard: Callable[[Any, int, list[dict]], dict],
    summarize: Callable[[list[dict], list[dict], float], dict],
    jsonl_name: str,
    sampler: Callable[[Any], Any] = lambda generator: generator,
) -> dict | None:
    """Run a data stage on this process; on the main process, merge, summarize and save (returns the stats;
    None elsewhere and in a job of a split run).

    `compute_shard(sampler, index, problems)` returns one shard's ``{"rows": [...], "stats": {...}}``;
    the sampler is `sampler` applied to the policy's generator (loaded as `engine` says on this
    process's device, seeded per worker) and is made once a shard is left. `summarize(shard_stats,
    rows, wall_seconds)` gives the stats, written to ``stats.json`` with the problem check's counts.
    """
    engine = engine or EngineConfig()
    state = process_state()
    check = ProblemCheck.for_policy("policy", config.policy, config.max_new_tokens, config.skip_bad_rows)
    problems = config.problems(get_task(config.task), check)
    start = time.monotonic()
    seed = config.seed + config.worker(state).index

    @functools.cache
    def loaded_sampler():
        return sampler(make_generator(config.policy, engine, device=str(state.device), seed=seed))

    with config.output_folder(state, engine) as folder:
        merged = run_sharded_stage(
            folder,
            problems,
            config.shard_size,
            lambda index, shard: compute_shard(loaded_sampler(), index, list(shard)),
            load=loaded_sampler,
        )
        if merged is None:
            return None
        rows, shard_stats = merged
        stats = summarize(shard_stats, rows, time.monotonic() - start) | check.summary()
        return save_data_stage(config, engine, rows, stats, jsonl_name)


def save_data_stage(config: SampledDataConfig, engine, rows: list[dict], stats: dict, jsonl_name: str) -> dict:
    """Write a data stage's outputs: the rows as a `datasets` dataset in ``dataset/`` and an exact JSONL
    export, ``stats.json`` with the config and `engine` settings, then the Hub push when configured.
    Returns the stats."""
    from datasets import Dataset

    output_dir = Path(config.output_dir)
    Dataset.from_list(rows).save_to_disk(str(output_dir / "dataset"))
    write_text_atomic(output_dir / jsonl_name, "".join(json.dumps(row) + "\n" for row in rows))
    stats["config"] = config_to_dict(config, engine)
    write_json_atomic(output_dir / "stats.json", stats)
    if config.push_to_hub:
        push_dataset(config.output_dir, config.hub_dataset_id)
    return stats
