"""Sharded, resumable, multi-process, multi-job work for the data stages (labels, revisions) and evaluate.

The items (problems) are cut into fixed shards. A `Worker` is one process of one job: process r of
P in job i of n (`JobSplitConfig`; every job launched with the same P) computes shard j when
j mod n·P = i·P + r. Each shard is computed from its own seed, so its result does not depend on
which worker runs it or on restarts, and is written atomically as one JSON file; a rerun skips every
shard whose file exists. A single job's main process merges the shard files in order once all its
processes are done; the jobs of a split run only compute, and a run without a split (``num_shards:
1``) then computes whatever is missing and merges.

An `OutputFolder` guards the folder: one run writes it at a time (`ponder.training.core.locks`), and
finished work is reused only by a run with the same fingerprint (`ponder.training.core.fingerprint`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ponder.inference.tasks import TASK_NAMES, get_task
from ponder.training.core.configs import ConfigError, config_to_dict, require
from ponder.training.core.fingerprint import FINGERPRINT_FILE, fingerprint_mismatch, read_fingerprint, stage_fingerprint
from ponder.training.core.hub import push_dataset
from ponder.training.core.locks import FolderLock, lock_name
from ponder.training.core.outputs import write_json_atomic, write_json_once, write_text_atomic
from ponder.training.core.problems import ProblemCheck, load_problems, skip_bad_rows_field

SHARD_DIR = "shards"
DATA_STAGE_OUTPUTS = (SHARD_DIR, "dataset", "stats.json", "*.jsonl")  # what a data stage writes in its folder
OVERWRITE_HELP = (
    "remove the outputs in output_dir that other settings or inputs made (or that have no fingerprint.json) and "
    "start afresh; outputs of these settings are kept and resumed"
)
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


class OutputFolder:
    """A stage's output folder: one run writes it at a time, and it reuses finished work only when the
    fingerprint that made it (``fingerprint.json``) is this run's.

    Entering, the main process takes the folder's lock (`FolderLock`; each job of a split run its own)
    and compares the recorded fingerprint with this run's (`fingerprint`, called once). Another
    fingerprint, or `outputs` (glob patterns) present without one, stop the run naming what differs;
    with `overwrite` those outputs are removed instead. Every process calls `loaded` once its inputs
    and checkpoints have loaded; only then is the fingerprint written, so a run that fails to start
    leaves the folder as it was. Leaving gives the lock back.
    """

    def __init__(
        self,
        state,
        job: JobSplitConfig,
        path: str | os.PathLike,
        fingerprint: Callable[[], dict],
        outputs: Sequence[str],
        overwrite: bool = False,
    ):
        self.state, self.job, self.path = state, job, Path(path)
        self.make_fingerprint, self.outputs, self.overwrite = fingerprint, outputs, overwrite
        self.lock = FolderLock(self.path, lock_name(job.shard_index, job.num_shards))

    @functools.cached_property
    def fingerprint(self) -> dict:
        return self.make_fingerprint()

    def __enter__(self) -> OutputFolder:
        if self.state.is_main_process:
            self.lock.acquire()
            try:
                self.check()
            except BaseException:
                self.lock.release()
                raise
        self.state.wait_for_everyone()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.state.is_main_process:
            self.lock.release()

    def check(self) -> None:
        """Refuse outputs another fingerprint made, or that have none; with `overwrite` remove them."""
        recorded = read_fingerprint(self.path)
        if recorded == self.fingerprint:
            return
        stale = self.present_outputs()
        if recorded is None and not stale:
            return
        if not self.overwrite:
            raise fingerprint_mismatch(self.path, recorded, self.fingerprint)
        if recorded is not None:
            stale.append(self.path / FINGERPRINT_FILE)
        logger.warning("overwrite_output_dir: removing %s", ", ".join(map(str, stale)))
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def present_outputs(self) -> list[Path]:
        """The outputs in the folder (files, and folders that are not empty)."""
        found = [path for pattern in self.outputs for path in sorted(self.path.glob(pattern))]
        return [path for path in found if not path.is_dir() or any(path.iterdir())]

    def loaded(self) -> None:
        """Once every process has loaded its inputs and checkpoints, record the fingerprint: the first job of a
        split run to get here writes it, the others (and a rerun) check it."""
        self.state.wait_for_everyone()
        if self.state.is_main_process and not write_json_once(self.path / FINGERPRINT_FILE, self.fingerprint):
            recorded = read_fingerprint(self.path)
            if recorded != self.fingerprint:
                raise fingerprint_mismatch(self.path, recorded, self.fingerprint)


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
