"""A stage's guarded output folder: one writer at a time, and finished work reused only by the run that
would compute it again (its fingerprint, `ponder.training.core.fingerprint`; the lock,
`ponder.training.core.locks`)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ponder.training.core.fingerprint import FINGERPRINT_FILE, fingerprint_mismatch, read_fingerprint
from ponder.training.core.locks import FolderLock, lock_name
from ponder.training.core.outputs import write_json_once
from ponder.training.core.shards import JobSplitConfig

OVERWRITE_HELP = (
    "remove the outputs in output_dir that other settings or inputs made (or that have no fingerprint.json) and "
    "start afresh; outputs of these settings are kept and resumed"
)
logger = logging.getLogger(__name__)


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
