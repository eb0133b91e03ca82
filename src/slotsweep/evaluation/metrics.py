"""FG-ARI and mBO with the reference's options and quirks (videosaur.md §6).

Both metrics only need the contingency table N[c, s]: how many points GT object c shares with slot s.
Two ways compute it, with the same formulas on top (as timm keeps a fused and a plain path):
- pure functions on flattened points, ``true`` (B, N, C) and ``pred`` (B, N, S), with a float64
  einsum: :func:`adjusted_rand_index`, :func:`pairwise_iou`, :func:`per_object_iou`,
  :func:`matched_iou`. Any binary masks, no checks; the plain path the tests trust.
- ``torchmetrics`` classes :class:`FGARI` and :class:`MBO`, updated with GT (B, T, K, H, W) and
  one-hot predictions (B, T, S, H, W). :func:`frame_counts` checks the inputs, reduces each frame to
  a GT label map and a slot map (checked inputs have one of each per pixel) and counts (label, slot)
  pairs with one ``bincount`` per frame; :func:`fold_frames` then turns frame counts into clip
  counts (video) or frame samples (image), so both variants share one code path. States are a
  float64 sum and a sample count reduced with ``sum``, so the DDP average is over all samples of
  all ranks.
- :class:`MaskMetrics` holds several of those classes with the same mask options and counts each
  batch once for all of them: the video and image variants of both metrics read the same frame
  counts (validation scores all four, so this is a quarter of the counting).
Counting is the cost. The checks ride on the reductions that find the labels and slots, so a
MOVi-sized batch reads the GT masks once and float32 predictions twice (each frame the second time
from the cache); boolean predictions are read once, as bytes, by a uint8 matmul (a quarter of
float32's traffic). Nothing loops over samples or objects in Python, except scipy's Hungarian solver
(one matrix a call); the counting loops over frames, a few C calls each.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchmetrics import Metric

from slotsweep.metric_names import METRICS

__all__ = [
    "make_metrics",
    "MATCHINGS",
    "FGARI",
    "MBO",
    "FrameCounts",
    "MaskMetrics",
    "adjusted_rand_index",
    "contingency_table",
    "fold_frames",
    "frame_counts",
    "matched_iou",
    "pairwise_iou",
    "per_object_iou",
]

MATCHINGS = ("overlap", "hungarian", "none")


# ---- formulas on contingency tables, shared by both paths ----------------------------------------


def _ari_from_table(table: Tensor) -> Tensor:
    """SAVi's ARI from a (B, C, S) float64 contingency table; 1.0 where the denominator is 0."""
    true_sizes = table.sum(2)  # (B, C)
    pred_sizes = table.sum(1)  # (B, S)
    n_points = true_sizes.sum(1)  # (B,)
    rand_index = (table * (table - 1)).sum((1, 2))
    true_pairs = (true_sizes * (true_sizes - 1)).sum(1)
    pred_pairs = (pred_sizes * (pred_sizes - 1)).sum(1)
    expected = true_pairs * pred_pairs / (n_points * (n_points - 1)).clamp(min=1)
    maximum = (true_pairs + pred_pairs) / 2
    denominator = maximum - expected
    undefined = denominator == 0
    ari = (rand_index - expected) / torch.where(undefined, 1.0, denominator)
    return torch.where(undefined, 1.0, ari)


def _iou_from_table(table: Tensor, true_sizes: Tensor, pred_sizes: Tensor) -> Tensor:
    """(B, C, S) IoU from intersections (B, C, S) and mask sizes (B, C), (B, S); 0 if union is 0."""
    union = true_sizes[:, :, None] + pred_sizes[:, None, :] - table  # (B, C, S)
    empty = union == 0
    return torch.where(empty, 0.0, table / torch.where(empty, 1.0, union))


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
        # scipy solves one assignment at a time; C and S are small, so this loop is cheap
        solutions = [linear_sum_assignment(m, maximize=True) for m in iou.detach().cpu().numpy()]
        batch = np.repeat(np.arange(B), [len(rows) for rows, _ in solutions])
        rows = np.concatenate([rows for rows, _ in solutions])
        cols = np.concatenate([cols for _, cols in solutions])
        batch, rows, cols = (torch.from_numpy(x).to(iou.device) for x in (batch, rows, cols))
        matched = torch.zeros(B, C, dtype=iou.dtype, device=iou.device)
        matched[batch, rows] = iou[batch, rows, cols]
        return matched
    raise ValueError(f"matching={matching!r} is not a matching; valid values are {MATCHINGS}")


