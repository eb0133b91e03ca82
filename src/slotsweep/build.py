"""Config -> built parts: the model with its losses, and the datamodule (Hydra `instantiate`).

Every entry point builds its parts here (training, eval, infer), so a part is built one way
wherever it is used. `models/` and `data/` know nothing of Hydra; this module is where their
YAML meets their constructors.
"""

import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from slotsweep.losses import channel_layout
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.models.weights import load_model_weights
from slotsweep.runs import experiment

__all__ = ["build_datamodule", "build_model"]

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig) -> tuple[ObjectCentricModel, dict[str, torch.nn.Module]]:
    """The model (with `load_weights` loaded) and its {name: loss} dict; losses with weight 0 are
    dropped with their decoder channels."""
    log.info(f"Instantiating encoder <{cfg.encoder._target_}>")
    encoder = instantiate(cfg.encoder, allow_pickle=cfg.allow_pickle)
    losses = {name: instantiate(loss_cfg) for name, loss_cfg in cfg.loss.items()}
    losses = {name: loss for name, loss in losses.items() if loss.weight > 0}
    channels = sum(channel_layout(losses, encoder))
    model = ObjectCentricModel(
        encoder=encoder,
        grouper=instantiate(cfg.grouper),
        predictor=instantiate(cfg.predictor),
        decoder=instantiate(cfg.decoder),
        decoder_channels=channels,
    )
    if cfg.load_weights is not None:  # a released reference checkpoint or one of ours
        load_model_weights(model, cfg.load_weights, "load_weights", cfg.allow_pickle)
    return model, losses


def build_datamodule(dataset: DictConfig) -> Any:
    """The datamodule of a `dataset` config; its declarations (`_non_result_keys_`: which of its keys
    stay out of exp_id; `_split_sizes_`: the official splits' sizes, for forecasts) are not
    constructor arguments."""
    arguments = OmegaConf.to_container(dataset, resolve=True)
    arguments.pop(experiment.NON_RESULT_DECLARATION, None)
    arguments.pop(experiment.SPLIT_SIZES_DECLARATION, None)
    return instantiate(arguments)
