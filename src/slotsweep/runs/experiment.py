"""Experiment identity, run directories and results.json: what sweeps and aggregation read.

A run's directory is a function of its config, not of the clock, so a requeued, relaunched or
re-submitted job finds its own checkpoints (DESIGN.md "Experiment identity").
"""

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from slotsweep import numerics
from slotsweep.config import check_config, check_data
from slotsweep.errors import SlotsweepError

__all__ = [
    "EVAL_DIR",
    "IDENTITY_FILE",
    "Located",
    "NON_RESULT_DECLARATION",
    "NON_RESULT_KEYS",
    "SPLIT_SIZES_DECLARATION",
    "RESULTS_FILE",
    "check_run_dir",
    "check_writable",
    "device_count",
    "experiment_id",
    "flatten",
    "identity",
    "locate",
    "non_result_keys",
    "read_results",
    "run_dir",
    "total_batch_size",
    "write_identity",
    "write_results",
]

RESULTS_FILE = "results.json"
IDENTITY_FILE = "identity.json"  # exp_id, seed and the hashed tree of the run that owns the dir
EVAL_DIR = "eval"  # src/eval.py's scores of the run's checkpoints, one JSON per protocol

# Dotted keys that never change a result: left out of the experiment id.
NON_RESULT_KEYS = (
    "seed",
    "force",
    "pause_at_step",  # where a session stops, not what the run computes (training/exact_resume.py)
    "pool_dir",  # which process trains it (a trial pool's heads equal their solo runs)
    "allow_pickle",
    "run_dir",
    "objective",
    "paths",
    "logger",
    "hydra",
    "sweep",
    "visualize",
    "val_pictures",  # what is drawn, not what is computed
    "eval_jandf",  # adds metrics, changes none
    "metrics",  # the extra validation metrics: add numbers, change none
    "trainer.devices",  # enter as the total batch (identity(): batch x devices x nodes)
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "checkpoint_every_n_steps",  # where a run can resume from, not what it computes
    "dataset.num_workers",
    "dataset.prefetch_factor",
    "compile",  # how the same operations run, not which (fused kernels round differently)
    "encoder.weights",  # enters by content (identity(): the file's sha256), never by path
)
# A dataset YAML lists its own such keys (where its data lives, how to make it) under this key:
# the contract of a datamodule (contracts.DataModule), so a new dataset needs no edit here.
NON_RESULT_DECLARATION = "_non_result_keys_"
# A dataset YAML may declare its official splits' sizes here (videos, mean frames per video, stored
# frame size), for forecasts without data on disk (training.estimate): facts, not results.
SPLIT_SIZES_DECLARATION = "_split_sizes_"


def non_result_keys(declared: Any) -> tuple[str, ...]:
    """NON_RESULT_KEYS plus the dataset's declared keys (`dataset._non_result_keys_`, a list of
    key names inside `dataset`), the declaration included."""
    if declared is None:
        declared = []
    if not isinstance(declared, list | tuple) or not all(isinstance(k, str) and k for k in declared):
        raise SlotsweepError(
            f"dataset.{NON_RESULT_DECLARATION}={declared} must be a list of the dataset's key names, "
            "e.g. [data_dir]"
        )
    declarations = (f"dataset.{NON_RESULT_DECLARATION}", f"dataset.{SPLIT_SIZES_DECLARATION}")
    return (*NON_RESULT_KEYS, *declarations, *(f"dataset.{k}" for k in declared))


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def device_count(devices: Any) -> int:
    """trainer.devices as a number of devices per node: an int, a digit string or a device list;
    "auto" / -1 count as one, the CPU machines this default is meant for."""
    if isinstance(devices, int | str) and str(devices).isdigit() and int(devices) > 0:
        return int(devices)
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices)
    return 1