def _mean_over_objects(per_object: Tensor, true_sizes: Tensor) -> Tensor:
    """(B,) mean of (B, C) per-object scores over non-empty objects; NaN without any object."""
    n_objects = (true_sizes > 0).sum(1)  # (B,): empty channels are padding, not objects
    mean = per_object.sum(1) / n_objects.clamp(min=1)
    return torch.where(n_objects > 0, mean, torch.nan)


# ---- plain path: pure functions on flattened points -----------------------------------------------


def contingency_table(true: Tensor, pred: Tensor) -> Tensor:
    """Points shared by each GT channel and each slot.

    Args:
        true: (B, N, C) ground-truth masks over N points (bool or float).
        pred: (B, N, S) predicted masks over the same points.
    Returns:
        (B, C, S) float64, N[b, c, s] = Σ_n true[b, n, c]·pred[b, n, s].
    """
    return torch.einsum("bnc,bns->bcs", true.to(torch.float64), pred.to(torch.float64))


def adjusted_rand_index(true: Tensor, pred: Tensor) -> Tensor:
    """Adjusted Rand index per sample, SAVi's formula as ported by the reference.

    Points whose ``true`` row is all zero enter no count, so passing foreground channels only gives
    FG-ARI. Where the index is undefined (denominator 0: one cluster on both sides, or no labelled
    point at all) it is 1.0, as in the reference.

    Args:
        true: (B, N, C) binary ground-truth masks (a point may be in no channel).
        pred: (B, N, S) one-hot predicted masks.
    Returns:
        (B,) float64 ARI, at most 1 (slightly below 0 for worse-than-chance partitions).
    """
    return _ari_from_table(contingency_table(true, pred))


def pairwise_iou(true: Tensor, pred: Tensor) -> Tensor:
    """IoU of every GT channel with every slot, 0 where the union is empty.

    Args:
        true: (B, N, C) ground-truth masks.
        pred: (B, N, S) predicted masks.
    Returns:
        (B, C, S) float64 IoU = TP / (TP + FP + FN).
    """
    true_sizes = true.sum(1, dtype=torch.float64)  # (B, C)
    pred_sizes = pred.sum(1, dtype=torch.float64)  # (B, S): every point, labelled or not
    return _iou_from_table(contingency_table(true, pred), true_sizes, pred_sizes)


