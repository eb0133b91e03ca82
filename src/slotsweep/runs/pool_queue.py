"""The files through which a sweeper hands trials to a running trial pool (training/pool.py).

A pool is one process that trains the trials of one input stream as heads over one encoder
forward. The sweeper does not talk to it: it drops a *ticket* (the head's composed, resolved
config) into the pool dir, and the pool takes waiting tickets at its join points. Every hand-over
is one rename, atomic on every POSIX file system (NFS and Lustre included), so no lock is needed:

    <pool dir>/pool.json               {"size": the heads it trains at once at most}
    <pool dir>/queue/<ticket>.yaml     waiting (the sweeper renames it in from a temporary name)
    <pool dir>/claimed/<ticket>.yaml   taken by the pool (renamed from queue/: the pool won)
    <pool dir>/withdrawn/<ticket>.yaml taken back by the sweeper (renamed from queue/: it won)
    <pool dir>/heads/<ticket>.json     accepted: {"start_step", "run_dir"}, written by the pool,
                                       and {"status", "objective", "error"} once the head ended
    <pool dir>/closed/                 queue/ renamed when the pool ends: a later ticket fails to
                                       arrive (the sweeper starts another pool), one that arrived
                                       just before is still taken (waiting() lists closed/ too)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["PoolQueue"]


class PoolQueue:
    """The ticket files of the pool at `directory` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.queue, self.closed = self.directory / "queue", self.directory / "closed"
        self.claimed, self.withdrawn = self.directory / "claimed", self.directory / "withdrawn"
        self.heads = self.directory / "heads"

    def create(self, size: int) -> None:
        """Make a new pool's folders and record its size, the heads it trains at once at most
        (before its job is submitted)."""
        for folder in (self.queue, self.claimed, self.withdrawn, self.heads):
            folder.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "pool.json").is_file():
            (self.directory / "pool.json").write_text(json.dumps({"size": size}))

    def size(self) -> int:
        return int(json.loads((self.directory / "pool.json").read_text())["size"])

    # the sweeper's side
    def submit(self, ticket: str, cfg: DictConfig) -> bool:
        """Hand a head's config to the pool; False when the pool has closed (start another)."""
        temporary = self.directory / f".{ticket}.yaml.{os.getpid()}"
        temporary.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        try:
            os.rename(temporary, self.queue / f"{ticket}.yaml")
        except FileNotFoundError:  # queue/ was renamed to closed/: the pool is ending
            temporary.unlink()
            return False
        return True

    def withdraw(self, ticket: str) -> bool:
        """Take a waiting ticket back; False when the pool took it already (or never had it)."""
        for folder in (self.queue, self.closed):
            try:
                os.rename(folder / f"{ticket}.yaml", self.withdrawn / f"{ticket}.yaml")
                return True
            except FileNotFoundError:
                continue
        return False

    def accepted(self, ticket: str) -> dict[str, Any] | None:
        """{"start_step", "run_dir"} once the pool has made the ticket a head, else None; with
        {"status", "objective", "error"} once that head has ended."""
        try:
            return json.loads((self.heads / f"{ticket}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not yet, or being written
            return None

    # the pool's side
    def waiting(self) -> list[str]:
        """Tickets not yet heads, oldest name first: in queue/ (and closed/, once closed), and those
        a killed run of the pool claimed but had not accepted."""
        names = [p.stem for folder in (self.queue, self.closed) for p in folder.glob("*.yaml")]
        return sorted([*names, *self._unaccepted_claims()])

    def claim(self, ticket: str) -> DictConfig | None:
        """Take a waiting ticket (None when the sweeper withdrew it first)."""
        for folder in (self.queue, self.closed):
            try:
                os.rename(folder / f"{ticket}.yaml", self.claimed / f"{ticket}.yaml")
                break
            except FileNotFoundError:
                continue
        else:  # withdrawn, or claimed already by this pool's killed run (unaccepted_claims)
            if not (self.claimed / f"{ticket}.yaml").is_file():
                return None
        return self.config(ticket)

    def config(self, ticket: str) -> DictConfig:
        """A claimed ticket's config."""
        cfg = OmegaConf.load(self.claimed / f"{ticket}.yaml")
        assert isinstance(cfg, DictConfig)
        return cfg

    def accept(self, ticket: str, start_step: int, run_dir: Path | None) -> None:
        """Record that a claimed ticket trains as a head from stream position `start_step` (its run
        dir: None when its config did not even locate one)."""
        self._write_record(
            ticket, {"start_step": start_step, "run_dir": None if run_dir is None else str(run_dir)}
        )

    def finish(self, ticket: str, status: str, objective: list[float] | None, error: str | None) -> None:
        """Record how an accepted head ended (completed, pruned or failed): the sweeper's outcome."""
        record = self.accepted(ticket) or {}
        self._write_record(ticket, {**record, "status": status, "objective": objective, "error": error})

    def _write_record(self, ticket: str, record: dict[str, Any]) -> None:
        temporary = self.heads / f".{ticket}.json"
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.heads / f"{ticket}.json")

    def _unaccepted_claims(self) -> list[str]:
        """Claimed tickets without a head record (a pool killed between claim and accept)."""
        return sorted(p.stem for p in self.claimed.glob("*.yaml") if self.accepted(p.stem) is None)

    def accepted_tickets(self) -> dict[str, dict[str, Any]]:
        """{ticket: its head record} of every ticket the pool accepted."""
        records = sorted(
            p for p in self.heads.glob("*.json") if not p.name.startswith(".")
        )  # not a temporary
        return {p.stem: json.loads(p.read_text()) for p in records}

    def close(self) -> None:
        """No ticket arrives from now on (a ticket that arrived just before is in waiting())."""
        if self.queue.is_dir():
            os.rename(self.queue, self.closed)

    def is_closed(self) -> bool:
        return self.closed.is_dir()
