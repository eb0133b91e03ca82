"""A sweep's trial pools (`hydra.sweeper.pool_size=K`): which pool job trains each seed's run.

A seed job of a trial is a *head* here, not a job of its own. Heads whose input stream is the same
(training/pool.py `stream_hash`: seed, data, encoder, trainer) go to one pool job, K at most at
once: the first head of a stream starts a pool job (the head's own Hydra job with `pool_dir` set,
so it runs under the same launcher settings, one GPU), the next ones are handed to that job as
tickets (runs/pool_queue.py) and join it at its next validation step; once a pool has K heads that
have not ended, another pool starts. A head that ends frees its place at once, and the next trial's
head fills it. A pool job that has ended (its queue closed) takes no ticket: the head starts a new
pool.

Everything the sweeper needs to follow a head again after its own kill is in the trial's stored
jobs (pool dir, ticket, the pool job's id): a relaunched sweeper re-registers them with `adopt`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from slotsweep.runs.pool_queue import PoolQueue
from slotsweep.sweeps.jobs import Jobs

__all__ = ["PoolHead", "Pools"]

log = logging.getLogger(__name__)


@dataclass
class PoolHead:
    """What a pool knows of one seed job it trains (sweeps/trial_jobs.SeedJob keeps the rest)."""

    ticket: str
    ended: Callable[[], bool]  # whether the sweeper has the head's outcome


@dataclass
class _Pool:
    directory: Path
    job_id: str
    stream: str
    heads: list[PoolHead] = field(default_factory=list)

    def open_places(self, size: int) -> int:
        return size - sum(not head.ended() for head in self.heads)


class Pools:
    """The pools of one sweep, under <sweep dir>/pools/<stream>-<n>.

    Args:
        directory: where the pool dirs go.
        size: hydra.sweeper.pool_size, the heads a pool trains at once at most.
        backend: the sweep's jobs (a pool job is one of them).
    """

    def __init__(self, directory: Path, size: int, backend: Jobs) -> None:
        self.directory = Path(directory)
        self.size = size
        self.backend = backend
        self.pools: dict[Path, _Pool] = {}

    def place(
        self, ticket: str, cfg: DictConfig, overrides: list[str], job_num: int, ended: Callable[[], bool]
    ) -> tuple[Path, str]:
        """Hand the head (its composed config `cfg`, its job's `overrides`) to an open pool of its
        stream, or start a pool job for it; (the pool's dir, the pool job's id)."""
        from slotsweep.training.pool import stream_hash  # torch: only a pooled sweep needs it

        stream = stream_hash(cfg)
        head = PoolHead(ticket, ended)
        for pool in self._open(stream):
            if pool.open_places(self.size) > 0 and PoolQueue(pool.directory).submit(ticket, cfg):
                pool.heads.append(head)
                log.info(f"{ticket} joins pool {pool.directory.name} (job {pool.job_id})")
                return pool.directory, pool.job_id
        n = sum(path.name.startswith(f"{stream}-") for path in self._existing())
        directory = self.directory / f"{stream}-{n:03d}"
        queue = PoolQueue(directory)
        queue.create(self.size)
        queue.submit(ticket, cfg)
        job_id = self.backend.submit([*overrides, f"pool_dir={directory}"], job_num)
        self.pools[directory] = _Pool(directory, job_id, stream, [head])
        log.info(f"{ticket} starts pool {directory.name} (job {job_id})")
        return directory, job_id

    def adopt(self, directory: Path, job_id: str, ticket: str, ended: Callable[[], bool]) -> None:
        """Follow a head a killed sweeper had placed (its pool goes on taking heads if it lives)."""
        pool = self.pools.get(directory)
        if pool is None:
            pool = self.pools[directory] = _Pool(directory, job_id, directory.name.rsplit("-", 1)[0])
        pool.heads.append(PoolHead(ticket, ended))

    def _open(self, stream: str) -> list[_Pool]:
        """This stream's pools whose job has not ended and whose queue takes tickets."""
        pools = [pool for pool in self.pools.values() if pool.stream == stream]
        states = self.backend.states([pool.job_id for pool in pools]) if pools else {}
        return [
            pool
            for pool in pools
            if states.get(pool.job_id) != "ended" and not PoolQueue(pool.directory).is_closed()
        ]

    def _existing(self) -> list[Path]:
        return list(self.directory.iterdir()) if self.directory.is_dir() else []
