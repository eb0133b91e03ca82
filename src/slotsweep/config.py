"""Top-level config schema (unknown keys fail at compose time) and checks across config groups.

Each group's own invariants live in its constructor; what spans groups is checked here, before
anything heavy is built, so a bad sweep trial fails in milliseconds rather than after a ViT loads.
"""

import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braceexpand import braceexpand
from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from slotsweep.errors import SlotsweepError
from slotsweep.metric_names import DEFAULT_OBJECTIVE

__all__ = [
    "TrainConfig",
    "ValPicturesConfig",
    "check_config",
    "check_data",
    "check_paths",
    "check_shards",
    "check_types",
]


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
    # stop after this many steps (checkpoint, results.json status "paused"); launched again with a
    # higher one (or null: to trainer.max_steps) it resumes exactly where it stopped. Not part of
    # the experiment id: the run is the same, only cut in segments (a sweep's rungs)
    pause_at_step: int | None = None
    # the position in the seed's data stream the run starts at: a trial pool's head that joined a
    # running stream trains on its batches from there (training/pool.py); part of the experiment id
    # when not 0
    stream_start_step: int = 0
    # set by a sweep with hydra.sweeper.pool_size > 1: this job runs the trial pool in that folder
    # (its heads are the tickets there; runs/pool_queue.py), not one run
    pool_dir: str | None = None
    load_weights: str | None = None  # initial weights (this project's or reference checkpoint)
    # Read checkpoints/weights files that need arbitrary unpickling (resume, load_weights,
    # encoder.weights). Unpickling can run code from the file: only for files you trust.
    allow_pickle: bool = False
    sweep: str | None = None  # name of the sweep this run belongs to (tags, aggregation)
    visualize: Any = None  # pictures written at the end (demo)
    val_pictures: ValPicturesConfig = field(default_factory=ValPicturesConfig)
    # train from the frozen encoder's outputs, encoded once into paths.features_dir (slotsweep.cache):
    # false, true (= float16) or int8 (per-token scaled, half the disk)
    cache: Any = False
    # trainer.precision=auto on a GPU gives bf16-mixed, and fp32 there uses TF32; true: the reference's
    # plain fp32 (no TF32, auto resolves to 32-true) wherever it runs (slotsweep.numerics)
    strict_fp32: bool = False
    # torch.compile the encoder and the trainable modules (first steps slower while it compiles)
    compile: bool = False
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
    # validation metrics beside the registry's (metric_names.METRICS): {name: a contracts.Metric's
    # config}, logged as val/<name>; they add numbers and change none, so they stay out of exp_id
    metrics: Any = field(default_factory=dict)


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def check_config(cfg: DictConfig) -> None:
    """Raise SlotsweepError for inconsistencies between groups (one line: key, value, fix).

    The files and folders come first (no torch imported yet: a missing file is refused in about a
    second), then each part's value types against its constructor, then the values themselves.
    What needs a built part (a part's constructor checks, its contract, a loss against the clip
    length) is checked by build.py as it builds the parts, once, before the encoder.
    """
    check_paths(cfg)
    for group in ("encoder", "grouper", "predictor", "decoder", "dataset", "optim", "trainer"):
        check_types(cfg[group], group)
    for group in ("loss", "metrics"):
        for name, node in cfg[group].items():
            check_types(node, f"{group}.{name}")
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
    if cfg.cache not in (False, True, "float16", "int8"):
        raise SlotsweepError(f"cache={cfg.cache} is not a cache setting: give false, true (float16) or int8")
    if cfg.cache and not cfg.encoder.frozen:  # also checked by the cache, after the ViT loads
        raise SlotsweepError(
            "cache=true caches a frozen encoder's outputs: set encoder.frozen=true or cache=false"
        )
    if cfg.checkpoint_every_n_steps < 1:
        raise SlotsweepError(f"checkpoint_every_n_steps={cfg.checkpoint_every_n_steps} must be >= 1")
    if not cfg.objective:
        raise SlotsweepError(f"objective=[] must name at least one metric, e.g. [{DEFAULT_OBJECTIVE}]")
    if cfg.get("stream_start_step", 0) < 0:
        raise SlotsweepError(
            f"stream_start_step={cfg.stream_start_step} must be >= 0 (0: the seed's data from the start)"
        )


def check_paths(cfg: DictConfig) -> None:
    """The files a run reads before anything is built: load_weights and encoder.weights. Needs
    neither torch nor the data."""
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


def check_data(cfg: DictConfig) -> None:
    """A shard dataset's shards exist (a file test per shard; needs neither torch nor reading them).
    Not part of check_config: a config is valid without its data (presets are checked without)."""
    dataset = cfg.dataset
    for key in ("train_shards", "val_shards"):  # the shard datasets' keys (data/shards.py)
        if dataset.get(key) is not None:
            paths = [Path(dataset.data_dir) / name for name in braceexpand(dataset[key])]
            check_shards(paths, f"dataset.{key}", dataset.data_dir, dataset.convert_command)


def check_shards(paths: list[Path], key: str, data_dir: str | Path, convert_command: str) -> None:
    """Raise one line naming the missing shards, where they are looked for, and how to make them."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SlotsweepError(
            f"{key}: {len(missing)} of {len(paths)} shards missing under paths.data_dir={data_dir} "
            f"(e.g. {missing[0]}); set paths.data_dir (env SLOTSWEEP_DATA_DIR) to the folder that "
            f"holds them, or make them: {convert_command.format(data_dir=data_dir)}"
        )


# Constructor annotations whose values a command line can get wrong, and how to say what they take.
_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}


def check_types(node: DictConfig, key: str) -> None:
    """Raise one line if a value of `node` (a part's config, `_target_` a class or function) does
    not fit its constructor's annotation, e.g. `optim.base_lr=fast: expected a number (float)`.

    Only plain annotations are checked (bool, int, float, str, Path, unions of them with None);
    anything richer is left to the constructor. Imports the target's module (torch, usually)."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        function = get_object(target)
        hints = typing.get_type_hints(function.__init__ if inspect.isclass(function) else function)
    except (ImportError, AttributeError, NameError, TypeError):  # building the part reports it
        return
    values = OmegaConf.to_container(node, resolve=True)
    for name, value in values.items():
        allowed = _scalar_types(hints.get(name))
        if allowed is None or any(_fits(value, kind) for kind in allowed):
            continue
        expected = " or ".join(_SCALARS.get(kind, "null") for kind in allowed)
        names = "/".join("None" if kind is type(None) else kind.__name__ for kind in allowed)
        shown = OmegaConf.to_yaml({name: value}).strip().partition(": ")[2]  # as typed: null, true
        raise SlotsweepError(f"{key}.{name}={shown}: expected {expected} ({names})")


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    """The types of a plain annotation (`float`, `int | None`), or None if it is anything else."""
    if hint is None:
        return None
    members = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if all(kind in _SCALARS or kind is type(None) for kind in members):
        return tuple(members)
    return None


def _fits(value: Any, kind: type) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, not to the user
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    if kind is Path:
        return isinstance(value, str)
    return isinstance(value, kind)