def total_batch_size(cfg: DictConfig) -> int:
    """Samples per optimizer step over all devices and nodes: what the lr is scaled with (optim.py)."""
    n = device_count(cfg.trainer.get("devices", 1))
    return cfg.dataset.batch_size * n * cfg.trainer.get("num_nodes", 1)


def _encoder_weights(encoder: DictConfig) -> str | None:
    """What the encoder's weights are, by content: a local file's sha256, the hub's pretrained
    identity (timm `architecture.tag` and its source), or None for a seeded random init."""
    if encoder.get("weights") is not None:
        return f"sha256:{_file_sha256(Path(encoder.weights))}"
    if not encoder.get("pretrained", False):
        return None
    from slotsweep.lean_timm import timm  # only here: aggregation never needs timm

    hub = timm.models.get_pretrained_cfg(encoder.model_name)
    if hub is None:  # not a timm name: building the encoder reports it
        return f"timm:{encoder.model_name}"
    return f"timm:{hub.architecture}.{hub.tag}:{hub.hf_hub_id or hub.url}"


def _file_sha256(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime): a sweep's process asks for many
    runs' identities, and a ViT-L weights file is ~1 GB."""
    try:
        stat = path.stat()
    except OSError as e:
        raise SlotsweepError(f"encoder.weights={path} cannot be read ({e.strerror}): check the path") from e
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of `path`; size and mtime only key the cache, so an edited file is hashed again."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise SlotsweepError(f"encoder.weights={path} cannot be read ({e.strerror}): check the path") from e
    return digest.hexdigest()


def identity(cfg: DictConfig, resolved: numerics.Numerics | None = None) -> dict[str, Any]:
    """Everything that decides a run's result, and nothing else: the resolved config without
    NON_RESULT_KEYS and the dataset's declared ones, plus the encoder weights by content and the
    total batch. `cache` (float16 features) is a result key; where the cache lives
    (paths.features_dir) is not.

    trainer.precision enters resolved (`resolved`, else slotsweep.numerics.resolve here): `auto`
    becomes the label of what the run computes with (`32-true`, `32-true+tf32`, `bf16-mixed`), and
    strict_fp32 is folded into it. A CPU run's label is `32-true`, as its config said before `auto`
    existed, so CPU runs keep their ids; a GPU run's id says which numerics it trained with.
    """
    resolved = numerics.resolve(cfg) if resolved is None else resolved
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree["trainer"]["precision"] = resolved.label
    tree.pop("strict_fp32", None)
    if not tree.get("stream_start_step"):  # the stream from its start: ids from before the key stay
        tree.pop("stream_start_step", None)
    declared = tree["dataset"].get(NON_RESULT_DECLARATION)
    skipped = non_result_keys(declared)
    unknown = [k for k in declared or [] if k not in tree["dataset"]]
    if unknown:
        raise SlotsweepError(
            f"dataset.{NON_RESULT_DECLARATION} names {unknown}, which dataset has no key of: "
            "list only keys of the dataset's YAML"
        )
    for key in skipped:
        _drop(tree, key)
    tree["encoder"]["weights_identity"] = _encoder_weights(cfg.encoder)
    tree["total_batch_size"] = total_batch_size(cfg)
    return tree


def experiment_id(cfg: DictConfig, resolved: numerics.Numerics | None = None) -> str:
    """`<exp_name>-<8 hex>`: a hash of identity(cfg, resolved)."""
    return _hashed(cfg.exp_name, identity(cfg, resolved))


