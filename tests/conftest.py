"""Shared fixtures: the real conf/train.yaml, composed and shrunk for a 2-core CPU."""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import slotsweep.config  # noqa: F401  (registers the schema conf/train.yaml extends)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FIXTURES = REPO.parent / "shared" / "reference" / "fixtures"

# A tiny shapes dataset: a few clips, cached once per test session.
TINY_DATA = [
    "dataset.n_train_clips=8",
    "dataset.n_val_clips=4",
    "dataset.n_frames=4",
    "dataset.train_clip_frames=3",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for the session, so generated datasets are made once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose_train(data_dir: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_train(*overrides) -> conf/train.yaml with trainer=debug, tiny data and tmp paths."""

    def _compose(*overrides: str, debug: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        base = ["trainer=debug", *TINY_DATA] if debug else []
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=False)
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.runs_dir = str(tmp_path / "runs")
            cfg.trainer.enable_progress_bar = False
        return cfg

    return _compose


class _Payload:
    """Pickles as a call to os.mkdir(marker): unpickling it with weights_only=False runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


@dataclass(frozen=True)
class PickleBomb:
    """A checkpoint-like file whose unpickling would create `marker` (so a test sees whether it ran)."""

    path: Path
    marker: Path


@pytest.fixture
def pickle_bomb(tmp_path: Path) -> PickleBomb:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "bomb.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    return PickleBomb(path=path, marker=marker)


@pytest.fixture(scope="session")
def reference() -> Callable[[str], Any]:
    """reference(file) -> the original VideoSAUR's outputs (shared/reference/fixtures), or a skip."""
    loaded: dict[str, Any] = {}

    def _load(name: str) -> Any:
        path = FIXTURES / name
        if not path.is_file():
            pytest.skip(f"reference fixture {path} is absent: parity with the original code is not checked")
        if name not in loaded:
            text = name.endswith(".json")
            loaded[name] = json.loads(path.read_text()) if text else torch.load(path, weights_only=True)
        return loaded[name]

    return _load


# --- The local one-node SLURM cluster (slurm/cluster.sh) ---------------------------------------

SLURM_SCRIPT = REPO / "slurm" / "cluster.sh"
SLURM_PACKAGES = "slurmctld slurmd slurm-client munge"


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster: jobs go to `partition`; clients read `conf` (SLURM_CONF is set)."""

    conf: Path
    partition: str

    def job_info(self, job_id: str) -> dict[str, str] | None:
        """`scontrol show job` as {key: value} (JobState, Restarts, ...), None once SLURM forgot it."""
        out = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True
        )
        if "Invalid job id" in out.stderr:  # purged MinJobAge (300 s) after it ended
            return None
        if out.returncode != 0:
            raise RuntimeError(f"scontrol show job {job_id} failed: {out.stderr.strip()}")
        return dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the one-node SLURM cluster (or reuse a running one) and point SLURM_CONF at it.

    The cluster is left running after the session: other test sessions on this machine may be
    using it, and the next start is then a no-op. `slurm/cluster.sh stop` stops it.
    """
    sbin_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(c, path=sbin_path)]
    if missing:
        pytest.skip(
            f"SLURM tests need {', '.join(missing)}: apt-get install {SLURM_PACKAGES}, "
            f"then {SLURM_SCRIPT.relative_to(REPO)} start (as root) or let the tests start it"
        )
    command = "start" if os.geteuid() == 0 else "status"
    # Test processes running side by side (pytest -n 2) start the one cluster one at a time.
    with open(tempfile.gettempdir() + "/slotsweep-slurm-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = subprocess.run([str(SLURM_SCRIPT), command], capture_output=True, text=True)
    if run.returncode != 0 and command == "status":
        pytest.skip(f"the local SLURM cluster is not running; start it as root: sudo {SLURM_SCRIPT} start")
    if run.returncode != 0:
        pytest.fail(f"{SLURM_SCRIPT} start failed (exit {run.returncode}):\n{run.stdout}{run.stderr}")
    env_line = subprocess.run([str(SLURM_SCRIPT), "env"], capture_output=True, text=True, check=True)
    conf = Path(env_line.stdout.strip().removeprefix("export SLURM_CONF="))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(conf))  # sbatch, submitit and jobs all read it
        yield SlurmCluster(conf=conf, partition="debug")


@pytest.fixture(scope="session")
def debug_overrides() -> list[str]:
    """compose_train's shrinking as command-line overrides, for tests that run src/train.py."""
    return ["trainer=debug", *TINY_DATA, "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="session")
def two_step_overrides(debug_overrides: list[str]) -> list[str]:
    """debug_overrides cut to two steps and one validation batch: the shortest real training."""
    return [
        *debug_overrides,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
    ]