def per_object_iou(true: Tensor, pred: Tensor, matching: str = "overlap") -> Tensor:
    """IoU of each GT channel with its matched slot.

    Args:
        true: (B, N, C) ground-truth masks.
        pred: (B, N, S) predicted masks.
        matching: "overlap" (best slot per object, slots may be shared), "hungarian" (one-to-one,
            scipy ``linear_sum_assignment`` maximising the total IoU) or "none" (channel c, slot c).
    Returns:
        (B, C) float64; empty GT channels and unmatched ones get 0.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"matching={matching!r} is not a matching; valid values are {MATCHINGS}")
    return _match(pairwise_iou(true, pred), matching)


def matched_iou(true: Tensor, pred: Tensor, matching: str = "overlap") -> Tensor:
    """Mean matched IoU per sample over its non-empty GT channels; with "overlap" this is mBO.

    Args:
        true: (B, N, C) ground-truth masks; all-zero channels are padding and are not averaged.
        pred: (B, N, S) predicted masks.
        matching: see :func:`per_object_iou`.
    Returns:
        (B,) float64, NaN for a sample without any non-empty GT channel (nothing to score).
    """
    true_sizes = true.sum(1, dtype=torch.float64)  # (B, C)
    return _mean_over_objects(per_object_iou(true, pred, matching), true_sizes)


# ---- metric classes: checked inputs, counted per frame -------------------------------------------


def fold_frames(per_frame: Tensor, video: bool) -> Tensor:
    """Turn per-frame counts into per-sample counts.

    Args:
        per_frame: (B, T, ...) counts of each frame.
        video: one sample per clip (counts add over T: the clip is one spatio-temporal clustering);
            otherwise every frame is its own sample.
    Returns:
        (B, ...) if ``video`` else (B·T, ...).
    """
    return per_frame.sum(1) if video else per_frame.flatten(0, 1)


class FrameCounts(NamedTuple):
    """One batch counted frame by frame, and the mask options its inputs were checked against.

    table: (B, T, K + 2, S) float64 points of frame (b, t) with GT label l in slot s; label 0 is
        unlabelled, c + 1 is GT channel c, K + 1 an overlap (see :func:`frame_counts`).
    """

    table: Tensor
    ignore_background: bool
    ignore_overlaps: bool


class _Counts(NamedTuple):
    table: Tensor  # (B', K', S) float64 points of GT object k in slot s (no background/overlaps)
    pred_sizes: Tensor  # (B', S) float64 points of slot s, overlap pixels left out
    labelled: Tensor  # (B',) bool: any labelled pixel, tested before dropping background/overlaps


def _channel_sums(masks: Tensor, first: int) -> tuple[Tensor, Tensor]:
    """Per pixel of boolean masks (N, C, P): the channels that are on, Σ_c m[c], and
    Σ_c (c + first)·m[c], which is the channel's number where exactly one is on.

    One matmul of a (2, C) weight matrix with the masks. On CPU below 255 channels, it multiplies the
    bools' bytes (a free view) in uint8: exact for the count, and for the number wherever at most one
    channel is on (elsewhere it wraps at 256, but the count tells those pixels apart). Otherwise (CUDA
    has no integer matmul) float32 copies, exact for such small integers. Returns two (N, P) tensors.
    """
    C = masks.shape[1]
    x = masks.view(torch.uint8) if masks.device.type == "cpu" and C < 255 else masks.to(torch.float32)
    weights = torch.stack([torch.ones(C), torch.arange(first, C + first)]).to(x)  # (2, C)
    return (weights @ x).unbind(1)


def _float_reductions(x: Tensor, weights: Tensor) -> tuple[int, Tensor, float, float]:
    """How many 16-bit words of float masks ``x`` (N, S, P) are nonzero; y = Σ_s weights[s]·x[s]
    per pixel, (N, P); and y's lowest and highest values.

    Elementwise, not a matmul: the weights are not small integers, so CUDA's TF32 would round them.
    """
    y = (x * weights[:, None]).sum(1)
    lowest, highest = torch.aminmax(y)
    return int(torch.count_nonzero(x.view(torch.int16))), y, float(lowest), float(highest)


def _float_reductions_by_frame(x: Tensor, weights: Tensor) -> tuple[int, Tensor, float, float]:
    """:func:`_float_reductions` on CPU: both reductions read a frame while it is in the cache.

    NumPy counts the words (vectorised, several times faster than ``torch.count_nonzero``) and BLAS
    gemv forms y (``torch.mv`` has no reduced-precision path, unlike batched matmuls).
    """
    N, S, P = x.shape
    words = x.view(torch.int16).numpy()
    y, extremes, nonzero = x.new_empty(N, P), x.new_empty(N, 2), 0
    for n in range(N):
        nonzero += int(np.count_nonzero(words[n]))
        torch.mv(x[n].T, weights, out=y[n])
        torch.aminmax(y[n], out=(extremes[n, 0], extremes[n, 1]))
    return nonzero, y, float(extremes[:, 0].min()), float(extremes[:, 1].max())


def _float_slots(x: Tensor) -> tuple[Tensor, bool]:
    """Each pixel's slot from float32/float64 masks (N, S, P), and whether they are one-hot.

    Two reductions, exact whatever the float32 matmul precision setting: the count of nonzero 16-bit
    words of x, as many as pixels for one-hot masks (1.0 is one nonzero word, 0x3F80 or 0x3FF0, and
    zero words), and y = Σ_s (s + 2^m)·x[s] per pixel with 2^m = 1/eps (2^23 for float32), which for
    a one-hot pixel is 2^m + its slot. Proof: y in [2^m, 2^m + S - 1] everywhere gives every pixel a
    nonzero entry; with as many nonzero words as pixels, each pixel holds exactly one, a float with a
    single nonzero word (so 8 significant bits at most) within S·2^-m of 1, and that is 1.0 alone.
    Masks failing this (or holding -0.0, whose sign bit is a nonzero word) get the reference's test,
    by value. Two reads instead of the three of a sum, a weighted sum and a count by value.

    Returns:
        (N, P) slot map, uint8 for up to 256 slots (y's low byte), else int64; and the verdict.
    """
    N, S, P = x.shape
    offset = 1 / torch.finfo(x.dtype).eps
    weights = torch.arange(S, dtype=x.dtype, device=x.device) + offset
    x = x.detach().contiguous()  # its 16-bit words in order
    reductions = _float_reductions_by_frame if x.device.type == "cpu" else _float_reductions
    nonzero, y, lowest, highest = reductions(x, weights)
    near_one = offset > S * 256  # S·2^-m < 2^-8: no other single-word float is that close to 1
    one_hot = near_one and nonzero == N * P and lowest >= offset and highest < offset + S
    if not one_hot:
        one_hot = bool(((x == 0) | (x == 1)).all()) and bool((x.sum(1) == 1).all())
    if S <= 256:
        return y.view(torch.int32 if x.dtype == torch.float32 else torch.int64).to(torch.uint8), one_hot
    return (y - offset).to(torch.int64), one_hot


def _as_index(values: Tensor, n: int) -> Tensor:
    """Whole numbers below ``n`` as an index map: uint8 if they fit (a quarter of int32's traffic)."""
    return values.to(torch.uint8 if n <= 256 else torch.int64)


def _slot_map(metric: str, pred: Tensor) -> Tensor:
    """Check that ``pred`` (B, T, S, H, W) is one-hot; return each pixel's slot, (B·T, H·W).

    A bool is 0 or 1, so one channel on per pixel (mass 1) is one-hot; other dtypes are read as
    floats (:func:`_float_slots`).
    """
    B, T, S, H, W = pred.shape
    x = pred.reshape(B * T, S, H * W)
    if x.dtype == torch.bool:
        mass, slots = _channel_sums(x, first=0)
        lowest, highest = torch.aminmax(mass)
        slots, one_hot = _as_index(slots, S), bool(lowest == 1) and bool(highest == 1)
    else:
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)  # exact for 0/1, and nonzeros stay nonzero
        slots, one_hot = _float_slots(x)
    if not one_hot:
        raise ValueError(
            f"{metric}.update: pred masks must be one-hot over slots (axis 2); convert soft masks "
            f"with slotsweep.evaluation.masks.hard_masks"
        )
    return slots


def _label_map(metric: str, true: Tensor, ignore_background: bool, ignore_overlaps: bool) -> Tensor:
    """Check ``true`` (B, T, K, H, W) against the options; return each pixel's GT label, (B·T, H·W).

    Label 0: unlabelled; c + 1: channel c; K + 1: an overlap (kept apart from unlabelled pixels: they
    still count for the skip test, and they leave the predicted areas, as in videosaur.md §6).
    """
    B, T, K, H, W = true.shape
    masks = true.reshape(B * T, K, H * W)
    if masks.dtype != torch.bool:
        if not ((masks == 0) | (masks == 1)).all():
            raise ValueError(f"{metric}.update: true masks must be binary (0/1 or bool)")
        masks = masks.bool()
    n_labels, labels = _channel_sums(masks, first=1)
    fewest, most = (int(x) for x in torch.aminmax(n_labels))
    if ignore_background and not fewest == most == 1:
        raise ValueError(
            f"{metric}(ignore_background=True) needs every pixel in exactly one GT channel, "
            f"channel 0 being the background (MOVi style); this GT has pixels in 0 or several "
            f"channels: use ignore_background=False for datasets without a background channel"
        )
    labels = _as_index(labels, K + 2)
    if most > 1:
        overlaps = n_labels > 1
        if not ignore_overlaps:
            raise ValueError(
                f"{metric}(ignore_overlaps=False): GT masks overlap at {int(overlaps.sum())} pixels; "
                f"use ignore_overlaps=True (COCO style) to leave overlapping pixels out"
            )
        labels = labels.masked_fill(overlaps, K + 1)  # the weighted sum means nothing there
    return labels


def _pair_counts(labels: Tensor, slots: Tensor, n_labels: int, n_slots: int) -> Tensor:
    """How many pixels of each frame have each (label, slot) pair: one ``bincount`` per frame.

    Only the labels that occur get bins. Where those pairs fit a byte, the pair index is computed in
    uint8 (modular arithmetic: the index wraps back below 256), and where two such ranges fit, odd
    pixels count in a second histogram, so that a run of equal pixels does not make every increment
    wait for the previous one (about 1.4x faster).

    Args:
        labels, slots: (N, P) index maps, below ``n_labels`` and ``n_slots``.
    Returns:
        (N, n_labels, n_slots) int64.
    """
    N, P = labels.shape
    lowest, highest = (int(v) for v in torch.aminmax(labels))
    n_bins = (highest - lowest + 1) * n_slots
    if labels.dtype == slots.dtype == torch.uint8 and n_bins <= 256:
        width = 128 if n_bins <= 128 else 256  # one histogram's bins
        shift = (torch.arange(P, device=labels.device) % 2 * width - lowest * n_slots) % 256
        index = labels * n_slots
        index += slots
        index += shift.to(torch.uint8)
        counts = torch.stack([torch.bincount(frame, minlength=256) for frame in index])
        counts = counts.view(N, -1, width).sum(1)[:, :n_bins]
    else:
        index = (labels.to(torch.int64) - lowest) * n_slots + slots
        counts = torch.stack([torch.bincount(frame, minlength=n_bins) for frame in index])
    return F.pad(counts.view(N, -1, n_slots), (0, 0, lowest, n_labels - 1 - highest))


def frame_counts(
    metric: str, true: Tensor, pred: Tensor, ignore_background: bool, ignore_overlaps: bool
) -> FrameCounts:
    """Check the inputs against the reference's options and count every frame (videosaur.md §6).

    Once checked, every pixel has one slot and one GT label, so the contingency table is a histogram
    of (GT label, slot) pairs per frame: a ``bincount`` of a uint8 map (for up to 256 pairs), much
    cheaper on CPU than a matmul of float copies of the masks.

    Args:
        metric: the caller's name, for error messages.
        true: (B, T, K, H, W) binary ground truth (bool or 0/1).
        pred: (B, T, S, H, W) one-hot predictions (bool is the cheapest to read).
        ignore_background, ignore_overlaps: as in :class:`FGARI`.
    """
    if true.ndim != 5 or pred.ndim != 5:
        raise ValueError(
            f"{metric}.update(true, pred) takes true (B, T, K, H, W) and pred (B, T, S, H, W); got "
            f"shapes {tuple(true.shape)} and {tuple(pred.shape)} (images are 1-frame videos: "
            f"unsqueeze(1))"
        )
    B, T, K, H, W = true.shape
    S = pred.shape[2]
    if pred.shape != (B, T, S, H, W):
        raise ValueError(
            f"{metric}.update: true {tuple(true.shape)} and pred {tuple(pred.shape)} differ in "
            f"B, T, H or W; resize the predicted masks to the GT resolution first"
        )
    slots = _slot_map(metric, pred)  # (B·T, H·W)
    labels = _label_map(metric, true, ignore_background, ignore_overlaps)  # (B·T, H·W)
    per_frame = _pair_counts(labels, slots, K + 2, S)  # (B·T, K + 2, S)
    return FrameCounts(per_frame.view(B, T, K + 2, S).to(torch.float64), ignore_background, ignore_overlaps)


def _sample_counts(metric: FGARI | MBO, true: Tensor, pred: Tensor, counts: FrameCounts | None) -> _Counts:
    """A metric's per-sample counts: from ``counts`` when given, else counted from the masks."""
    name = type(metric).__name__
    options = (metric.ignore_background, metric.ignore_overlaps)
    if counts is None:
        counts = frame_counts(name, true, pred, *options)
    elif (counts.ignore_background, counts.ignore_overlaps) != options:
        raise ValueError(
            f"{name}.update: counts made with (ignore_background, ignore_overlaps)="
            f"{(counts.ignore_background, counts.ignore_overlaps)}, but the metric has {options}"
        )
    per_sample = fold_frames(counts.table, metric.video)  # (B', K+2, S)
    K = per_sample.shape[1] - 2
    first = 2 if counts.ignore_background else 1
    return _Counts(
        table=per_sample[:, first : K + 1],
        pred_sizes=per_sample[:, : K + 1].sum(1),  # overlap pixels (last row) leave the prediction
        # [Q] tested before dropping background and overlaps: every MOVi sample counts, and a COCO
        # image whose annotations all overlap counts too (videosaur.md §6, fixtures README (a))
        labelled=per_sample[:, 1:].sum((1, 2)) > 0,
    )


def _mean(values: Tensor, total: Tensor) -> Tensor:
    # an empty average is undefined, not 0: a 0 would read as a real (terrible) score in a sweep
    return values / total if total > 0 else torch.full_like(values, torch.nan)


class FGARI(Metric):
    """Foreground adjusted Rand index, averaged over samples (reference ``VideoARI``/``ImageARI``).

    Args:
        video: one clustering per clip over all its frames (``VideoARI``); False scores each frame
            as a sample (``ImageARI`` with ``video_input``).
        ignore_background: GT channel 0 is background (MOVi): every pixel must be in exactly one
            channel, and channel 0 is dropped, so only foreground pixels are clustered.
        ignore_overlaps: pixels in several GT channels (COCO) become unlabelled instead of an error.
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

    def update(self, true: Tensor, pred: Tensor, counts: FrameCounts | None = None) -> None:
        """Add a batch.

        Args:
            true: (B, T, K, H, W) binary GT masks.
            pred: (B, T, S, H, W) one-hot predicted masks.
            counts: this batch's :func:`frame_counts` when the caller has them already (then true
                and pred are not read again); :class:`MaskMetrics` shares them among its metrics.
        """
        counts = _sample_counts(self, true, pred, counts)
        scored = counts.labelled
        if not self.count_background_only_samples:
            scored = scored & (counts.table.sum((1, 2)) > 0)
        ari = _ari_from_table(counts.table)  # (B',)
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
        ignore_overlaps: leave pixels in several GT channels out of both GT and prediction.
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

    def update(self, true: Tensor, pred: Tensor, counts: FrameCounts | None = None) -> None:
        """Add a batch.

        Args:
            true: (B, T, K, H, W) binary GT masks.
            pred: (B, T, S, H, W) one-hot predicted masks.
            counts: this batch's :func:`frame_counts`, as in :meth:`FGARI.update`.
        """
        counts = _sample_counts(self, true, pred, counts)
        true_sizes = counts.table.sum(2)  # (B', K'): each labelled pixel is in exactly one slot
        iou = _iou_from_table(counts.table, true_sizes, counts.pred_sizes)
        mbo = _mean_over_objects(_match(iou, self.matching), true_sizes)  # (B',) NaN: skipped
        scored = ~mbo.isnan()
        self.values += mbo[scored].sum()
        self.total += scored.sum()

    def compute(self) -> Tensor:
        """Mean matched IoU over the scored samples; NaN if none was scored."""
        return _mean(self.values, self.total)


class MaskMetrics(nn.ModuleDict):
    """Named FG-ARI/mBO metrics that count each batch once for all of them.

    A ModuleDict of the metrics (iterate, index, ``.to(device)``; each member can still be updated on
    its own), plus ``update``, ``compute`` and ``reset`` over all members.

    Args:
        metrics: {name: FGARI or MBO}, in logging order, all with the same ``ignore_background`` and
            ``ignore_overlaps`` (the options decide the counts).
    """

    def __init__(self, metrics: dict[str, FGARI | MBO]) -> None:
        options = {(m.ignore_background, m.ignore_overlaps) for m in metrics.values()}
        if len(options) != 1:
            raise ValueError(
                f"MaskMetrics needs at least one metric, all with the same (ignore_background, "
                f"ignore_overlaps); got {sorted(options)}"
            )
        super().__init__()
        for name, metric in metrics.items():  # not ModuleDict.update: `update` adds a batch here,
            self[name] = metric  # as in torchmetrics' MetricCollection (also a ModuleDict)
        self.ignore_background, self.ignore_overlaps = options.pop()

    def update(self, true: Tensor, pred: Tensor) -> None:
        """Count the batch once and add it to every metric.

        Args:
            true: (B, T, K, H, W) binary GT masks.
            pred: (B, T, S, H, W) one-hot predicted masks.
        """
        name = type(self).__name__
        counts = frame_counts(name, true, pred, self.ignore_background, self.ignore_overlaps)
        for metric in self.values():
            metric.update(true, pred, counts=counts)

    def compute(self) -> dict[str, Tensor]:
        """{name: value} of every metric (NaN where it scored no sample)."""
        return {name: metric.compute() for name, metric in self.items()}

    def reset(self) -> None:
        for metric in self.values():
            metric.reset()


def make_metrics(ignore_background: bool, ignore_overlaps: bool) -> MaskMetrics:
    """A fresh {name: metric} set for the registry's metrics (metric_names.METRICS) with the
    dataset's mask conventions; logged as val/<name> on the decoder masks (the official ones).

    Its `update` counts a batch once for all of them (they differ only in how they read the counts).
    """
    conventions = dict(ignore_background=ignore_background, ignore_overlaps=ignore_overlaps)
    return MaskMetrics({name: spec.build(**conventions) for name, spec in METRICS.items()})
