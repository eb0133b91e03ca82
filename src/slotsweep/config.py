"""Top-level config schema (unknown keys fail at compose time) and checks across config groups.

Each group's own invariants live in its constructor; what spans groups is checked here, before
anything heavy is built, so a bad sweep trial fails in milliseconds rather than after a ViT loads.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig

from slotsweep.errors import SlotsweepError
from slotsweep.metric_names import DEFAULT_OBJECTIVE

__all__ = ["TrainConfig", "ValPicturesConfig", "check_config"]


@dataclass
class ValPicturesConfig:
    """Mask pictures of every validation, sent to the logger (slotsweep.training.pictures)."""

    n_clips: int = 2  # clips drawn per validation; 0: none
    every: int = 1  # draw every this many validations


@dataclass
class TrainConfig:
    """Keys of conf/train.yaml. Groups are free-form here: their `_target_` classes validate them."""

    exp_name: str = MISSING  # first part of the experiment id and of the run dir
    seed: int = 0  # seed=0 is a seed like any other
    objective: list[str] = field(default_factory=lambda: [DEFAULT_OBJECTIVE])  # returned to sweepers
    checkpoint_every_n_steps: int = 500  # a checkpoint also lands at the end of training
    eval_seed: int = 0  # seed of the slot initialisation at validation (reference: unseeded, §10.9)
    eval_jandf: bool = False  # also validate with J&F (slotsweep.evaluation.jandf; costs boundary passes)
    run_dir: str | None = None  # null: <paths.runs_dir>/<exp_id>/seed<k>
    force: bool = False  # re-run even if results.json says completed
    load_weights: str | None = None  # initial weights (this project's or reference checkpoint)
    # Read checkpoints/weights files that need arbitrary unpickling (resume, load_weights,
    # encoder.weights). Unpickling can run code from the file: only for files you trust.
    allow_pickle: bool = False
    sweep: str | None = None  # name of the sweep this run belongs to (tags, aggregation)
    visualize: Any = None  # pictures written at the end (demo)
    val_pictures: ValPicturesConfig = field(default_factory=ValPicturesConfig)
    # train from the frozen encoder's outputs, encoded once into paths.features_dir (slotsweep.cache)
    cache: bool = False
    paths: Any = MISSING
    encoder: Any = MISSING
    grouper: Any = MISSING
    predictor: Any = MISSING
    decoder: Any = MISSING
    loss: Any = MISSING
    dataset: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def check_config(cfg: DictConfig) -> None:
    """Raise SlotsweepError for inconsistencies between groups (one line: key, value, fix)."""
    pictures = cfg.val_pictures
    if pictures.n_clips < 0 or pictures.every < 1:
        raise SlotsweepError(
            f"val_pictures={dict(pictures)}: n_clips must be >= 0 (0: no pictures) and every >= 1"
        )
    weights = {name: loss.get("weight", 1.0) for name, loss in cfg.loss.items()}
    for name, weight in weights.items():
        if not weight >= 0:
            raise SlotsweepError(f"loss.{name}.weight={weight} must be >= 0 (0 disables the loss)")
    if not any(w > 0 for w in weights.values()):
        raise SlotsweepError(f"all loss weights are 0 ({weights}): at least one must be > 0")
    _build(cfg.grouper)  # its constructor checks its own keys (n_slots >= 1, ...)
    n_frames = cfg.dataset.train_clip_frames
    for name, loss in {name: _build(node) for name, node in cfg.loss.items()}.items():
        if loss.weight > 0:
            _one_line(loss.check_clip, name, n_frames)
    if cfg.load_weights is not None and not Path(cfg.load_weights).is_file():
        raise SlotsweepError(
            f"load_weights={cfg.load_weights} does not exist: give a checkpoint file or null"
        )
    # Also checked by the encoder; here it fails before a run dir is made and a ViT is built.
    weights = cfg.encoder.get("weights")  # None too for an encoder without a weights file option
    if weights is not None and not Path(weights).is_file():
        raise SlotsweepError(
            f"encoder.weights={weights} does not exist: give the path of a local weights file "
            "(.safetensors/.pth) or set encoder.weights=null"
        )
    if cfg.cache and not cfg.encoder.frozen:  # also checked by the cache, after the ViT loads
        raise SlotsweepError(
            "cache=true caches a frozen encoder's outputs: set encoder.frozen=true or cache=false"
        )
    if cfg.checkpoint_every_n_steps < 1:
        raise SlotsweepError(f"checkpoint_every_n_steps={cfg.checkpoint_every_n_steps} must be >= 1")
    if not cfg.objective:
        raise SlotsweepError(f"objective=[] must name at least one metric, e.g. [{DEFAULT_OBJECTIVE}]")


def _build(node: DictConfig) -> Any:
    """A cheap part (the grouper, a loss), built so that its constructor checks its keys. The
    random state is restored: the model built after a seed must get the same weights."""
    import torch  # here: train.py imports this module for the schema, and --help needs no torch

    with torch.random.fork_rng(devices=[]):
        return _one_line(instantiate, node)


def _one_line(check: Callable[..., Any], *args: Any) -> Any:
    """Run a part's check; its ValueError (one line naming key and value) as a SlotsweepError,
    not inside Hydra's multi-line instantiation error."""
    try:
        return check(*args)
    except InstantiationException as error:
        if not isinstance(error.__cause__, ValueError):
            raise
        raise SlotsweepError(str(error.__cause__)) from error.__cause__
    except ValueError as error:
        if isinstance(error, SlotsweepError):
            raise
        raise SlotsweepError(str(error)) from error
