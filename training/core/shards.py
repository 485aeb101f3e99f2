"""Sharded, resumable, multi-process, multi-job work for the data stages (labels, revisions) and evaluate.

The items (problems) are cut into fixed shards. A `Worker` is one process of one job: process r of
P in job i of n (`JobSplitConfig`; every job launched with the same P) computes shard j when
j mod n·P = i·P + r. Each shard is computed from its own seed, so its result does not depend on
which worker runs it or on restarts, and is written atomically as one JSON file; a rerun skips every
shard whose file exists. A single job's main process merges the shard files in order once all its
processes are done; the jobs of a split run only compute, and a run without a split (``num_shards:
1``) then computes whatever is missing and merges.

`run_sharded_stage` computes inside an `OutputFolder` (`ponder.training.core.output_folder`): one run
writes it at a time, and finished shards are reused only by a run with the same fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ponder.training.core.outputs import write_json_atomic

if TYPE_CHECKING:
    from ponder.training.core.output_folder import OutputFolder

SHARD_DIR = "shards"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """One process of one job: it computes shard j when j mod `count` equals `index`."""

    index: int = 0
    count: int = 1

    def shards(self, total: int) -> list[int]:
        """This worker's shards among `total`."""
        return list(range(self.index, total, self.count))


@dataclass
class JobSplitConfig:
    """Which shards this job computes when several jobs (a Slurm array, several nodes) split one stage.

    Job `shard_index` of `num_shards` computes its shares of the shards (module docstring) and stops;
    once all jobs are done, one run without a split merges (and computes any shard still missing).
    """

    shard_index: int = field(
        default=0, metadata={"help": "this job's index, 0 .. num_shards - 1, when several jobs split the stage"}
    )
    num_shards: int = field(
        default=1,
        metadata={
            "help": "jobs that split the stage (each launched with the same process count); with more than "
            "1 a job only computes its shards, and a later run with 1 merges them"
        },
    )

    def __post_init__(self):
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must lie in 0..num_shards - 1, got {self.shard_index} of {self.num_shards}")

    def worker(self, state) -> Worker:
        """This process of this job, from accelerate's `state`."""
        return Worker(
            self.shard_index * state.num_processes + state.process_index, self.num_shards * state.num_processes
        )


def shard_path(directory: str | os.PathLike, index: int) -> Path:
    return Path(directory) / f"shard-{index:05d}.json"


def split_into_shards(items: Sequence, shard_size: int) -> list[Sequence]:
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [items[i : i + shard_size] for i in range(0, len(items), shard_size)]


def run_shards(
    items: Sequence,
    shard_size: int,
    directory: str | os.PathLike,
    compute: Callable[[int, Sequence], dict],
    worker: Worker = Worker(),
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Compute `worker`'s unfinished shards into `directory`; `compute(index, items)` returns
    ``{"rows": [...], "stats": {...}}``. Returns the number of shards computed (not skipped)."""
    shards = split_into_shards(items, shard_size)
    mine = worker.shards(len(shards))
    computed = 0
    for done, index in enumerate(mine):
        path = shard_path(directory, index)
        if not path.exists():
            write_json_atomic(path, compute(index, shards[index]))
            computed += 1
        if progress is not None:
            progress(done + 1, len(mine))
    return computed


def missing_note(directory: str | os.PathLike, total: int) -> str | None:
    """Which of the `total` shards have no file in `directory`, as a phrase; None when none."""
    missing = [index for index in range(total) if not shard_path(directory, index).exists()]
    return f"shard(s) {', '.join(map(str, missing))} of {total} in {directory}" if missing else None


def merge_shards(directory: str | os.PathLike, total: int) -> tuple[list[dict], list[dict]]:
    """Rows and per-shard stats of all `total` shards, in shard order; missing shards are an error naming them."""
    note = missing_note(directory, total)
    if note:
        raise FileNotFoundError(f"missing {note}; run their jobs, or rerun without shard_index/num_shards")
    rows, stats = [], []
    for index in range(total):
        shard = json.loads(shard_path(directory, index).read_text())
        rows += shard["rows"]
        stats.append(shard["stats"])
    return rows, stats


def report_split_job(job: JobSplitConfig, missing: list[str]) -> None:
    """Log, in a job of a split run, what is left to the other jobs (`missing`: `missing_note`s) and the merge."""
    left = "missing " + "; ".join(missing) if missing else "every shard is done"
    logger.info(
        "job %d of %d computed its shards (%s); once every job has finished, rerun without "
        "shard_index/num_shards to merge",
        job.shard_index,
        job.num_shards,
        left,
    )


def process_state():
    """accelerate's view of the launch; CPU threads are split between the processes of one machine."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1 and state.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    return state


def run_sharded_stage(
    folder: OutputFolder,
    items: Sequence,
    shard_size: int,
    compute: Callable[[int, Sequence], dict],
    load: Callable[[], object],
) -> tuple[list[dict], list[dict]] | None:
    """`run_shards` into `folder` on every process with a progress bar, then the merged rows and stats on the
    main process (None elsewhere, and in a job of a split run). A process with shards left calls `load` (its
    model) first, before `folder` records the fingerprint."""
    from tqdm.auto import tqdm

    state, job = folder.state, folder.job
    worker = job.worker(state)
    directory = folder.path / SHARD_DIR
    total = len(split_into_shards(items, shard_size))
    if not all(shard_path(directory, index).exists() for index in worker.shards(total)):
        load()
    folder.loaded()
    bar = tqdm(desc=f"shards (worker {worker.index})", disable=not state.is_local_main_process)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    computed = run_shards(items, shard_size, directory, compute, worker, progress)
    bar.close()
    logger.info("worker %d of %d computed %d shards", worker.index, worker.count, computed)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    if job.num_shards > 1:
        report_split_job(job, [note] if (note := missing_note(directory, total)) else [])
        return None
    return merge_shards(directory, total)


def shard_totals(shard_stats: list[dict], wall_seconds: float) -> dict:
    """Every shard figure summed over shards, with the shards' own compute time as ``shard_seconds`` beside
    the stage's ``wall_seconds`` (they differ by the skipped shards of a resumed run and by parallelism)."""
    totals = {key: sum(s[key] for s in shard_stats) for key in shard_stats[0]} if shard_stats else {}
    shard_seconds = totals.pop("seconds", 0.0)
    return {**totals, "wall_seconds": round(wall_seconds, 1), "shard_seconds": round(shard_seconds, 1)}
