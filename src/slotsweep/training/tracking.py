"""Loggers and W&B: run naming and grouping, offline mode, best-value summaries, media.

`conf/logger/<option>.yaml` names the logger class by `_target_` (with `_partial_: true`); training
fills the run-specific arguments from `logger_kwargs`. W&B groups the seeds of one experiment by
its exp_id (runs.py), so the dashboard shows mean ± std across seeds (docs/wandb.md).
"""

import inspect
import logging
import netrc
import os
import re
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from omegaconf import DictConfig, OmegaConf

from slotsweep.metric_names import METRICS, val_key

__all__ = [
    "define_best_summaries",
    "finish_wandb",
    "log_media",
    "logger_kwargs",
    "no_logger",
    "stamp_protocol",
    "wandb_mode",
    "wandb_run_kwargs",
]

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")
_DEFAULT_WANDB_URL = "https://api.wandb.ai"
# Config keys named like credentials (`api_key`, `hub_token`, not `n_tokens`) never go to W&B.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|token|password|secret)$", re.IGNORECASE)


def no_logger() -> bool:
    """`logger=none`: Lightning's Trainer reads `logger=False` as "log nothing"."""
    return False


def _wandb_url() -> tuple[str, str, int]:
    """netloc (what `wandb login` names in ~/.netrc), host and port of the W&B server."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", _DEFAULT_WANDB_URL))
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.netloc, url.hostname or url.netloc, port


def _has_api_key(netloc: str) -> bool:
    """WANDB_API_KEY or a .netrc entry (what `wandb login` writes); only presence is checked."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    if not path.is_file():
        return False
    try:
        return netrc.netrc(path).authenticators(netloc) is not None
    except (netrc.NetrcParseError, OSError) as error:
        log.warning(f"W&B: cannot read {path} ({error}); treating it as holding no API key")
        return False


def _reachable(host: str, port: int, timeout_s: float) -> bool:
    """TCP connect within timeout_s; the DNS lookup is bounded too (it ignores socket timeouts)."""
    outcome: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(outcome) and outcome[0]


def wandb_mode(requested: str | None = None, timeout_s: float = 2.0) -> str:
    """The W&B mode a run uses: never one that can fail or hang the run.

    Order: `requested` (`logger.mode`), else WANDB_MODE, else "offline" when no API key is
    configured or the W&B host does not answer within timeout_s, else "online".
    """
    if requested is not None:
        if requested not in WANDB_MODES:
            raise ValueError(f"logger.mode={requested} is not one of {list(WANDB_MODES)} (null: automatic)")
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netloc, host, port = _wandb_url()
    if not _has_api_key(netloc):
        log.warning(
            f"W&B: offline (no API key: WANDB_API_KEY unset and no {netloc} entry in ~/.netrc); "
            "upload later with `make wandb-sync`"
        )
        return "offline"
    if not _reachable(host, port, timeout_s):
        log.warning(
            f"W&B: offline ({host}:{port} unreachable within {timeout_s} s); "
            "upload later with `make wandb-sync`"
        )
        return "offline"
    return "online"


