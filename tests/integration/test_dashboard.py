"""`make dashboard SWEEP=<dir>` serves the sweep's study: its HTTP API lists the study by name."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from slotsweep.errors import SlotsweepError
from slotsweep.runs.study_storage import open_storage
from slotsweep.sweeps.dashboard import sweep_storage

REPO = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed"  # `make setup`'s stamp: taken as up to date, the test installs nothing else


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _studies(port: int, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("storage", [None, "journal"])
def test_make_dashboard_serves_the_study(tmp_path: Path, storage: str | None) -> None:
    pytest.importorskip("optuna_dashboard", reason="pip install -e '.[dashboard]' (make dashboard does it)")
    sweep_dir = tmp_path / "sweeps" / "loss_weights" / "shapes"
    sweep_dir.mkdir(parents=True)
    study = optuna.create_study(study_name="loss_weights", storage=open_storage(storage, sweep_dir)[0])
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    port = _free_port()
    command = ["make", "-o", STAMP, "dashboard", f"SWEEP={sweep_dir}", f"PORT={port}"]
    server = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        studies = _studies(port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: make, and the dashboard it started
        output = server.communicate(timeout=30)[0].decode()
    (served,) = studies["study_summaries"]
    assert served["study_name"] == "loss_weights" and served["directions"] == ["minimize"], output
    assert "optuna-dashboard on " in output


def test_a_dir_without_one_study_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SlotsweepError, match=r"SWEEP=.* must hold one Optuna storage file, found no optuna"):
        sweep_storage(tmp_path)
    result = subprocess.run(["make", "-o", STAMP, "dashboard"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "error: SWEEP= is empty" in result.stderr
