"""FG-ARI and mBO with the reference's options and quirks (videosaur.md §6).

Two layers:
- pure, batched functions on flattened points, ``true`` (B, N, C) and ``pred`` (B, N, S):
  :func:`adjusted_rand_index`, :func:`pairwise_iou`, :func:`per_object_iou`, :func:`matched_iou`;
- ``torchmetrics`` classes :class:`FGARI` and :class:`MBO`, updated with ground truth
  (B, T, K, H, W) and one-hot predictions (B, T, S, H, W). A video metric clusters the T·H·W points
  of a clip at once; an image metric scores each frame as its own sample. States are a float64 sum
  and a sample count reduced with ``sum``, so the DDP average is over all samples of all ranks.

Everything counts pixels through one contingency table N[c, s] = Σ_n true[n, c]·pred[n, s], built
by a float64 batched matmul: no Python loop over samples or objects (except scipy's Hungarian
solver, which only takes one matrix at a time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "MATCHINGS",
    "FGARI",
    "MBO",
    "adjusted_rand_index",
    "contingency_table",
    "fold_points",
    "matched_iou",
    "pairwise_iou",
    "per_object_iou",
]

MATCHINGS = ("overlap", "hungarian", "none")


def contingency_table(true: Tensor, pred: Tensor) -> Tensor:
    """Pixel counts shared by each GT channel and each slot.

    Args:
        true: (B, N, C) ground-truth masks over N points (bool or float).
        pred: (B, N, S) predicted masks over the same points.
    Returns:
        (B, C, S) float64, N[b, c, s] = Σ_n true[b, n, c]·pred[b, n, s].
    """
    # float64: exact integer counts far beyond float32's 2^24 points (long videos at 224²)
    return torch.einsum("bnc,bns->bcs", true.to(torch.float64), pred.to(torch.float64))


def adjusted_rand_index(true: Tensor, pred: Tensor) -> Tensor:
    """Adjusted Rand index per sample, SAVi's formula as ported by the reference.

    Points whose ``true`` row is all zero enter no count, so passing foreground channels only gives
    FG-ARI. When the index is undefined (denominator 0, e.g. a single cluster on both sides or no
    labelled point at all) it is 1.0, as in the reference.

    Args:
        true: (B, N, C) ground-truth masks (binary; a point may be in no channel).
        pred: (B, N, S) one-hot predicted masks.
    Returns:
        (B,) float64 ARI in [-1, 1] (can dip slightly below 0 for worse-than-chance partitions).
    """
    counts = contingency_table(true, pred)  # (B, C, S)
    true_sizes = counts.sum(2)  # (B, C)
    pred_sizes = counts.sum(1)  # (B, S)
    n_points = true_sizes.sum(1)  # (B,)
    rand_index = (counts * (counts - 1)).sum((1, 2))
    true_pairs = (true_sizes * (true_sizes - 1)).sum(1)
    pred_pairs = (pred_sizes * (pred_sizes - 1)).sum(1)
    expected = true_pairs * pred_pairs / (n_points * (n_points - 1)).clamp(min=1)
    maximum = (true_pairs + pred_pairs) / 2
    denominator = maximum - expected
    undefined = denominator == 0
    ari = (rand_index - expected) / torch.where(undefined, 1.0, denominator)
    return torch.where(undefined, 1.0, ari)


def pairwise_iou(true: Tensor, pred: Tensor) -> Tensor:
    """IoU of every GT channel with every slot, 0 where the union is empty.

    Args:
        true: (B, N, C) ground-truth masks.
        pred: (B, N, S) predicted masks.
    Returns:
        (B, C, S) float64 IoU = TP / (TP + FP + FN).
    """
    intersection = contingency_table(true, pred)  # (B, C, S)
    true_sizes = true.sum(1, dtype=torch.float64)  # (B, C)
    pred_sizes = pred.sum(1, dtype=torch.float64)  # (B, S): every point, labelled or not
    union = true_sizes[:, :, None] + pred_sizes[:, None, :] - intersection  # (B, C, S)
    empty = union == 0
    return torch.where(empty, 0.0, intersection / torch.where(empty, 1.0, union))


def _match(iou: Tensor, matching: str) -> Tensor:
    """IoU of each GT channel with the slot it is matched to, 0 if it gets none.

    Args:
        iou: (B, C, S) pairwise IoU.
        matching: "overlap" (best slot per object, slots may be shared: mBO), "hungarian"
            (one-to-one, maximising the total IoU) or "none" (GT channel c with slot c).
    Returns:
        (B, C) float64.
    """
    B, C, S = iou.shape
    if matching == "overlap":
        return iou.amax(2)
    if matching == "none":
        diagonal = iou.diagonal(dim1=1, dim2=2)  # (B, min(C, S))
        return F.pad(diagonal, (0, C - diagonal.shape[1]))
    if matching == "hungarian":
        # scipy solves one assignment at a time; C, S are small, so this loop costs microseconds
        rows, cols = zip(
            *(linear_sum_assignment(m, maximize=True) for m in iou.detach().cpu().numpy()),
            strict=True,
        )
        batch = np.repeat(np.arange(B), [len(r) for r in rows])
        rows_t, cols_t = (torch.from_numpy(np.concatenate(x)).to(iou.device) for x in (rows, cols))
        batch_t = torch.from_numpy(batch).to(iou.device)
        matched = torch.zeros(B, C, dtype=iou.dtype, device=iou.device)
        matched[batch_t, rows_t] = iou[batch_t, rows_t, cols_t]
        return matched
    raise ValueError(f"matching={matching!r} is not a matching; valid values are {MATCHINGS}")


def per_object_iou(true: Tensor, pred: Tensor, matching: str = "overlap") -> Tensor:
    """IoU of each GT channel with its matched slot (see :func:`_match` for the matchings).

    Args:
        true: (B, N, C) ground-truth masks.
        pred: (B, N, S) predicted masks.
        matching: one of :data:`MATCHINGS`.
    Returns:
        (B, C) float64; empty GT channels get 0.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"matching={matching!r} is not a matching; valid values are {MATCHINGS}")
    return _match(pairwise_iou(true, pred), matching)


