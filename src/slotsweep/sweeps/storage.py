"""Where an Optuna study lives: a SQLite file or a journal file in the sweep dir, or an RDB URL.

The sweeper opens the study's storage from its `hydra.sweeper.storage` setting; aggregation and the
dashboard find the files the sweeper wrote below a sweep dir and open them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = ["JOURNAL_FILE", "SQLITE_FILE", "STORAGE_FILES", "open_storage", "open_storage_file"]

SQLITE_FILE = "optuna.db"
JOURNAL_FILE = "optuna_journal.log"
STORAGE_FILES = (SQLITE_FILE, JOURNAL_FILE)  # the names open_storage gives the files it makes


def open_storage_file(path: Path) -> str | BaseStorage:
    """The storage behind one of STORAGE_FILES: a SQLite URL or a journal storage."""
    if path.name == SQLITE_FILE:
        return f"sqlite:///{path.resolve()}"
    # An append-only file with file locks: works on NFS/Lustre, where SQLite's locking does not.
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path.resolve())))


def open_storage(storage: str | None, sweep_dir: Path) -> tuple[str | BaseStorage, str]:
    """The storage to give optuna.create_study, and the argument that opens it in optuna-dashboard.

    Args:
        storage: `hydra.sweeper.storage`: null (SQLite file in the sweep dir), "journal" (journal
            file in the sweep dir), or an RDB URL used as it is.
        sweep_dir: the sweep's `hydra.sweep.dir`.
    """
    if storage is None:
        path = sweep_dir / SQLITE_FILE
        return open_storage_file(path), f"sqlite:///{path.resolve()}"
    if storage == "journal":
        path = sweep_dir / JOURNAL_FILE
        return open_storage_file(path), str(path.resolve())
    return storage, storage
