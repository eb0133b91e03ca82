"""Shared fixtures: the real conf/train.yaml, composed and shrunk for a 2-core CPU."""

import json
from collections.abc import Callable
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


@pytest.fixture(scope="session")
def reference() -> Callable[[str], Any]:
    """reference(file) -> the original VideoSAUR's outputs (shared/reference/fixtures), or a skip."""
    loaded: dict[str, Any] = {}

    def _load(name: str) -> Any:
        path = FIXTURES / name
        if not path.is_file():
            pytest.skip(f"reference fixture {path} is absent: parity with VideoSAUR is not checked")
        if name not in loaded:
            text = name.endswith(".json")
            loaded[name] = json.loads(path.read_text()) if text else torch.load(path, weights_only=True)
        return loaded[name]

    return _load
