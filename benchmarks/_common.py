"""What every benchmark script shares: the machine's description, where result tables go, and
composing the real config and timing training steps on it."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import slotsweep.config  # noqa: F401  (registers the schema conf/train.yaml extends)
from slotsweep.training import task

# Tables, not Lightning's start-up chatter: its info lines and the eval-mode warning (the frozen
# encoder stays in eval mode on purpose)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
# Reference-sized model on the shapes data (videosaur.md §4, MOVi-C): a randomly initialised DINO
# ViT-B/8 at 224 px (784 patches), 11 slots of 128, SlotMixer 3x1024, temporal similarity only,
# 4-frame clips. A few clips suffice: the step cost does not depend on the dataset's size.
REFERENCE_SIZE = [
    "encoder=dino_vitb8",
    "encoder.pretrained=false",
    "dataset.resolution=224",
    "dataset.n_frames=4",
    "dataset.train_clip_frames=4",
    "dataset.n_train_clips=4",
    "dataset.n_val_clips=1",
    "dataset.val_batch_size=1",
    "grouper.n_slots=11",
    "grouper.slot_dim=128",
    "loss=timesim",
    "loss.timesim.temperature=0.075",
]

__all__ = [
    "REFERENCE_SIZE",
    "RESULTS_DIR",
    "StepTimes",
    "compose_train",
    "machine_description",
    "time_training_steps",
    "write_table",
]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """One Markdown line naming what the numbers were measured on (timings mean little without it)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    # the load average says how much the machine was shared while the numbers were taken
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"Machine: {platform.platform()}; CPU {_cpu_model()}, {os.cpu_count()} logical cores, "
        f"load average {load} (1/5/15 min); torch threads {torch.get_num_threads()}; GPU {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}."
    )


def write_table(name: str, markdown: str) -> Path:
    """Write ``markdown`` plus the machine description to ``benchmarks/results/<name>.md``.

    The file is written to ``<name>.md.tmp`` first and renamed, so an interrupted run never leaves a
    half-written table behind.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(f"{markdown.rstrip()}\n\n{machine_description()}\n")
    tmp.replace(path)
    return path


def compose_train(*overrides: str, data_dir: str | Path | None = None) -> DictConfig:
    """conf/train.yaml with `overrides`, no logger; data under `data_dir` (default: paths.data_dir)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", *overrides])
    if data_dir is not None:
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_dir)
    return cfg


@dataclass
class StepTimes:
    """Wall and CPU (this process, all threads) seconds of each timed training step, data loading
    included; `build_s`: building the task (for a cached run, encoding the dataset)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    build_s: float = 0.0
    peak_memory_gib: float | None = None

    @property
    def steps_per_s(self) -> float:
        """From the fastest step: the least noisy figure on a shared machine (noise only adds)."""
        return 1 / min(self.wall)

    @property
    def cpu_per_step(self) -> float:
        return min(self.cpu)


class _StepClock(L.Callback):
    """Clock marks at the end of every training batch: consecutive marks bound one whole step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_end(self, *args) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: count it in the step that issued it
        self.marks.append((time.perf_counter(), time.process_time()))


def bare_trainer(cfg: DictConfig, accelerator: str, max_steps: int, callbacks: list) -> L.Trainer:
    """A Trainer for timing steps: no validation, checkpoints, logger or progress bar; precision
    and gradient clipping as `cfg` says."""
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        precision=cfg.trainer.precision,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def time_training_steps(
    cfg: DictConfig, n_steps: int, warmup: int = 1, accelerator: str = "cpu"
) -> StepTimes:
    """Build the task from `cfg` and time `n_steps` Lightning training steps after `warmup` ones.

    No validation, checkpoints or logger; precision and gradient clipping as the config says.
    """
    start = time.perf_counter()
    datamodule, module = task.build_task(cfg)
    build_s = time.perf_counter() - start
    clock = _StepClock()
    # +1: a step's duration is the gap to the previous mark
    trainer = bare_trainer(cfg, accelerator, warmup + n_steps + 1, [clock])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    marks = clock.marks[warmup:]
    times = StepTimes(build_s=build_s)
    for (wall0, cpu0), (wall1, cpu1) in zip(marks, marks[1:], strict=False):
        times.wall.append(wall1 - wall0)
        times.cpu.append(cpu1 - cpu0)
    if accelerator == "gpu":
        times.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
    return times
