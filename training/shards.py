"""Sharded, resumable, multi-process work for the data stages (labels, revisions).

The items (problems) are cut into fixed shards; process r of P takes shards r, r+P, ... Each shard is
computed from its own seed, so its result does not depend on which process runs it or on restarts,
and is written atomically as one JSON file; a rerun skips every shard whose file exists. The main
process merges the shard files in order once all processes are done.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ponder.training.configs import config_to_dict
from ponder.training.hub import push_dataset
from ponder.training.outputs import write_json_atomic, write_text_atomic
from ponder.training.problems import load_problems

SHARD_DIR = "shards"
logger = logging.getLogger(__name__)


@dataclass
class SampledDataConfig:
    """Keys every data stage shares: which policy samples which problems, how, and where rows go.

    Problems come from the task's generator (`problems_per_level` per level of `levels`, `split`), or,
    when `problems_file` is set, from the first `max_problems` rows of that dataset's `split` (a JSONL
    file, a saved dataset folder or a Hub dataset id; `problems_config` names a Hub config).
    """

    policy: str = "outputs/toy/policy"
    task: str = "arith"
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    problems_per_level: int = 32
    split: str = "train"
    seed: int = 0
    samples_per_problem: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 192
    shard_size: int = 16
    problems_file: str | None = None
    problems_config: str | None = None
    max_problems: int | None = None
    output_dir: str = "outputs/toy/data"
    backend: str = "auto"
    push_to_hub: bool = False
    hub_dataset_id: str | None = None

    def __post_init__(self):
        if self.samples_per_problem < 1:
            raise ValueError(f"samples_per_problem must be at least 1, got {self.samples_per_problem}")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub: set hub_dataset_id")

    def problems(self, task) -> list[dict]:
        """The configured problems: the dataset's rows, or the generator's level by level."""
        if self.problems_file:
            return load_problems(task, self.problems_file, self.split, self.max_problems, self.problems_config)
        return [
            p for level in self.levels for p in task.generate(self.problems_per_level, level, self.seed, self.split)
        ]


def shard_path(output_dir: str | os.PathLike, index: int) -> Path:
    return Path(output_dir) / SHARD_DIR / f"shard-{index:05d}.json"


def split_into_shards(items: Sequence, shard_size: int) -> list[Sequence]:
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [items[i : i + shard_size] for i in range(0, len(items), shard_size)]


def run_shards(
    items: Sequence,
    shard_size: int,
    output_dir: str | os.PathLike,
    compute: Callable[[int, Sequence], dict],
    process_index: int = 0,
    num_processes: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Compute this process's unfinished shards; `compute(index, items)` returns ``{"rows": [...], "stats": {...}}``.

    Returns the number of shards computed (not skipped) by this process.
    """
    shards = split_into_shards(items, shard_size)
    mine = [i for i in range(len(shards)) if i % num_processes == process_index]
    computed = 0
    for done, index in enumerate(mine):
        path = shard_path(output_dir, index)
        if not path.exists():
            write_json_atomic(path, compute(index, shards[index]))
            computed += 1
        if progress is not None:
            progress(done + 1, len(mine))
    return computed


def merge_shards(output_dir: str | os.PathLike, num_shards: int) -> tuple[list[dict], list[dict]]:
    """Rows and per-shard stats of all shards, in shard order; a missing shard is an error naming it."""
    rows, stats = [], []
    for index in range(num_shards):
        path = shard_path(output_dir, index)
        if not path.exists():
            raise FileNotFoundError(f"shard {index} is missing ({path}); rerun the stage to compute it")
        shard = json.loads(path.read_text())
        rows += shard["rows"]
        stats.append(shard["stats"])
    return rows, stats


def process_state():
    """accelerate's view of the launch; CPU threads are split between the processes of one machine."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1 and state.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    return state


def run_sharded_stage(
    state, items: Sequence, shard_size: int, output_dir: str | os.PathLike, compute: Callable[[int, Sequence], dict]
) -> tuple[list[dict], list[dict]] | None:
    """`run_shards` on every process with a progress bar, then the merged rows and stats on the main process."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"shards (process {state.process_index})", disable=not state.is_local_main_process)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    computed = run_shards(items, shard_size, output_dir, compute, state.process_index, state.num_processes, progress)
    bar.close()
    logger.info("process %d computed %d shards", state.process_index, computed)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return merge_shards(output_dir, len(split_into_shards(items, shard_size)))


def shard_totals(shard_stats: list[dict], wall_seconds: float) -> dict:
    """Every shard figure summed over shards, with the shards' own compute time as ``shard_seconds`` beside
    the stage's ``wall_seconds`` (they differ by the skipped shards of a resumed run and by parallelism)."""
    totals = {key: sum(s[key] for s in shard_stats) for key in shard_stats[0]} if shard_stats else {}
    shard_seconds = totals.pop("seconds", 0.0)
    return {**totals, "wall_seconds": round(wall_seconds, 1), "shard_seconds": round(shard_seconds, 1)}


def save_data_stage(config: SampledDataConfig, rows: list[dict], stats: dict, jsonl_name: str) -> dict:
    """Write a data stage's outputs: the rows as a `datasets` dataset in ``dataset/`` and an exact JSONL
    export, ``stats.json`` with the config, then the Hub push when configured. Returns the stats."""
    from datasets import Dataset

    output_dir = Path(config.output_dir)
    Dataset.from_list(rows).save_to_disk(str(output_dir / "dataset"))
    write_text_atomic(output_dir / jsonl_name, "".join(json.dumps(row) + "\n" for row in rows))
    stats["config"] = config_to_dict(config)
    write_json_atomic(output_dir / "stats.json", stats)
    if config.push_to_hub:
        push_dataset(config.output_dir, config.hub_dataset_id)
    return stats