def _hashed(exp_name: str, tree: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()
    return f"{exp_name}-{digest[:8]}"


def run_dir(cfg: DictConfig, exp_id: str) -> Path:
    """`<paths.runs_dir>/<exp_id>/seed<k>`, or `run_dir` when the user set it explicitly."""
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    return Path(cfg.paths.runs_dir) / exp_id / f"seed{cfg.seed}"


def check_writable(directory: Path) -> None:
    """Fail now, naming the dir, if `directory` could not be made or written: not after the data and
    the model were built."""
    existing = Path(directory).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SlotsweepError(
            f"run dir {directory} cannot be written ({existing} is not a writable directory): "
            "set paths.runs_dir (or SLOTSWEEP_RUNS_DIR) or run_dir to a writable place"
        )


class Located(NamedTuple):
    """A checked config's place, computed once per run (locate) and passed down: exp_id, the run
    dir, the identity tree exp_id hashes (identity.json records it) and the resolved numerics."""

    exp_id: str
    directory: Path
    identity: dict[str, Any]
    resolved: numerics.Numerics


def locate(cfg: DictConfig) -> Located:
    """exp_id and run dir of a checked config: every check that needs neither the model nor the data
    (the config across groups, the numerics, the run dir's owner, a writable place), so `src/train.py`
    runs them before it builds anything and hands the result to training.run. The numerics
    (slotsweep.numerics.resolve) probe CUDA, which imports torch, unless trainer.accelerator=cpu;
    GPUs asked for without a usable CUDA are refused here."""
    check_data(cfg)  # first: a missing dataset is refused before torch is imported
    check_config(cfg)
    resolved = numerics.resolve(cfg)
    tree = identity(cfg, resolved)
    exp_id = _hashed(cfg.exp_name, tree)
    located = Located(exp_id, run_dir(cfg, exp_id), tree, resolved)
    check_run_dir(located, cfg)  # another config's run: refuse before reading its results
    check_writable(located.directory)
    return located


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


def write_identity(located: Located, seed: int) -> None:
    """Record who owns the run dir (check_run_dir reads it): exp_id, seed and the hashed tree."""
    record = {"exp_id": located.exp_id, "seed": seed, "identity": located.identity}
    tmp = located.directory / f"{IDENTITY_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, located.directory / IDENTITY_FILE)


def check_run_dir(located: Located, cfg: DictConfig) -> None:
    """Refuse a run dir that holds another config's run (an explicit run_dir=, a hash collision,
    a hand-copied dir), naming the keys that differ. force=true sets such a run aside instead."""
    directory, exp_id = located.directory, located.exp_id
    path = Path(directory) / IDENTITY_FILE
    if cfg.force or not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
        theirs = (record["exp_id"], record["seed"], record["identity"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlotsweepError(
            f"{path} is unreadable ({type(e).__name__}): pass force=true to set the dir aside, "
            "or another run_dir"
        ) from e
    ours = (exp_id, cfg.seed, located.identity)
    if theirs[:2] == ours[:2]:
        return
    differences = _differences({**theirs[2], "seed": theirs[1]}, {**ours[2], "seed": ours[1]})
    shown = ", ".join(differences[:4]) + (f" and {len(differences) - 4} more" if len(differences) > 4 else "")
    raise SlotsweepError(
        f"run_dir={directory} holds another run ({theirs[0]}, seed {theirs[1]}; it differs in {shown}): "
        "pass force=true to set it aside and start over, or choose another run_dir"
    )


def _differences(theirs: dict, ours: dict) -> list[str]:
    """`key: old -> new` for each leaf that differs; a class (`_target_`) change is one entry."""
    old, new = flatten(theirs), flatten(ours)
    changed_targets = {
        key.removesuffix("._target_")
        for key in old.keys() | new.keys()
        if key.endswith("._target_") and old.get(key) != new.get(key)
    }
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) == new.get(key):
            continue
        group = key.removesuffix("._target_")
        if group in changed_targets and key.endswith("._target_"):
            lines.append(f"{group}: {_short(old.get(key))} -> {_short(new.get(key))}")
        elif not any(key.startswith(f"{g}.") for g in changed_targets):
            lines.append(f"{key}: {old.get(key, '<absent>')} -> {new.get(key, '<absent>')}")
    return lines


def _short(target: Any) -> str:
    """slotsweep.models.decoder.SlotMixerDecoder -> SlotMixerDecoder."""
    return str(target).rsplit(".", 1)[-1]
