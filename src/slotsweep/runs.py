"""Experiment identity, run directories and results.json: what sweeps and aggregation read.

A run's directory is a function of its config, not of the clock, so a requeued, relaunched or
re-submitted job finds its own checkpoints (DESIGN.md "Experiment identity").
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["NON_RESULT_KEYS", "RESULTS_FILE", "experiment_id", "read_results", "run_dir", "write_results"]

RESULTS_FILE = "results.json"

# Dotted keys that never change a result: left out of the experiment id.
NON_RESULT_KEYS = (
    "seed",
    "force",
    "run_dir",
    "objective",
    "paths",
    "logger",
    "hydra",
    "sweep",
    "visualize",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "dataset.num_workers",
    "dataset.data_dir",
    "dataset.root",  # where a video folder lives, not what it holds
    "dataset.convert_command",  # help text of the missing-data error
    "encoder.weights",
)


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def experiment_id(cfg: DictConfig) -> str:
    """`<exp_name>-<8 hex>`: a hash of the resolved config without NON_RESULT_KEYS."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_RESULT_KEYS:
        _drop(tree, key)
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()
    return f"{cfg.exp_name}-{digest[:8]}"


def run_dir(cfg: DictConfig, exp_id: str) -> Path:
    """`<paths.runs_dir>/<exp_id>/seed<k>`, or `run_dir` when the user set it explicitly."""
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    return Path(cfg.paths.runs_dir) / exp_id / f"seed{cfg.seed}"


def write_results(directory: Path, results: dict[str, Any]) -> Path:
    """Write results.json atomically: a reader never sees half a file."""
    path = Path(directory) / RESULTS_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_results(directory: Path) -> dict[str, Any] | None:
    """The run's results.json, or None if it has none yet."""
    path = Path(directory) / RESULTS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
