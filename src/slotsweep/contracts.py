"""The contracts of the extension points: what each part offers the assembled model and the module.

A new part is a class that satisfies one of these (structurally: no base class to inherit) plus a
YAML naming it by `_target_` (docs/extending.md). The model (models/object_centric.py) and the
Lightning module (module.py) use nothing else of a part. Shapes use the project's letters: B batch,
T frames, P patches, S slots, D slot width, D_feat encoder width, C decoder channels, K GT objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "DataModule",
    "EncoderOutput",
    "ModelOutput",
    "Decoder",
    "DecoderFactory",
    "Encoder",
    "Grouper",
    "Loss",
    "PredictorFactory",
    "SlotInitializer",
    "require",
]


# Typed outputs: what the parts hand each other and what losses, metrics and pictures read.


@dataclass
class EncoderOutput:
    """Per-patch encoder outputs, prefix (CLS/register) tokens removed.

    features: (..., P, D_feat) output tokens of block N, before the final norm: the slot-attention
        input and the reconstruction target.
    keys: (..., P, D_feat) attention keys of block N, all heads concatenated: the similarity target.
    """

    features: Tensor
    keys: Tensor


@dataclass
class ModelOutput:
    """Everything the losses, metrics and pictures read. Images are clips with T = 1.

    encoder: EncoderOutput with (B, T, P, D_feat) tensors (the loss targets).
    slots: (B, T, S, D) slots after grouping frame t: what is decoded.
    slots_predicted: (B, T, S, D) predictor output: the initial slots of frame t + 1.
    grouping_masks: (B, T, S, P) slot-attention weights of the last iteration.
    reconstruction: (B, T, P, C) decoder output, channels split among the losses.
    decoder_masks: (B, T, S, P) decoder mixing weights: the evaluation masks.
    """

    encoder: EncoderOutput
    slots: Tensor
    slots_predicted: Tensor
    grouping_masks: Tensor
    reconstruction: Tensor
    decoder_masks: Tensor


@runtime_checkable
class Encoder(Protocol):
    """Images to per-patch features (a frozen ViT in every preset: models/encoder.py).

    feat_dim: D_feat. n_patches: P. img_size: input H = W in pixels. frozen: no gradients (then
    its outputs can be cached).
    """

    feat_dim: int
    n_patches: int
    img_size: int
    frozen: bool

    def __call__(self, images: Tensor) -> EncoderOutput:
        """images (N, 3, H, W) -> EncoderOutput with features and keys (N, P, D_feat)."""


@runtime_checkable
class SlotInitializer(Protocol):
    """The slots a video starts from (models/initializers.py). Owned by the grouper.

    n_slots: the default S (>= 1, checked by the constructor).
    """

    n_slots: int

    def __call__(
        self,
        batch_size: int,
        n_slots: int | None = None,
        generator: torch.Generator | None = None,
        conditions: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """(B, S, D) first-frame slots.

        n_slots: overrides the default (evaluation with another count); an initializer whose
            count is fixed by its conditions may reject it.
        generator: makes sampled slots repeatable (evaluation).
        conditions: the batch's first-frame annotations, e.g. "masks" (B, K, H, W) bool, for
            conditioned protocols; None for unconditioned initializers.
        """


@runtime_checkable
class Grouper(Protocol):
    """Groups one frame's features into slots; owns the initial slots and the iteration counts.

    slot_dim: D (the model projects encoder features to it). n_slots: the default S.
    """

    slot_dim: int
    n_slots: int

    def initial_slots(
        self,
        batch_size: int,
        n_slots: int | None = None,
        generator: torch.Generator | None = None,
        conditions: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """(B, S, D) slots of a video's first frame; the arguments as in SlotInitializer."""

    def group(self, features: Tensor, slots: Tensor, first_frame: bool) -> tuple[Tensor, Tensor]:
        """One frame: features (B, P, D) projected tokens, slots (B, S, D) initial slots ->
        slots (B, S, D) and masks (B, S, P) (the grouping's attention, summing to 1 over S).
        first_frame: the frame starts a video (a grouper may iterate more on it)."""


# The predictor and decoder YAMLs are partials (`_partial_: true`): the model calls them with the
# sizes it knows, so one YAML fits every encoder and slot width.
PredictorFactory = Callable[..., nn.Module]
"""Called as factory(dim=D); the module maps slots (B, S, D) of frame t to frame t+1's (B, S, D)."""

DecoderFactory = Callable[..., "Decoder"]
"""Called as factory(inp_dim=D, outp_dim=C, n_patches=P); C is the losses' channel total."""


@runtime_checkable
class Decoder(Protocol):
    def __call__(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """slots (N, S, D) -> reconstruction (N, P, C) and masks (N, S, P) (the evaluation masks)."""


@runtime_checkable
class Loss(Protocol):
    """One training objective; its config key is its name (log key train/<name>, loss.<name>.weight).

    weight: factor in the total loss (>= 0; 0 drops the loss and its decoder channels).
    """

    weight: float

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        """Decoder output channels the loss reads: its slice of the reconstruction."""

    def check_clip(self, name: str, n_frames: int) -> None:
        """Raise ValueError (one line, naming loss.<name>.<key>) if the loss cannot train on clips
        of n_frames frames (dataset.train_clip_frames); called before anything heavy is built."""

    def __call__(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        """prediction (B, T, P, n_channels) its decoder channels; out the whole model output ->
        a scalar loss, unweighted."""


@runtime_checkable
class DataModule(Protocol):
    """Train and validation clips (a LightningDataModule in practice: data/).

    Batches are dicts: "video" (B, T, 3, H, W) float (or, to leave the pixel work to the training
    device, "frames" and "views" as data.video_transforms.collate_clips makes them: the module turns
    them into "video" after the batch is on the device), and in validation "masks" (B, T, K, H, W)
    bool and "index" (B,) int64, each sample's position in the validation set (its slots are drawn
    from a seed of it, so metrics do not depend on the batch size or the device count). Under DDP
    every validation sample must reach exactly one rank, unpadded: slotsweep.data.streams'
    ValidationStream (or map_stream for a map-style dataset) does both.
    ignore_background: mask channel 0 is the background (MOVi); ignore_overlaps: pixels may be in
    several channels (COCO): the metrics' conventions for this data.

    Its YAML lists under `_non_result_keys_` the keys that say where the data lives (`data_dir`,
    `root`), not what it holds: they stay out of exp_id (runs.identity), and the list is not a
    constructor argument (build.build_datamodule).
    """

    ignore_background: bool
    ignore_overlaps: bool

    def setup(self, stage: str | None = None) -> None: ...

    def train_dataloader(self) -> Iterable[dict[str, Tensor]]: ...

    def val_dataloader(self) -> Iterable[dict[str, Tensor]]: ...


def require(part: Any, contract: type, key: str) -> None:
    """Raise TypeError naming the config key and the missing members if `part` breaks `contract`."""
    if isinstance(part, contract):
        return
    declared = [*contract.__annotations__, *(k for k, v in vars(contract).items() if _is_method(k, v))]
    members = [m for m in declared if not hasattr(part, m)]
    raise TypeError(
        f"{key}: {type(part).__name__} is not a slotsweep.contracts.{contract.__name__}; "
        f"it lacks {members} (docs/extending.md)"
    )


def _is_method(name: str, value: Any) -> bool:
    return callable(value) and (name == "__call__" or not name.startswith("_"))
