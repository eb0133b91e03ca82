"""The sweep's SQLite study file: complete from the moment it exists, whoever opens it first."""

import multiprocessing
import sqlite3
from pathlib import Path

import optuna

from slotsweep.runs.study_storage import SQLITE_FILE, open_storage, open_storage_file


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_new_study_file_appears_with_its_whole_schema_and_nothing_beside_it(tmp_path: Path):
    storage, dashboard = open_storage(None, tmp_path)

    schema = {"studies", "trials", "trial_intermediate_values", "version_info"}
    assert schema <= _tables(tmp_path / SQLITE_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SQLITE_FILE]
    assert dashboard == storage == f"sqlite:///{(tmp_path / SQLITE_FILE).resolve()}"


def test_an_existing_study_file_is_opened_as_it_is(tmp_path: Path):
    study = optuna.create_study(study_name="s", storage=open_storage_file(tmp_path / SQLITE_FILE))
    study.enqueue_trial({"x": 1.0})

    again = optuna.load_study(study_name="s", storage=open_storage_file(tmp_path / SQLITE_FILE))

    assert len(again.trials) == 1


def _open_and_create(path: str) -> str:
    storage = open_storage_file(Path(path))
    optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
    return "ok"


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path):
    # Without the private build and link, some of these die with "table ... already exists".
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.map(_open_and_create, [str(tmp_path / SQLITE_FILE)] * 8)

    assert outcomes == ["ok"] * 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [SQLITE_FILE]
