"""Where an Optuna study lives: a SQLite file or a journal file in the sweep dir, or an RDB URL.

The sweeper opens the study's storage from its `hydra.sweeper.storage` setting; aggregation and the
dashboard find the files the sweeper wrote below a sweep dir and open them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = [
    "JOURNAL_FILE",
    "SQLITE_FILE",
    "STORAGE_FILES",
    "dashboard_argument",
    "find_storage_files",
    "open_storage",
    "open_storage_file",
]

SQLITE_FILE = "optuna.db"
JOURNAL_FILE = "optuna_journal.log"
STORAGE_FILES = (SQLITE_FILE, JOURNAL_FILE)  # the names open_storage gives the files it makes


def find_storage_files(sweep_dir: Path) -> list[Path]:
    """Every STORAGE_FILES file below sweep_dir (the sweeper writes them into its sweep dir)."""
    return sorted(p for name in STORAGE_FILES for p in sweep_dir.rglob(name))


def dashboard_argument(path: Path) -> str:
    """The argument that opens one of STORAGE_FILES in optuna-dashboard: a SQLite URL or the journal path."""
    return f"sqlite:///{path.resolve()}" if path.name == SQLITE_FILE else str(path.resolve())


def open_storage_file(path: Path) -> str | BaseStorage:
    """The storage behind one of STORAGE_FILES: a SQLite URL or a journal storage."""
    if path.name == SQLITE_FILE:
        _create_sqlite_schema(path)
        return f"sqlite:///{path.resolve()}"
    # An append-only file with file locks: works on NFS/Lustre, where SQLite's locking does not.
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path.resolve())))


def _create_sqlite_schema(path: Path) -> None:
    """Give a new SQLite study file its whole schema before anyone can see it.

    Optuna creates its tables when a storage is first opened; two processes opening a new file at
    once (the sweeper, and aggregate.py or the dashboard polling the sweep dir) both create them and
    one fails with "table ... already exists". Built under a private name and linked into place, the
    file is either absent or complete.
    """
    if path.exists():
        return
    from optuna.storages import RDBStorage

    private = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        RDBStorage(f"sqlite:///{private.resolve()}").engine.dispose()
        os.link(private, path)  # atomic; fails if another process linked its file first
    except FileExistsError:
        pass
    finally:
        private.unlink(missing_ok=True)


def open_storage(storage: str | None, sweep_dir: Path) -> tuple[str | BaseStorage, str]:
    """The storage to give optuna.create_study, and the argument that opens it in optuna-dashboard.

    Args:
        storage: `hydra.sweeper.storage`: null (SQLite file in the sweep dir), "journal" (journal
            file in the sweep dir), or an RDB URL used as it is.
        sweep_dir: the sweep's `hydra.sweep.dir`.
    """
    if storage in (None, "journal"):
        path = sweep_dir / (SQLITE_FILE if storage is None else JOURNAL_FILE)
        return open_storage_file(path), dashboard_argument(path)
    return storage, storage
