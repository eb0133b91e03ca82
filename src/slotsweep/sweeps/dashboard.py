"""`make dashboard SWEEP=<sweep dir>`: optuna-dashboard on the study a sweep wrote.

The sweeper keeps its study in the sweep dir (slotsweep.runs.study_storage: a SQLite file, or a journal
file on shared disks); this finds that file and starts optuna-dashboard on it, after installing
slotsweep's `dashboard` extra when optuna-dashboard is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from slotsweep.cli import exit_with_error
from slotsweep.errors import SlotsweepError
from slotsweep.runs.study_storage import STORAGE_FILES, dashboard_argument, find_storage_files

__all__ = ["main", "sweep_storage"]


def sweep_storage(sweep_dir: Path) -> str:
    """optuna-dashboard's storage argument for the one study file below `sweep_dir`."""
    if not sweep_dir.is_dir():
        raise SlotsweepError(f"SWEEP={sweep_dir} is not a directory: give a sweep's hydra.sweep.dir")
    files = find_storage_files(sweep_dir)
    if len(files) != 1:
        found = ", ".join(str(f) for f in files) if files else f"no {' or '.join(STORAGE_FILES)}"
        raise SlotsweepError(
            f"SWEEP={sweep_dir} must hold one Optuna storage file, found {found}: "
            "give the dir of one sweep (the sweeper prints it), e.g. SWEEP=runs/sweeps/<name>/<exp_name>"
        )
    return dashboard_argument(files[0])


def _install_dashboard_extra() -> None:
    """pip-install the requirements of slotsweep's `dashboard` extra, as pyproject.toml declares them."""
    extra = [
        r.split(";")[0].strip()
        for r in importlib.metadata.requires("slotsweep") or []
        if 'extra == "dashboard"' in r
    ]
    print(f"optuna-dashboard is not installed: pip install {' '.join(extra)}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *extra], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep's dir (hydra.sweep.dir)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        storage = sweep_storage(args.sweep_dir)
    except SlotsweepError as error:
        exit_with_error(error)
    if importlib.util.find_spec("optuna_dashboard") is None:
        _install_dashboard_extra()
    command = Path(sys.executable).with_name("optuna-dashboard")  # the console script of this venv
    print(f"optuna-dashboard on {storage}: http://{args.host}:{args.port}/", flush=True)
    os.execv(command, [str(command), storage, "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
