"""Mask pictures during training: the first clips of each validation, drawn and sent to the logger.

Validation already computes every clip's masks; `ValPictures` keeps the first `n_clips` of them
(from the batches that `ObjectCentricModule.validation_step` returns) and draws one labelled
picture per validation, so no extra forward pass runs. W&B and TensorBoard get it as an image at
the trainer step (tracking.log_media); another logger (CSV) gets a PNG file per validation in
`<run_dir>/logs/val_pictures/`. `logger=none` draws nothing. Rank 0 only.
"""

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from slotsweep.contracts import ModelOutput
from slotsweep.evaluation.masks import resize_patch_masks
from slotsweep.evaluation.visualize import clip_grid, save_png, stack_pictures
from slotsweep.training import tracking

__all__ = ["MEDIA_KEY", "ValPictures", "first_clips"]

MEDIA_KEY = "val/masks"  # the logger's key of the per-validation picture
# A training-time picture stays small whatever the dataset: whole YT-VIS videos run to dozens of
# frames at 518 px. The end-of-run report (report.py) draws every frame at full size.
_MAX_FRAMES = 8
_MAX_SIDE = 128


def first_clips(
    batch: dict[str, Tensor], out: ModelOutput, pred: Tensor, masks: str, n: int
) -> list[tuple[np.ndarray, ...]]:
    """The batch's first n clips as numpy (rgb, true, pred, soft), all at the GT mask resolution.

    Args:
        batch: {"rgb": (B, T, H', W', 3) uint8, "masks": (B, T, K, H, W)}; rgb is resized when
            H', W' differ from the masks' (shards store frames at the model's input size).
        out: the model's output on the batch; pred: (B, T, S, H, W) its scored hard masks.
        masks: which masks pred is (protocol.MASK_SOURCES); soft is the same source's.
    Returns:
        n (or B, if fewer) tuples of (T, H, W, 3) uint8, (T, K, H, W), (T, S, H, W) bool,
        (T, S, H, W) float32.
    """
    n = min(n, len(batch["masks"]))
    size = tuple(batch["masks"].shape[-2:])
    patch_masks = out.grouping_masks if masks == "grouping" else out.decoder_masks
    soft = resize_patch_masks(patch_masks[:n].float(), size)
    rgb = batch["rgb"][:n]
    if tuple(rgb.shape[2:4]) != size:
        B, T, H, W, _ = rgb.shape
        frames = rgb.reshape(B * T, H, W, 3).permute(0, 3, 1, 2).float()
        frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
        rgb = frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(B, T, *size, 3)
    arrays = (rgb, batch["masks"][:n], pred[:n], soft)
    return [tuple(x[i].cpu().numpy() for x in arrays) for i in range(n)]


def _shrink(clip: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """At most _MAX_FRAMES frames (evenly spaced) and a side of about _MAX_SIDE (pixel stride)."""
    rgb, true, pred, soft = clip
    frames = np.unique(np.linspace(0, len(rgb) - 1, min(len(rgb), _MAX_FRAMES)).round().astype(int))
    stride = math.ceil(max(rgb.shape[1:3]) / _MAX_SIDE)
    return (
        rgb[frames, ::stride, ::stride],
        *(m[frames, :, ::stride, ::stride] for m in (true, pred, soft)),
    )


class ValPictures(Callback):
    """Draw the first clips of every `every`-th validation (rank 0) and log the picture.

    The validations of a fit are counted across resumed sessions (the count is in checkpoints);
    `trainer.validate` after fit draws unless that step was drawn already.

    Args:
        n_clips: clips per picture (0: none), each a labelled visualize.clip_grid, one above the other.
        every: draw every this many validations (1: each).
        directory: where the PNG files go for a logger without media (CSV).
    """

    def __init__(self, n_clips: int, every: int, directory: Path) -> None:
        self.n_clips = n_clips
        self.every = every
        self.directory = Path(directory)
        self._validations = 0
        self._drawn_step: int | None = None
        self._drawing = False
        self._clips: list[tuple[np.ndarray, ...]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._clips = []
        self._drawing = False
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.logger is None:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self._drawing = self._validations % self.every == 0
            self._validations += 1
        else:
            self._drawing = trainer.global_step != self._drawn_step
        self._drawing = self._drawing and self.n_clips > 0

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: dict[str, Any],
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        missing = self.n_clips - len(self._clips)
        # a datamodule's batches need not carry display frames ("rgb") or masks: nothing to draw
        if self._drawing and missing > 0 and {"rgb", "masks"} <= batch.keys():
            self._clips += first_clips(batch, outputs["output"], outputs["masks"], module.eval_masks, missing)

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._drawing or not self._clips:
            return
        grids = [clip_grid(*_shrink(clip), masks=module.eval_masks, scale=1) for clip in self._clips]
        picture, step = stack_pictures(grids), trainer.global_step
        if not tracking.log_media(trainer.logger, {MEDIA_KEY: picture}, step):
            save_png(picture, self.directory / f"step_{step:07d}.png")
        self._drawn_step = step
        self._clips = []

    def state_dict(self) -> dict[str, int]:
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._validations = state_dict["validations"]
