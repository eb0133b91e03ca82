"""One trainer per run dir: an exclusive fcntl lock on `<run_dir>/.lock`, held while training.

A twin job (a requeue that overlaps its predecessor, a sweep launched twice) refuses at once
rather than waiting: two writers would interleave checkpoints and results.json. The kernel drops
the lock when its holder dies, however it dies (SIGKILL included), so a stale lock never blocks.
"""

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from slotsweep.errors import SlotsweepError

__all__ = ["LOCK_FILE", "RunDirLock", "claim_run_dir"]

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class RunDirLock:
    """`with RunDirLock(run_dir):` holds the dir's lock, or raises SlotsweepError naming the holder.

    Args:
        directory: the run dir; it must exist (the lock lives inside it, so it moves with the dir).
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SlotsweepError(
                f"run dir {self.path.parent} is being trained by {holder}: wait for it to end "
                "(it resumes from there), or pass another run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def claim_run_dir(directory: Path, set_aside: bool, rank: int) -> RunDirLock | None:
    """Make `directory` and lock it; with `set_aside`, first move its old contents to
    `<name>.replaced<n>` (under the old dir's lock, so a running twin is never moved away).

    Only rank 0 locks: under DDP the other ranks run the same task in the same dir.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if rank != 0:
        return None
    lock = RunDirLock(directory)
    lock.acquire()
    if set_aside:
        n = 1
        while (kept := directory.with_name(f"{directory.name}.replaced{n}")).exists():
            n += 1
        directory.rename(kept)  # the held lock moves with it; nothing can start in `kept`
        lock.release()
        log.info(f"force=true: previous run moved to {kept}")
        return claim_run_dir(directory, set_aside=False, rank=rank)
    return lock
