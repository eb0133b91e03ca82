"""J&F (DAVIS): region similarity J and contour accuracy F of slots matched one-to-one to objects.

The reference's ``VideoJandF`` (videosaur.md §6), checked against its fixture values:
- J[k, s]: IoU of GT object k and slot s in each frame, averaged over the clip's frames;
- F[k, s]: per frame, the F-measure of the two boundaries, a boundary being the mask minus its
  erosion by a (2d+1)² square (pixels outside the frame count as outside the mask),
  d = max(1, round(0.02 · frame diagonal)); with P = |B_k ∩ B_s| / |B_s| and R = |B_k ∩ B_s| / |B_k|,
  F = 2PR / (P + R) = 2 |B_k ∩ B_s| / (|B_k| + |B_s|); averaged over frames;
- slots are matched to the clip's non-empty objects by Hungarian matching on (J + F) / 2, and a
  clip scores the mean over its objects; clips without objects are skipped.
A frame where neither mask (or boundary) has a pixel scores 1, as in DAVIS (the fixtures never
reach that case). Opt-in at validation (``eval_jandf``) and in src/eval.py (``jandf=true``): the
boundaries of every object and slot mask in every frame cost far more than the contingency
counts of FG-ARI/mBO (about 1.2 s of CPU for a MOVi validation batch of 16 x 6 frames at 224 px,
against 0.03 s for the six default metrics).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric

from slotsweep.evaluation.metrics import _channel_sums

__all__ = ["JandF", "edges", "jandf_per_sample"]


def _labels(masks: Tensor) -> Tensor:
    """(N, C, H, W) bool masks, at most one on per pixel -> (N, H, W) int64: c + 1, 0 where none."""
    N, C, H, W = masks.shape
    n_on, labels = _channel_sums(masks.reshape(N, C, H * W), first=1)  # one small matmul
    if bool((n_on > 1).any()):
        raise ValueError("J&F: masks overlap; leave overlapping pixels out first (ignore_overlaps=True)")
    return labels.to(torch.int64).view(N, H, W)  # 0 where no channel is on


def edges(labels: Tensor, d: int) -> Tensor:
    """Pixels within d of another label or of the frame's border: each label's boundary, the mask
    minus its (2d+1)² erosion with pixels outside the frame outside the mask.

    One map for all labels: a pixel is on its label's boundary iff its (2d+1)² square is not
    uniform, i.e. the square's max and min label differ (border padding holds label -1).

    Args:
        labels: (N, H, W) integer label maps.
        d: erosion radius in pixels.
    Returns:
        (N, H, W) bool.
    """
    k = 2 * d + 1
    x = F.pad(labels[:, None].to(torch.float32), (d, d, d, d), value=-1.0)  # (N, 1, H + 2d, W + 2d)

    def square_max(y: Tensor) -> Tensor:  # separable: a row max of column maxes
        return F.max_pool2d(F.max_pool2d(y, (k, 1), stride=1), (1, k), stride=1)

    return (square_max(x) != -square_max(-x))[:, 0]


def _pair_counts(index: Tensor, where: Tensor | None, n_bins: int) -> Tensor:
    """bincount of `index` (N, H, W) where `where` holds (everywhere if None), float64."""
    return torch.bincount(index.flatten() if where is None else index[where], minlength=n_bins).double()


def _per_frame_scores(true: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
    """J and F of every (object, slot) pair in every frame.

    Args:
        true: (N, K, H, W) bool GT masks of N frames, at most one per pixel.
        pred: (N, S, H, W) bool slot masks, at most one per pixel.
    Returns:
        J, F: (N, K, S) float64 each; 1 where both masks (boundaries) are empty.
    """
    N, K, H, W = true.shape
    S = pred.shape[1]
    d = max(1, round(0.02 * math.hypot(H, W)))
    true_labels, pred_labels = _labels(true), _labels(pred)  # (N, H, W), 0: no object / no slot
    true_edges, pred_edges = edges(true_labels, d), edges(pred_labels, d)
    frame = torch.arange(N, device=true.device)[:, None, None]
    index = (frame * (K + 1) + true_labels) * (S + 1) + pred_labels  # (frame, GT label, slot label)

    def table(where: Tensor | None) -> Tensor:  # (N, K + 1, S + 1) pixels of each pair
        return _pair_counts(index, where, N * (K + 1) * (S + 1)).view(N, K + 1, S + 1)

    pixels = table(None)
    inter = pixels[:, 1:, 1:]  # (N, K, S); label 0 (no object, no slot) is dropped
    true_sizes, pred_sizes = pixels.sum(2)[:, 1:, None], pixels.sum(1)[:, None, 1:]
    union = true_sizes + pred_sizes - inter
    j = torch.where(union > 0, inter / union.clamp(min=1), 1.0)
    on_true_edge, on_pred_edge = table(true_edges), table(pred_edges)
    inter = table(true_edges & pred_edges)[:, 1:, 1:]  # boundary pixels of both the object and the slot
    total = on_true_edge.sum(2)[:, 1:, None] + on_pred_edge.sum(1)[:, None, 1:]
    f = torch.where(total > 0, 2 * inter / total.clamp(min=1), 1.0)
    return j, f


def jandf_per_sample(true: Tensor, pred: Tensor) -> Tensor:
    """(J&F, J, F) of each clip, NaN for a clip without objects.

    Args:
        true: (B, T, K, H, W) bool GT masks; all-empty channels are padding, not objects.
        pred: (B, T, S, H, W) bool one-hot slot masks.
    Returns:
        (B, 3) float64.
    """
    B, T, K, H, W = true.shape
    S = pred.shape[2]
    j, f = _per_frame_scores(true.flatten(0, 1), pred.flatten(0, 1))  # (B·T, K, S)
    j, f = j.view(B, T, K, S).mean(1), f.view(B, T, K, S).mean(1)  # (B, K, S)
    present = true.flatten(3).any(3).any(1)  # (B, K): objects with a pixel in some frame
    scores = torch.full((B, 3), torch.nan, dtype=torch.float64)
    for b in range(B):  # one small assignment per clip, as in metrics._match
        objects = present[b].nonzero()[:, 0]
        if len(objects) == 0:
            continue
        jb, fb = j[b, objects].cpu().numpy(), f[b, objects].cpu().numpy()  # (K', S)
        rows, cols = linear_sum_assignment((jb + fb) / 2, maximize=True)
        matched_j = np.zeros(len(objects))
        matched_f = np.zeros(len(objects))
        matched_j[rows], matched_f[rows] = jb[rows, cols], fb[rows, cols]  # unmatched objects: 0
        scores[b] = torch.tensor(
            [(matched_j.mean() + matched_f.mean()) / 2, matched_j.mean(), matched_f.mean()]
        )
    return scores


class JandF(Metric):
    """Mean J&F, J and F over the clips that have objects (reference ``VideoJandF``).

    Args:
        ignore_background: GT channel 0 is background (MOVi) and is dropped.
        ignore_overlaps: pixels in several GT channels are left out of GT and prediction.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ignore_background: bool = False, ignore_overlaps: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_background = ignore_background
        self.ignore_overlaps = ignore_overlaps
        self.add_state("values", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, true: Tensor, pred: Tensor) -> None:
        """Add a batch: true (B, T, K, H, W) binary GT, pred (B, T, S, H, W) one-hot slot masks."""
        true, pred = true.bool(), pred.bool()
        if self.ignore_overlaps:
            overlaps = true.sum(2, keepdim=True) > 1  # (B, T, 1, H, W)
            true, pred = true & ~overlaps, pred & ~overlaps
        if self.ignore_background:
            true = true[:, :, 1:]
        scores = jandf_per_sample(true, pred).to(self.values.device)  # (B, 3)
        scored = ~scores[:, 0].isnan()
        self.values += scores[scored].sum(0)
        self.total += scored.sum()

    def compute(self) -> dict[str, Tensor]:
        """{"jandf", "j", "f"}: means over the scored clips; NaN if none was scored."""
        mean = self.values / self.total if self.total > 0 else torch.full_like(self.values, torch.nan)
        return dict(zip(("jandf", "j", "f"), mean, strict=True))
