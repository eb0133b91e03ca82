"""Config -> built parts: the datamodule, the losses, the metrics and the model (Hydra `instantiate`).

Every entry point builds its parts here (training, eval, infer), so a part is built one way
wherever it is used, and each is checked against its contract (slotsweep.contracts) as it is built.
The order puts every refusal before the expensive part: the datamodule and the cheap parts are
built and checked (the grouper and its initializer, the predictor and decoder classes, the losses
against the clip length), then the encoder (a ViT, loading its weights). `models/` and `data/`
know nothing of Hydra; this module is where their YAML meets their constructors. A checkpoint's
model is built here too: `checkpoint_config` then `build_model(cfg, ckpt=...)` (eval, infer); a
resume builds `build_model(cfg)` and Lightning loads the checkpoint into it, through the same check
of the frozen encoder (models.weights).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from slotsweep.contracts import (
    DataModule,
    Decoder,
    Encoder,
    Grouper,
    Loss,
    Metric,
    Predictor,
    SlotInitializer,
    require,
)
from slotsweep.errors import SlotsweepError
from slotsweep.losses import channel_layout
from slotsweep.metric_names import METRICS
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.models.weights import frozen_source, left_out_frozen, load_model_weights
from slotsweep.optim import AdamWarmupDecay
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import load_run_config

__all__ = [
    "ModelParts",
    "build_datamodule",
    "build_losses",
    "build_metrics",
    "build_model",
    "build_optim",
    "build_parts",
    "checkpoint_config",
]

log = logging.getLogger(__name__)


def build_datamodule(dataset: DictConfig) -> DataModule:
    """The datamodule of a `dataset` config, checked against contracts.DataModule (not set up); its
    declarations (`_non_result_keys_`: which of its keys stay out of exp_id; `_split_sizes_`: the
    official splits' sizes, for forecasts) are not constructor arguments."""
    log.info(f"Instantiating datamodule <{dataset._target_}>")
    arguments = OmegaConf.to_container(dataset, resolve=True)
    arguments.pop(experiment.NON_RESULT_DECLARATION, None)
    arguments.pop(experiment.SPLIT_SIZES_DECLARATION, None)
    return _built(arguments, DataModule, "dataset")


def build_losses(loss: DictConfig) -> dict[str, Loss]:
    """{name: loss} of the loss config, in its order, the weight-0 ones dropped (with their decoder
    channels). A loss's name is its YAML key: its errors are prefixed `loss.<name>.`."""
    losses = {}
    for name, node in loss.items():
        built = _built(node, Loss, f"loss.{name}", prefix=f"loss.{name}.")
        if built.weight > 0:
            losses[name] = built
    return losses


def build_metrics(metrics: DictConfig, ignore_background: bool, ignore_overlaps: bool) -> dict[str, Metric]:
    """{name: metric} of the `metrics` config, beside the registry's (metric_names.METRICS), with the
    datamodule's mask conventions; each checked against contracts.Metric under `metrics.<name>`."""
    built = {}
    for name, node in metrics.items():
        if name in METRICS:
            raise SlotsweepError(
                f"metrics.{name}: {name} is a built-in metric (metric_names.METRICS); give yours another name"
            )
        conventions = dict(ignore_background=ignore_background, ignore_overlaps=ignore_overlaps)
        built[name] = _built(node, Metric, f"metrics.{name}", prefix=f"metrics.{name}.", **conventions)
    return built


def build_optim(optim: DictConfig) -> AdamWarmupDecay:
    """The optimizer and schedule builder; its constructor checks its keys (base_lr > 0, warmup
    before decay)."""
    return _instantiate(optim)


@dataclass
class ModelParts:
    """The model's cheap parts, built and checked before the encoder: the grouper (with its
    initializer), the predictor and decoder partials (the model calls them with its sizes), and
    the {name: loss} dict of the positive-weight losses."""

    grouper: Grouper
    predictor: Callable[..., Predictor]
    decoder: Callable[..., Decoder]
    losses: dict[str, Loss]


def build_parts(cfg: DictConfig, train_clip_frames: int | None = None) -> ModelParts:
    """The model's cheap parts, each checked against its contract, and the encoder's class;
    `train_clip_frames` (a training run's, from its datamodule): each loss checks it can train on
    such clips. These parts draw from the global generator before the encoder is built (the
    encoder used to be built first): a seed gives other initial weights than before that change,
    a random-init ViT's included (the demo's numbers moved with it)."""
    losses = build_losses(cfg.loss)
    if train_clip_frames is not None:
        for name, loss in losses.items():
            _one_line(loss.check_clip, name, train_clip_frames)
    # its initializer first: a grouper's n_slots is usually its initializer's
    grouper = _built(cfg.grouper, Grouper, "grouper", member=("initializer", SlotInitializer))
    predictor, decoder = _instantiate(cfg.predictor), _instantiate(cfg.decoder)
    require(predictor, Predictor, "predictor")  # partials: their classes are checked
    require(decoder, Decoder, "decoder")
    require(_instantiate(cfg.encoder, _partial_=True), Encoder, "encoder")  # its class, before the ViT
    return ModelParts(grouper, predictor, decoder, losses)


def build_model(
    cfg: DictConfig, parts: ModelParts | None = None, ckpt: str | Path | None = None
) -> tuple[ObjectCentricModel, dict[str, Loss]]:
    """The model (with `load_weights` loaded, then `ckpt`'s weights: cfg from checkpoint_config)
    and its {name: loss} dict, from `parts` (else built here): the encoder is built last, a ViT
    loading its weights, and checked as built."""
    parts = build_parts(cfg) if parts is None else parts
    log.info(f"Instantiating encoder <{cfg.encoder._target_}>")
    encoder = _built(cfg.encoder, Encoder, "encoder", allow_pickle=cfg.allow_pickle)
    model = ObjectCentricModel(
        encoder=encoder,
        grouper=parts.grouper,
        predictor=parts.predictor,
        decoder=parts.decoder,
        decoder_channels=sum(channel_layout(parts.losses, encoder)),
    )
    if cfg.load_weights is not None:  # a released reference checkpoint or one of ours
        load_model_weights(model, cfg.load_weights, "load_weights", cfg.allow_pickle, _source(cfg))
    if ckpt is not None:
        load_model_weights(model, ckpt, "ckpt", cfg.allow_pickle, _source(cfg))
    return model, parts.losses


def _source(cfg: DictConfig) -> str:
    return frozen_source(OmegaConf.to_container(cfg, resolve=True))


def checkpoint_config(
    ckpt: str | Path,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    allow_pickle: bool = False,
) -> DictConfig:
    """The config that rebuilds checkpoint `ckpt`'s model with build_model(cfg, ckpt=ckpt): the
    training config it carries (or the `config` file), with the dotlist `overrides`.

    Where the checkpoint left its frozen encoder out, the config keeps the weights sources it was
    trained with (encoder.weights, encoder.pretrained, load_weights): they rebuild the encoder,
    checked by hash (a moved file: override encoder.weights). Where it holds every tensor (an older
    checkpoint, a trainable encoder), they are dropped: no weights file is read, nothing downloaded.
    """
    cfg = OmegaConf.merge(
        load_run_config(ckpt, config, allow_pickle), OmegaConf.from_dotlist(list(overrides))
    )
    if left_out_frozen(ckpt, "ckpt", allow_pickle):
        files = {"encoder.weights": cfg.encoder.get("weights"), "load_weights": cfg.load_weights}
        for key, path in files.items():
            if path is not None and not Path(path).is_file():
                raise SlotsweepError(
                    f"ckpt={ckpt} left out its frozen encoder, which is rebuilt from {key}={path}; "
                    f'that file does not exist: pass where it is now, e.g. overrides=["{key}=<file>"]'
                )
    else:
        cfg.load_weights = None
        for key, value in (("pretrained", False), ("weights", None)):
            if key in cfg.encoder:  # the ViT's source keys; another encoder may have none
                cfg.encoder[key] = value
    cfg.allow_pickle = allow_pickle
    return cfg


def _built(
    node: Any,
    contract: type,
    key: str,
    prefix: str = "",
    member: tuple[str, type] | None = None,
    **kwargs: Any,
) -> Any:
    """The part of `node` built with `kwargs`, checked against `contract` under `key`: its class
    before its constructor runs (a class outside the contract may not even construct), the built
    part's declared facts after; `member` (name, contract), a part it owns, checked in between
    as `<key>.<name>`."""
    factory = _instantiate(node, _partial_=True, **kwargs)
    require(factory, contract, key)
    part = _one_line(factory, prefix=prefix)
    if member is not None and hasattr(part, member[0]):
        require(getattr(part, member[0]), member[1], f"{key}.{member[0]}")
    require(part, contract, key)
    return part


def _instantiate(node: Any, prefix: str = "", **kwargs: Any) -> Any:
    """instantiate(node, **kwargs); a constructor's ValueError (one line naming its argument) as a
    SlotsweepError with `prefix` (e.g. `loss.timesim.`), not inside Hydra's multi-line error."""
    return _one_line(instantiate, node, prefix=prefix, **kwargs)


def _one_line(check: Callable[..., Any], *args: Any, prefix: str = "", **kwargs: Any) -> Any:
    try:
        return check(*args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, SlotsweepError):
            raise cause from error
        if not isinstance(cause, ValueError):
            raise
        raise SlotsweepError(f"{prefix}{cause}") from cause
    except SlotsweepError:
        raise
    except ValueError as error:
        raise SlotsweepError(f"{prefix}{error}") from error
