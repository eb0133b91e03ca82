"""Running the real entry points (src/train.py, src/eval.py) in a subprocess, paths in tmp dirs."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# asha on slot_counts with two trials of two seeds: rung 0 at step 2 on seed 0, the last rung at
# step 4 (trainer.max_steps=4) on seeds 0 and 1; the asha tests of the real task, local and SLURM
ASHA_TWO_RUNGS = (
    "+sweep=slot_counts",
    "hydra/sweeper/pruner=asha",
    "hydra.sweeper.pruner.min_steps=2",
    "hydra.sweeper.pruner.reduction_factor=2",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.seeds=[0,1]",
)


@dataclass
class CLI:
    """`python src/<script> ...` from the repo root, with SLOTSWEEP_RUNS_DIR/DATA_DIR set.

    train_args: the overrides that shrink a training run (trainer=debug, tiny data).
    """

    runs_dir: Path
    data_dir: Path
    train_args: list[str]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
        return {**env, "SLOTSWEEP_RUNS_DIR": str(self.runs_dir), "SLOTSWEEP_DATA_DIR": str(self.data_dir)}

    def command(self, script: str, *args: str) -> list[str]:
        extra = self.train_args if script == "train.py" else []
        return [sys.executable, str(REPO / "src" / script), *extra, *args]

    def run(self, script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run to the end; `env` replaces self.env (e.g. self.env plus a debug variable)."""
        return subprocess.run(
            self.command(script, *args), cwd=REPO, env=env or self.env, capture_output=True, text=True
        )

    def start(self, script: str, *args: str, log: Path) -> subprocess.Popen:
        """Start in the background, stdout and stderr into `log`."""
        with log.open("w") as out:
            return subprocess.Popen(
                self.command(script, *args), cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )


@pytest.fixture
def cli(data_dir: Path, tmp_path: Path, debug_overrides: list[str]) -> CLI:
    return CLI(runs_dir=tmp_path / "runs", data_dir=data_dir, train_args=debug_overrides)


@pytest.fixture(scope="module")
def module_cli(data_dir: Path, tmp_path_factory: pytest.TempPathFactory, debug_overrides: list[str]) -> CLI:
    """A CLI whose runs dir lives for one test module (e.g. one training shared by its tests)."""
    return CLI(runs_dir=tmp_path_factory.mktemp("runs"), data_dir=data_dir, train_args=debug_overrides)