def _without_secrets(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {
            key: _without_secrets(value) for key, value in tree.items() if not _SECRET_KEY.search(str(key))
        }
    if isinstance(tree, list):
        return [_without_secrets(value) for value in tree]
    return tree


def _choices(*groups: str) -> list[str]:
    """The options picked for these config groups (`dataset=shapes`), when Hydra composed the run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    return [str(choices[group]) for group in groups if choices.get(group) is not None]


def _job_type(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "sweep-trial" if cfg.get("sweep") is not None or multirun else "train"


def wandb_run_kwargs(
    cfg: DictConfig, exp_id: str, run_dir: Path, job_type: str | None = None
) -> dict[str, Any]:
    """`wandb.init` arguments of one seed: W&B groups the seeds of an experiment by `group`.

    The id is stable (`<exp_id>-s<seed>`) and resume is allowed, so a requeued job continues its
    own W&B run. job_type defaults to "sweep-trial" in a sweep or multirun, else "train".
    """
    tags = [cfg.exp_name, *_choices("dataset", "encoder")]
    if cfg.get("sweep") is not None:
        tags.append(str(cfg.sweep))
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{exp_id}-s{cfg.seed}")  # W&B ids allow no other characters
    return {
        "project": cfg.logger.project,  # as in conf/logger/wandb.yaml, for a bare wandb.init
        "entity": cfg.logger.entity,
        "name": run_id,
        "group": exp_id,
        "id": run_id,
        "resume": "allow",
        "job_type": job_type or _job_type(cfg),
        "tags": list(dict.fromkeys(tags)),  # unique, in order
        "config": _without_secrets(OmegaConf.to_container(cfg, resolve=True)),
        "dir": str(Path(run_dir) / "logs"),
        "mode": wandb_mode(cfg.logger.mode),
    }


def logger_kwargs(cfg: DictConfig, exp_id: str, run_dir: Path) -> dict[str, Any]:
    """Run-specific arguments for the logger class that `cfg.logger._target_` names.

    WandbLogger gets `wandb_run_kwargs` (its `dir` as Lightning's `save_dir`); another Lightning
    logger gets `save_dir=<run_dir>/logs`; a target without a `save_dir` argument gets nothing.
    """
    from hydra.utils import get_object
    from lightning.pytorch.loggers import WandbLogger

    target = get_object(cfg.logger._target_)
    if isinstance(target, type) and issubclass(target, WandbLogger):
        _finish_stale_wandb_run()
        kwargs = wandb_run_kwargs(cfg, exp_id, run_dir)
        kwargs["save_dir"] = kwargs.pop("dir")
        return kwargs
    if "save_dir" in inspect.signature(target).parameters:
        return {"save_dir": str(Path(run_dir) / "logs")}
    return {}


def _finish_stale_wandb_run() -> None:
    """Close a W&B run that an earlier job of this process left open (finish_wandb not called):
    WandbLogger would otherwise reuse it, and this run's logs would land in the other's."""
    import wandb

    if wandb.run is not None:
        log.warning(f"W&B: run {wandb.run.id} of an earlier job in this process was still open; finishing it")
        wandb.run.finish()


def _wandb_run(logger: Any) -> Any:
    """The logger's wandb run (created on first use), or None when it is not a W&B logger or
    this is not DDP rank 0 (there Lightning's logger holds a stand-in without config or summary)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0 else None


def define_best_summaries(logger: Any) -> None:
    """Keep the best (max, or min where lower is better) and last value of each registered
    validation metric (metric_names.METRICS) in the W&B summary.

    The runs table then shows `val/video_fg_ari.max` and `.last`; no-op for other loggers.
    """
    run = _wandb_run(logger)
    if run is None:
        return
    for name, spec in METRICS.items():
        run.define_metric(val_key(name), summary=f"{spec.summary},last")


def stamp_protocol(logger: Any, protocol: dict[str, Any]) -> None:
    """Put the evaluation protocol (slotsweep.evaluation.protocol) in the W&B run's config and summary, so
    every number on the dashboard says how it was measured; no-op for other loggers."""
    run = _wandb_run(logger)
    if run is None:
        return
    run.config.update({"protocol": protocol}, allow_val_change=True)
    run.summary["protocol"] = protocol


def finish_wandb(logger: Any, exit_code: int = 0) -> None:
    """End the W&B run, so the next run in this process (a Hydra multirun) starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    # `_experiment`, not `.experiment`: the property would start a run only to end it.
    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger._experiment.finish(exit_code=exit_code)


def _check_picture(key: str, picture: np.ndarray | str | Path) -> None:
    if isinstance(picture, (str, Path)):
        if not Path(picture).is_file():
            raise FileNotFoundError(f"log_media: {key!r} names {picture}, which does not exist")
    elif picture.dtype != np.uint8 or picture.ndim not in (3, 4) or picture.shape[-1] != 3:
        raise ValueError(
            f"log_media: {key!r} is {picture.dtype} {tuple(picture.shape)}; expected uint8 RGB "
            "(H, W, 3) or (T, H, W, 3)"
        )


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in (".gif", ".mp4", ".webm")


def log_media(logger: Any, images: dict[str, np.ndarray | str | Path], step: int, fps: float = 4.0) -> bool:
    """Log pictures to W&B or TensorBoard at a trainer step; False (nothing logged) for other loggers.

    Args:
        logger: the trainer's logger.
        images: {key: picture}. A picture is a uint8 RGB array, (H, W, 3) for an image or
            (T, H, W, 3) for a clip, or a path to a .png/.jpg image or a .gif/.mp4 video. W&B logs
            a clip as a GIF at `fps`; TensorBoard (whose videos need moviepy) as its frames side by side.
        step: trainer global step (W&B's x axis for every key, see WandbLogger).
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    for key, picture in images.items():
        _check_picture(key, picture)
    if isinstance(logger, TensorBoardLogger):
        _log_tensorboard(logger, images, step)
        return True
    run = _wandb_run(logger)
    if run is None:
        return False
    import wandb
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:  # wandb copies logged files into the run dir
        media = {}
        for key, picture in images.items():
            if isinstance(picture, (str, Path)):
                path = Path(picture)
                media[key] = wandb.Video(str(path)) if _is_video(path) else wandb.Image(str(path))
            elif picture.ndim == 3:
                media[key] = wandb.Image(picture)
            else:
                gif = Path(tmp) / f"{len(media)}.gif"
                frames = [Image.fromarray(frame) for frame in picture]
                frames[0].save(gif, save_all=True, append_images=frames[1:], duration=1000 / fps, loop=0)
                media[key] = wandb.Video(str(gif), format="gif")
        run.log({**media, "trainer/global_step": step})
    return True


def _log_tensorboard(logger: Any, images: dict[str, np.ndarray | str | Path], step: int) -> None:
    import imageio.v3 as iio

    for key, picture in images.items():
        if isinstance(picture, (str, Path)):  # a video file reads as (T, H, W, C), an image as (H, W, C)
            picture = iio.imread(picture, index=None)[..., :3]
        if picture.ndim == 4:
            picture = np.concatenate(list(picture), axis=1)  # (H, T * W, 3)
        logger.experiment.add_image(key, picture, step, dataformats="HWC")
    logger.experiment.flush()  # also after the logger's finalize (the end-of-run report logs then)
