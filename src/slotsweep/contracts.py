"""The contracts of the extension points, and the typed outputs the parts hand each other.

Each contract names the class a part must be (an `nn.Module` with `forward` for the model's parts
and the losses, a `LightningDataModule` for the data, a torchmetrics `Metric` for a metric) and the
members it must declare on top. `require` checks a part against its contract when build.py builds
it, before the data is read or the encoder is built, so a part that does not fit is one `error:`
line naming its config key and what it lacks. The model (models/object_centric.py) and the
Lightning module (training/module.py) use nothing else of a part. docs/extending.md has a recipe
per contract.

Shapes use the project's letters: B batch, T frames, P patches, S slots, D slot width, D_feat
encoder width, C decoder channels, K ground-truth objects, H/W pixels.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from slotsweep.errors import SlotsweepError

__all__ = [
    "DataModule",
    "Decoder",
    "Encoder",
    "EncoderOutput",
    "Grouper",
    "Loss",
    "Metric",
    "ModelOutput",
    "Predictor",
    "SlotInitializer",
    "SlotRequest",
    "require",
    "val_frames",
]


# ---- typed outputs: what the parts hand each other and what losses, metrics and pictures read ----


@dataclass
class EncoderOutput:
    """Per-patch encoder outputs, prefix (CLS/register) tokens removed.

    features: (..., P, D_feat) output tokens of block N, before the final norm: the slot-attention
        input and the reconstruction target.
    keys: (..., P, D_feat) attention keys of block N, all heads concatenated: the similarity
        target (None when read from a feature cache that holds no keys: no loss reads them).
    """

    features: Tensor
    keys: Tensor | None


@dataclass
class ModelOutput:
    """Everything the losses, metrics and pictures read. Images are clips with T = 1.

    encoder: EncoderOutput with (B, T, P, D_feat) tensors (the loss targets).
    slots: (B, T, S, D) slots after grouping frame t: what is decoded.
    slots_predicted: (B, T, S, D) predictor output: the initial slots of frame t + 1.
    grouping_masks: (B, T, S, P) the grouper's masks of frame t (slot attention: the last
        iteration's attention, summing to 1 over S).
    reconstruction: (B, T, P, C) decoder output; its channels are split among the losses in the
        order of the loss config (losses.channel_layout).
    decoder_masks: (B, T, S, P) decoder mixing weights: the evaluation masks.
    """

    encoder: EncoderOutput
    slots: Tensor
    slots_predicted: Tensor
    grouping_masks: Tensor
    reconstruction: Tensor
    decoder_masks: Tensor


@dataclass(frozen=True)
class SlotRequest:
    """What a video's first-frame slots are asked for with (the one argument of a SlotInitializer).

    batch_size: B.
    n_slots: S; None = the initializer's default. An evaluation with another count sets it; an
        initializer whose count is fixed (learned slots, one per object) may refuse it.
    generator: draws sampled slots repeatably (validation seeds one per clip); None = torch's
        global generator.
    conditions: the batch's first-frame annotations, e.g. "masks" (B, K, H, W) bool
        (module.first_frame_conditions); unconditioned initializers ignore them.
    """

    batch_size: int
    n_slots: int | None = None
    generator: torch.Generator | None = None
    conditions: Mapping[str, Tensor] | None = None


# ---- the contracts ------------------------------------------------------------------------------

_BASES: dict[type, str] = {}  # contract -> dotted path of the class its parts must be instances of


def _contract(base: str) -> Callable[[type], type]:
    """Record the base class of a contract's parts (a dotted path: Lightning and torchmetrics are
    imported only when a part is checked, so models/ stays free of them)."""

    def record(cls: type) -> type:
        _BASES[cls] = base
        return cls

    return record


@_contract("torch.nn.Module")
class Encoder(Protocol):
    """Images to per-patch features (a frozen ViT in every preset: models/encoder.py).

    feat_dim: D_feat. n_patches: P. img_size: input H = W in pixels. frozen: no gradients (then
    its outputs can be cached).
    """

    feat_dim: int
    n_patches: int
    img_size: int
    frozen: bool

    def forward(self, images: Tensor) -> EncoderOutput:
        """images (N, 3, H, W) -> EncoderOutput with features and keys (N, P, D_feat)."""


@_contract("torch.nn.Module")
class SlotInitializer(Protocol):
    """The slots a video starts from (models/initializers.py). Owned by the grouper, which builds it
    as initializer(n_slots=S, dim=D), so its YAML is a partial.

    n_slots: the default S (>= 1; models.initializers.check_n_slots).
    """

    n_slots: int

    def forward(self, request: SlotRequest) -> Tensor:
        """(B, S, D) first-frame slots (B = request.batch_size)."""


@_contract("torch.nn.Module")
class Grouper(Protocol):
    """Groups one frame's features into slots; owns the initial slots and the iteration counts.

    slot_dim: D (the model projects encoder features to it). n_slots: the default S.
    initializer: a SlotInitializer, the first frame's slots (checked as `grouper.initializer`).
    """

    slot_dim: int
    n_slots: int
    initializer: SlotInitializer

    def group(self, features: Tensor, slots: Tensor, first_frame: bool) -> tuple[Tensor, Tensor]:
        """One frame: features (B, P, D) projected tokens, slots (B, S, D) initial slots ->
        slots (B, S, D) and masks (B, S, P) (the grouping's, summing to 1 over S).
        first_frame: the frame starts a video (a grouper may iterate more on it)."""


@_contract("torch.nn.Module")
class Predictor(Protocol):
    """Frame t's slots to frame t + 1's initial slots. Its YAML is a partial: the model builds it
    as predictor(dim=D), so one YAML fits every slot width."""

    def forward(self, slots: Tensor) -> Tensor:
        """slots (B, S, D) -> (B, S, D)."""


@_contract("torch.nn.Module")
class Decoder(Protocol):
    """Slots to per-patch outputs and the evaluation masks. Its YAML is a partial: the model builds
    it as decoder(inp_dim=D, outp_dim=C, n_patches=P), C the losses' channel total."""

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """slots (N, S, D) -> reconstruction (N, P, C) and masks (N, S, P) (the evaluation masks)."""


@_contract("torch.nn.Module")
class Loss(Protocol):
    """One training objective. Its name is its key in the loss config (`loss.<name>`): logged as
    train/<name> and val/<name>, weighted by loss.<name>.weight. Constructor errors name the
    argument (`temperature=0 must be > 0`); build.py prefixes `loss.<name>.`.

    weight: factor in the total loss (>= 0, checked by config.check_config; 0 drops the loss and
        its decoder channels).
    """

    weight: float

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        """Decoder output channels the loss reads: its slice of the reconstruction (0: none)."""

    def check_clip(self, name: str, n_frames: int) -> None:
        """Raise ValueError (one line, naming loss.<name>.<key>) if the loss cannot train on clips
        of n_frames frames (the datamodule's train_clip_frames); called before the encoder is built."""

    def forward(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        """prediction (B, T, P, n_channels) its decoder channels; out the whole model output ->
        a scalar loss, unweighted."""


@_contract("lightning.pytorch.LightningDataModule")
class DataModule(Protocol):
    """Train and validation clips, and the facts about them that the protocol stamp, the checks
    and the end-of-run report read (evaluation/protocol.py reads no dataset config key).

    Batches are dicts: "video" (B, T, 3, H, W) float (or, to leave the pixel work to the training
    device, "frames" and "views" as data.video_transforms.collate_clips makes them: the module turns
    them into "video" after the batch is on the device), and in validation "masks" (B, T, K, H, W)
    bool and "index" (B,) int64, each sample's position in the validation set (its slots are drawn
    from a seed of it, so metrics do not depend on the batch size or the device count). Under DDP
    every validation sample must reach exactly one rank, unpadded: slotsweep.data.streams'
    ValidationStream (or map_stream for a map-style dataset) does both.

    Declared facts:
        dataset_name: the data, not the config option (movi_c, ytvis2021, shapes, ...): the
            protocol stamp's dataset; two configs reading the same videos give the same name.
        train_clip_frames: frames per training sample (the losses' check_clip reads it).
        val_frames: how validation samples are cut, one of "whole videos", "chunks of N frames",
            "images" (`val_frames()` writes them).
        mask_size: side in pixels of the validation masks (the metric resolution).
        val_batch_size: validation samples per batch (the protocol of a limited validation).
        val_batch_keys: the keys of a validation batch, e.g. ("video", "masks", "rgb", "index");
            "rgb" (B, T, H, W, 3) uint8 frames are what the end-of-run report (`visualize`) and
            the mask pictures draw.
        ignore_background: mask channel 0 is the background (MOVi); ignore_overlaps: pixels may
            be in several channels (COCO): the metrics' conventions for this data.

    Its YAML lists under `_non_result_keys_` the keys that say where the data lives (`data_dir`,
    `root`), not what it holds: they stay out of exp_id (runs.experiment), and the list is not a
    constructor argument (build.build_datamodule). Its `batch_size` key (the lr scales with it)
    enters exp_id as the total batch.
    """

    dataset_name: str
    train_clip_frames: int
    val_frames: str
    mask_size: int
    val_batch_size: int
    val_batch_keys: tuple[str, ...]
    ignore_background: bool
    ignore_overlaps: bool

    def train_dataloader(self) -> Iterable[dict[str, Tensor]]: ...

    def val_dataloader(self) -> Iterable[dict[str, Tensor]]: ...


@_contract("torchmetrics.Metric")
class Metric(Protocol):
    """A validation metric on hard masks, logged as val/<name> (`metrics.<name>` in the config,
    or an entry of metric_names.METRICS). Built with the datamodule's conventions as keyword
    arguments, ignore_background and ignore_overlaps; its `higher_is_better` says which way is best.
    """

    def update(self, true: Tensor, pred: Tensor) -> None:
        """true (B, T, K, H, W) bool GT masks; pred (B, T, S, H, W) bool one-hot slot masks."""

    def compute(self) -> Tensor:
        """() the value over every sample seen since the last reset (NaN if none was scored)."""


def val_frames(chunk_frames: int | None = None, images: bool = False) -> str:
    """A DataModule's `val_frames`: "images", "chunks of N frames" or "whole videos"."""
    if images:
        return "images"
    return "whole videos" if chunk_frames is None else f"chunks of {chunk_frames} frames"


def require(part: Any, contract: type, key: str) -> None:
    """Raise SlotsweepError (one line naming `key`) unless `part` fits `contract`.

    `part` is a built part, its class, or a partial of its class (a YAML with `_partial_: true`):
    the base class and the methods are checked on the class, the declared facts (the contract's
    annotated attributes) only on a built part. A method counts as missing where the class does
    not define it or keeps the base class's own (nn.Module's `forward` is a stub).
    """
    cls = part.func if isinstance(part, functools.partial) else part
    cls = cls if isinstance(cls, type) else type(part)
    base_path = _BASES[contract]
    module, _, name = base_path.rpartition(".")
    base = getattr(importlib.import_module(module), name)
    where = f"{key}: {cls.__module__}.{cls.__qualname__}"
    rule = f"slotsweep.contracts.{contract.__name__}, docs/extending.md"
    if not issubclass(cls, base):
        raise SlotsweepError(f"{where} is not a {base_path} subclass ({rule})")
    methods, facts = _members(contract)
    missing = [m for m in methods if getattr(cls, m, None) in (None, getattr(base, m, None))]
    if not isinstance(part, type | functools.partial):
        missing += [f for f in facts if not hasattr(part, f)]
    if missing:
        raise SlotsweepError(f"{where} lacks {', '.join(missing)} ({rule})")


def _members(contract: type) -> tuple[list[str], list[str]]:
    """(methods, declared facts) of a contract: its public functions, `forward` included, and its
    annotated attributes."""
    methods = [n for n, v in vars(contract).items() if callable(v) and not n.startswith("_")]
    facts = [n for n in vars(contract).get("__annotations__", {}) if not n.startswith("_")]
    return methods, facts