def matched_iou(true: Tensor, pred: Tensor, matching: str = "overlap") -> Tensor:
    """Mean matched IoU per sample over its non-empty GT channels; with "overlap" this is mBO.

    Args:
        true: (B, N, C) ground-truth masks; all-zero channels are padding and are not averaged.
        pred: (B, N, S) predicted masks.
        matching: one of :data:`MATCHINGS`.
    Returns:
        (B,) float64, NaN for a sample without any non-empty GT channel (nothing to score).
    """
    n_objects = true.any(1).sum(1)  # (B,)
    total = per_object_iou(true, pred, matching).sum(1)
    return torch.where(n_objects > 0, total / n_objects.clamp(min=1), torch.nan)


def fold_points(masks: Tensor, video: bool) -> Tensor:
    """Flatten masks into the points one clustering is scored on.

    Args:
        masks: (B, T, C, H, W).
        video: one clustering per clip over its T·H·W points; otherwise every frame is a sample.
    Returns:
        (B, T·H·W, C) if ``video`` else (B·T, H·W, C). The image layout is a view (no copy).
    """
    B, T, C, H, W = masks.shape
    if video:
        return masks.transpose(1, 2).reshape(B, C, T * H * W).transpose(1, 2)  # (B, T·H·W, C)
    return masks.reshape(B * T, C, H * W).transpose(1, 2)  # (B·T, H·W, C)


class _Points(NamedTuple):
    true: Tensor  # (B', N, K') GT after the options, background dropped
    pred: Tensor  # (B', N, S)
    labelled: Tensor  # (B',) bool: any labelled point before the background was dropped


def _prepare(
    metric: str,
    true: Tensor,
    pred: Tensor,
    *,
    video: bool,
    ignore_background: bool,
    ignore_overlaps: bool,
    zero_pred_at_overlaps: bool,
) -> _Points:
    """Check the inputs, apply the reference's options and fold frames (videosaur.md §6).

    Args:
        metric: the calling class's name, for error messages.
        true: (B, T, K, H, W) binary ground truth (bool or 0/1).
        pred: (B, T, S, H, W) one-hot predictions.
        video, ignore_background, ignore_overlaps: as in :class:`FGARI`.
        zero_pred_at_overlaps: also zero the prediction where GT overlaps (IoU does, ARI doesn't).
    """
    if true.ndim != 5 or pred.ndim != 5:
        raise ValueError(
            f"{metric}.update(true, pred) takes true (B, T, K, H, W) and pred (B, T, S, H, W); got "
            f"shapes {tuple(true.shape)} and {tuple(pred.shape)} (images are 1-frame videos: "
            f"unsqueeze(1))"
        )
    if true.shape[:2] != pred.shape[:2] or true.shape[3:] != pred.shape[3:]:
        raise ValueError(
            f"{metric}.update: true {tuple(true.shape)} and pred {tuple(pred.shape)} differ in "
            f"B, T, H or W; resize the predicted masks to the GT resolution first"
        )
    if true.dtype != torch.bool:
        if not ((true == 0) | (true == 1)).all():
            raise ValueError(f"{metric}.update: true masks must be binary (0/1 or bool)")
        true = true.bool()
    if not (((pred == 0) | (pred == 1)).all() and (pred.sum(2) == 1).all()):
        raise ValueError(
            f"{metric}.update: pred masks must be one-hot over slots (axis 2); convert soft masks "
            f"with slotsweep.masks.hard_masks"
        )
    n_labels = true.sum(2, keepdim=True)  # (B, T, 1, H, W)
    if ignore_background and not (n_labels == 1).all():
        raise ValueError(
            f"{metric}(ignore_background=True) needs every pixel in exactly one GT channel, "
            f"channel 0 being the background (MOVi style); this GT has pixels in 0 or several "
            f"channels: use ignore_background=False for datasets without a background channel"
        )
    # [Q] the skip test comes before the background is dropped: in MOVi every sample counts
    labelled = fold_points(true, video).any(2).any(1)  # (B',)
    overlaps = n_labels > 1
    if ignore_overlaps:
        true = true & ~overlaps
        if zero_pred_at_overlaps:
            pred = pred * ~overlaps
    elif overlaps.any():
        raise ValueError(
            f"{metric}(ignore_overlaps=False): GT masks overlap at {int(overlaps.sum())} pixels; "
            f"use ignore_overlaps=True (COCO style) to leave overlapping pixels out"
        )
    if ignore_background:
        true = true[:, :, 1:]
    return _Points(fold_points(true, video), fold_points(pred, video), labelled)


