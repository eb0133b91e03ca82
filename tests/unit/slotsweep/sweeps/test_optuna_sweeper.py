"""Settings checks and storage choice of the Optuna sweeper (its loop: tests/integration/test_sweeps.py)."""

from pathlib import Path

import optuna
import pytest

from slotsweep.errors import SlotsweepError
from slotsweep.runs.study_storage import open_storage
from slotsweep.sweeps.optuna_sweeper import OptunaSweep
from slotsweep.sweeps.settings import OptunaSweeperConf


def test_storage_default_sqlite_journal_or_url(tmp_path: Path):
    storage, shown = open_storage(None, tmp_path)
    assert storage == shown == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    storage, shown = open_storage("journal", tmp_path)
    assert isinstance(storage, optuna.storages.JournalStorage)
    assert shown == str(tmp_path.resolve() / "optuna_journal.log")
    assert open_storage("postgresql://db/optuna", tmp_path) == ("postgresql://db/optuna",) * 2


def _settings(**changes):
    settings = dict(
        sampler=None,
        direction="maximize",
        n_trials=4,
        n_jobs=2,
        seeds=[0, 1],
        max_failure_rate=0.25,
        study_name=None,
        storage=None,
        params=None,
    )
    return {**settings, **changes}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"direction": "up"}, "hydra.sweeper.direction=up"),
        ({"direction": []}, r"hydra.sweeper.direction=\[\]"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0"),
        ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate=1.5"),
        ({"seeds": [0, 0]}, r"hydra.sweeper.seeds=\[0, 0\]"),
        ({"seeds": []}, r"hydra.sweeper.seeds=\[\]"),
    ],
)
def test_bad_settings_name_their_key(changes, key):
    with pytest.raises(SlotsweepError, match=key):
        OptunaSweep(OptunaSweeperConf(**_settings(**changes)))
