"""One writer per output folder: a lock file in the folder names the run that holds it.

A run without a split holds ``lock``; job i of a split run into n jobs holds ``lock-job-i-of-n``, so
the jobs of one split run write side by side, while a run without a split (the merge) refuses as
long as any lock is live, and so does a job while a run without a split or a split into another
number of jobs holds one. A lock names its holder (host, process id, command line, start time). One
left by a process no longer running on this host is taken over with a warning; one from another host
cannot be checked from here, so it refuses, saying how to remove it once that run is known to be gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from datetime import datetime
from pathlib import Path

from ponder.training.core.configs import redact_command
from ponder.training.core.outputs import write_json_once

LOCK_NAME = re.compile(r"lock(-job-\d+-of-(\d+))?")
logger = logging.getLogger(__name__)


class FolderLocked(RuntimeError):
    """Another run holds the output folder's lock."""


def lock_name(shard_index: int, num_shards: int) -> str:
    """The lock a run holds: ``lock``, or ``lock-job-i-of-n`` for job i of a split run into n jobs."""
    return "lock" if num_shards == 1 else f"lock-job-{shard_index}-of-{num_shards}"


def in_the_way(name: str, other: str) -> bool:
    """Whether a live holder of the file `other` keeps a run that takes lock `name` out of the folder: any
    other lock, except that the jobs of one split run write side by side."""
    ours, theirs = LOCK_NAME.fullmatch(name), LOCK_NAME.fullmatch(other)
    return theirs is not None and other != name and (ours[2] is None or ours[2] != theirs[2])


def running(pid: int) -> bool:
    """Whether process `pid` of this host runs; this process's own id counts as not running, since a lock
    naming it was left by an earlier process that had the same id (a restarted container)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class FolderLock:
    """The lock `name` of `folder`, taken by `acquire` and given back by `release`."""

    def __init__(self, folder: str | os.PathLike, name: str):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": " ".join(redact_command(sys.argv)),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }

    def acquire(self) -> None:
        """Take the lock, or raise `FolderLocked` naming the live run that holds it or one in the way."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while not write_json_once(self.path, self.holder):
            self._take_over(self.path)
        try:
            for other in sorted(self.folder.iterdir()):
                if in_the_way(self.path.name, other.name):
                    self._take_over(other)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Remove the lock file if it is still this run's."""
        if _read(self.path) == self.holder:
            self.path.unlink(missing_ok=True)

    def _take_over(self, path: Path) -> None:
        """Remove the lock at `path` left by a process that is gone; raise `FolderLocked` if its holder may run."""
        holder = _read(path)
        if holder is None:  # released meanwhile
            return
        here = socket.gethostname()
        described = (
            f"{path} is held by process {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')}: {holder.get('command')}"
        )
        if holder.get("host") != here or not isinstance(holder.get("pid"), int):
            raise FolderLocked(
                f"{described}; it may still run there (this is {here}). If it does not, delete {path} and rerun"
            )
        if running(holder["pid"]):
            raise FolderLocked(f"{described}; wait for it to finish, or write to another output_dir")
        logger.warning("taking over the lock %s: its process no longer runs (%s)", path, described)
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    """The holder a lock file names ({} when it cannot be read); None once it is gone."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