def _mean(values: Tensor, total: Tensor) -> Tensor:
    # an empty average is undefined, not 0: a 0 would read as a real (terrible) score in sweeps
    return values / total if total > 0 else torch.full_like(values, torch.nan)


class FGARI(Metric):
    """Foreground adjusted Rand index, averaged over samples (reference ``VideoARI``/``ImageARI``).

    Args:
        video: one clustering per clip over all its frames (``VideoARI``); False scores each frame
            as a sample (``ImageARI`` with ``video_input``).
        ignore_background: GT channel 0 is background (MOVi): every pixel must be in exactly one
            channel, and channel 0 is dropped, so only foreground pixels are clustered.
        ignore_overlaps: pixels in several GT channels (COCO) are unlabelled instead of an error.
        count_background_only_samples: [Q] True as the reference: the "nothing to score" skip is
            tested before dropping the background, so a MOVi clip or frame with only background
            counts with ARI = 1.0 (videosaur.md §6, §10.11). False skips it like any empty sample.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        video: bool = True,
        ignore_background: bool = False,
        ignore_overlaps: bool = False,
        count_background_only_samples: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.video = video
        self.ignore_background = ignore_background
        self.ignore_overlaps = ignore_overlaps
        self.count_background_only_samples = count_background_only_samples
        self.add_state("values", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, true: Tensor, pred: Tensor) -> None:
        """Add a batch.

        Args:
            true: (B, T, K, H, W) binary GT masks.
            pred: (B, T, S, H, W) one-hot predicted masks.
        """
        points = _prepare(
            type(self).__name__,
            true,
            pred,
            video=self.video,
            ignore_background=self.ignore_background,
            ignore_overlaps=self.ignore_overlaps,
            zero_pred_at_overlaps=False,
        )
        scored = points.labelled
        if not self.count_background_only_samples:
            scored = scored & points.true.any(2).any(1)
        ari = adjusted_rand_index(points.true, points.pred)  # (B',)
        self.values += ari[scored].sum()
        self.total += scored.sum()

    def compute(self) -> Tensor:
        """Mean ARI over the scored samples; NaN if none was scored."""
        return _mean(self.values, self.total)


class MBO(Metric):
    """Mean best overlap (matched IoU), averaged over samples (reference ``VideoIoU``/``ImageIoU``).

    Per sample: Σ over non-empty GT objects of the IoU with the matched slot, divided by the number
    of non-empty GT objects. A video object is a tube over all the clip's frames. Samples with no
    object (after dropping the background and overlaps) are skipped.

    Args:
        video: spatio-temporal tubes per clip (``VideoIoU``); False scores each frame as a sample.
        ignore_background: as in :class:`FGARI`; channel 0 is dropped.
        ignore_overlaps: zero GT *and* prediction at pixels in several GT channels.
        matching: "overlap" (best slot per object: mBO), "hungarian" (one-to-one) or "none".
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        video: bool = True,
        ignore_background: bool = False,
        ignore_overlaps: bool = False,
        matching: str = "overlap",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if matching not in MATCHINGS:
            raise ValueError(f"MBO(matching={matching!r}): valid values are {MATCHINGS}")
        self.video = video
        self.ignore_background = ignore_background
        self.ignore_overlaps = ignore_overlaps
        self.matching = matching
        self.add_state("values", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, true: Tensor, pred: Tensor) -> None:
        """Add a batch.

        Args:
            true: (B, T, K, H, W) binary GT masks.
            pred: (B, T, S, H, W) one-hot predicted masks.
        """
        points = _prepare(
            type(self).__name__,
            true,
            pred,
            video=self.video,
            ignore_background=self.ignore_background,
            ignore_overlaps=self.ignore_overlaps,
            zero_pred_at_overlaps=True,
        )
        iou = matched_iou(points.true, points.pred, self.matching)  # (B',), NaN: nothing to score
        scored = ~iou.isnan()
        self.values += iou[scored].sum()
        self.total += scored.sum()

    def compute(self) -> Tensor:
        """Mean matched IoU over the scored samples; NaN if none was scored."""
        return _mean(self.values, self.total)
