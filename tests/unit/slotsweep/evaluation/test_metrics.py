"""FG-ARI and mBO: parity with the reference fixtures, and independent references (sklearn, loops)."""

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score
from torchmetrics.utilities.data import dim_zero_sum

from slotsweep.evaluation.metrics import (
    FGARI,
    MBO,
    MaskMetrics,
    _float_reductions,
    _float_reductions_by_frame,
    adjusted_rand_index,
    frame_counts,
    make_metrics,
    matched_iou,
    pairwise_iou,
    per_object_iou,
)

TOL = {"rtol": 0.0, "atol": 1e-6}

# every metric stored in shared/reference/fixtures/metrics.pt (J&F: evaluation/test_jandf.py)
REFERENCE_METRICS = {
    "movi": [
        "video_ari",
        "image_ari",
        "video_mbo",
        "image_mbo",
        "video_iou_hungarian",
        "video_ari_with_bg",
        "video_mbo_with_bg",
    ],
    "ytvis": [
        "video_ari",
        "image_ari",
        "video_mbo",
        "image_mbo",
        "video_iou_hungarian",
        "image_iou_hungarian",
    ],
    "coco": ["image_ari", "image_mbo", "image_iou_hungarian"],
}
CHECKED_ELSEWHERE = {"video_jandf"}


# ---- reference parity ------------------------------------------------------------------------


@pytest.fixture
def metrics_pt(reference: Callable[[str], Any]) -> dict:
    return reference("metrics.pt")


def test_every_reference_metric_is_checked(metrics_pt: dict) -> None:
    for dataset, names in REFERENCE_METRICS.items():
        stored = {key.split(".")[0] for key in metrics_pt[dataset] if "." in key}
        assert stored - CHECKED_ELSEWHERE == set(names), dataset


@pytest.mark.parametrize(
    ("dataset", "conventions"), [("movi", (True, False)), ("ytvis", (False, False)), ("coco", (False, True))]
)
def test_named_miou_is_the_reference_hungarian_iou(
    metrics_pt: dict, dataset: str, conventions: tuple
) -> None:
    """val/video_miou and val/image_miou, as validation logs them, are the reference's Hungarian IoU."""
    metrics = make_metrics(*conventions)
    metrics.update(*_inputs(metrics_pt, dataset))
    values = metrics.compute()
    for name in ("video_miou", "image_miou"):
        expected = metrics_pt[dataset].get(f"{name.replace('miou', 'iou_hungarian')}.value")
        if expected is not None:  # movi has the video variant only, coco the image one
            torch.testing.assert_close(values[name], expected, **TOL)


def _build(config: dict) -> FGARI | MBO:
    """Our metric for one of the reference's metric configs (`m.config` in metrics.pt)."""
    kind = config["class"]
    # the reference's Image* metrics with video_input fold frames into the batch: video=False;
    # COCO's ImageARI/ImageIoU take (B, K, H, W), fed here as 1-frame videos
    options = {
        "video": kind.startswith("Video"),
        "ignore_background": config.get("ignore_background", False),
        "ignore_overlaps": config.get("ignore_overlaps", False),
    }
    if kind in ("VideoARI", "ImageARI"):
        return FGARI(**options)
    if kind in ("VideoIoU", "ImageIoU"):
        return MBO(matching=config["matching"], **options)
    raise AssertionError(f"no mapping for reference metric {kind}")


def _inputs(metrics_pt: dict, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    true, pred = metrics_pt[dataset]["true"], metrics_pt[dataset]["pred"]
    if true.ndim == 4:  # COCO images (B, K, H, W)
        true, pred = true.unsqueeze(1), pred.unsqueeze(1)
    return true, pred


def _score(config: dict, true: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    metric = _build(config)
    metric.update(true, pred)
    return metric.compute()


@pytest.mark.parametrize(
    ("dataset", "name"), [(dataset, name) for dataset, names in REFERENCE_METRICS.items() for name in names]
)
def test_matches_reference(metrics_pt: dict, dataset: str, name: str) -> None:
    entries = metrics_pt[dataset].items()
    expected = {k.split(".", 1)[1]: v for k, v in entries if k.split(".")[0] == name}
    config = expected["config"]
    true, pred = _inputs(metrics_pt, dataset)
    metric = _build(config)
    metric.update(true, pred)
    torch.testing.assert_close(metric.compute(), expected["value"], **TOL)
    torch.testing.assert_close(metric.values, expected["state_values"], **TOL)
    assert int(metric.total) == int(expected["state_total"])

    B, T = true.shape[:2]
    per_sample = torch.stack([_score(config, true[b : b + 1], pred[b : b + 1]) for b in range(B)])
    torch.testing.assert_close(per_sample, expected["per_sample"], equal_nan=True, **TOL)
    if "per_frame" in expected:
        per_frame = torch.stack(
            [
                torch.stack(
                    [_score(config, true[b : b + 1, t : t + 1], pred[b : b + 1, t : t + 1]) for t in range(T)]
                )
                for b in range(B)
            ]
        )
        torch.testing.assert_close(per_frame, expected["per_frame"], equal_nan=True, **TOL)


def test_functional_matches_reference(metrics_pt: dict) -> None:
    data = metrics_pt["functional"]
    true, pred = data["true_flat_movi_nobg"], data["pred_flat_movi"]
    torch.testing.assert_close(adjusted_rand_index(true, pred), data["adjusted_rand_index"], **TOL)
    torch.testing.assert_close(pairwise_iou(true, pred), data["pairwise_iou"], **TOL)
    torch.testing.assert_close(per_object_iou(true, pred, "overlap"), data["iou_overlap_matching"], **TOL)


def test_background_only_sample_quirk_is_a_flag(metrics_pt: dict) -> None:
    """MOVi s3 is background only: counted with ARI 1.0 by default, skipped when fixed."""
    true, pred = _inputs(metrics_pt, "movi")
    per_sample = metrics_pt["movi"]["video_ari.per_sample"]
    fixed = FGARI(video=True, ignore_background=True, count_background_only_samples=False)
    fixed.update(true, pred)
    assert int(fixed.total) == 3
    torch.testing.assert_close(fixed.compute(), per_sample[:3].mean(), **TOL)


# ---- independent references on random masks --------------------------------------------------


def _random_masks(
    seed: int, B: int = 3, T: int = 4, K: int = 5, S: int = 6, H: int = 6, W: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    """MOVi-style GT (channel 0 background, one channel per pixel) and correlated one-hot slots."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (B, T, H, W), generator=g)
    noise = torch.randint(0, S, (B, T, H, W), generator=g)
    slots = torch.where(torch.rand(B, T, H, W, generator=g) < 0.6, labels % S, noise)
    true = F.one_hot(labels, K).movedim(-1, 2).bool()  # (B, T, K, H, W)
    pred = F.one_hot(slots, S).movedim(-1, 2).float()  # (B, T, S, H, W)
    return true, pred


def _points(masks: torch.Tensor, video: bool) -> np.ndarray:
    """(B, T, C, H, W) -> (samples, points, C) numpy, written independently of the library."""
    B, T, C, H, W = masks.shape
    flat = masks.permute(0, 1, 3, 4, 2).numpy()  # (B, T, H, W, C)
    return flat.reshape(B, T * H * W, C) if video else flat.reshape(B * T, H * W, C)


def _sklearn_fg_ari(true: np.ndarray, pred: np.ndarray) -> float:
    foreground = true.any(1)
    return adjusted_rand_score(true[foreground].argmax(1), pred[foreground].argmax(1))


def _loop_mbo(true: np.ndarray, pred: np.ndarray) -> float:
    best = []
    for c in range(true.shape[1]):
        if true[:, c].any():
            ious = []
            for s in range(pred.shape[1]):
                inter = np.logical_and(true[:, c], pred[:, s]).sum()
                union = np.logical_or(true[:, c], pred[:, s]).sum()
                ious.append(inter / union if union else 0.0)
            best.append(max(ious))
    return float(np.mean(best)) if best else float("nan")


def _brute_force_hungarian(true: np.ndarray, pred: np.ndarray) -> float:
    """Best one-to-one assignment by trying every injection of GT channels into slots."""
    C, S = true.shape[1], pred.shape[1]
    iou = pairwise_iou(torch.from_numpy(true)[None], torch.from_numpy(pred)[None])[0].numpy()
    best = max(sum(iou[c, s] for c, s in enumerate(perm)) for perm in itertools.permutations(range(S), C))
    n_objects = true.any(0).sum()
    return best / n_objects


@pytest.mark.parametrize("video", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_fg_ari_matches_sklearn(video: bool, seed: int) -> None:
    true, pred = _random_masks(seed)
    true_points, pred_points = _points(true[:, :, 1:], video), _points(pred, video)
    expected = [_sklearn_fg_ari(t, p) for t, p in zip(true_points, pred_points, strict=True)]
    functional = adjusted_rand_index(torch.from_numpy(true_points), torch.from_numpy(pred_points))
    np.testing.assert_allclose(functional.numpy(), expected, atol=1e-9)
    metric = FGARI(video=video, ignore_background=True)
    metric.update(true, pred)
    np.testing.assert_allclose(float(metric.compute()), np.mean(expected), atol=1e-9)
    assert int(metric.total) == len(expected)


@pytest.mark.parametrize("video", [True, False])
def test_mbo_matches_loop(video: bool) -> None:
    true, pred = _random_masks(2, K=6)
    absent = true[0, :, 3].clone()
    true[0, :, 3] = False  # an absent object: a padded channel, not averaged
    true[0, :, 0] |= absent
    true_points, pred_points = _points(true[:, :, 1:], video), _points(pred, video)
    expected = [_loop_mbo(t, p) for t, p in zip(true_points, pred_points, strict=True)]
    functional = matched_iou(torch.from_numpy(true_points), torch.from_numpy(pred_points))
    np.testing.assert_allclose(functional.numpy(), expected, atol=1e-9)
    metric = MBO(video=video, ignore_background=True)
    metric.update(true, pred)
    np.testing.assert_allclose(float(metric.compute()), np.nanmean(expected), atol=1e-9)


def test_hungarian_and_diagonal_matching_match_brute_force() -> None:
    true, pred = _random_masks(3, K=4, S=5)
    true_points, pred_points = _points(true, True), _points(pred, True)
    t, p = torch.from_numpy(true_points), torch.from_numpy(pred_points)
    expected = [_brute_force_hungarian(a, b) for a, b in zip(true_points, pred_points, strict=True)]
    np.testing.assert_allclose(matched_iou(t, p, "hungarian").numpy(), expected, atol=1e-9)
    iou = pairwise_iou(t, p)
    np.testing.assert_allclose(
        matched_iou(t, p, "none").numpy(), iou.diagonal(dim1=1, dim2=2).mean(1).numpy(), atol=1e-9
    )
    # one-to-one can never beat best-overlap, which may give one slot to several objects
    assert (matched_iou(t, p, "hungarian") <= matched_iou(t, p, "overlap") + 1e-12).all()


def test_class_path_matches_functions_with_overlaps_and_unlabelled_pixels() -> None:
    """COCO-style GT: the bincount path of the classes against the plain float64 einsum path."""
    g = torch.Generator().manual_seed(4)
    true = torch.rand(2, 3, 4, 9, 8, generator=g) < 0.3  # overlaps and unlabelled pixels
    pred = F.one_hot(torch.randint(0, 5, (2, 3, 9, 8), generator=g), 5).movedim(-1, 2).float()
    overlaps = true.sum(2, keepdim=True) > 1
    clean_true, clean_pred = true & ~overlaps, pred * ~overlaps
    for video in (True, False):
        t, p = _points(clean_true, video), _points(pred, video)
        labelled = torch.from_numpy(_points(true, video)).any(2).any(1)
        ari = adjusted_rand_index(torch.from_numpy(t), torch.from_numpy(p))[labelled]
        mbo = matched_iou(torch.from_numpy(t), torch.from_numpy(_points(clean_pred, video)))
        fg_ari, m_bo = FGARI(video=video, ignore_overlaps=True), MBO(video, ignore_overlaps=True)
        fg_ari.update(true, pred)
        m_bo.update(true, pred)
        torch.testing.assert_close(fg_ari.compute(), ari.mean(), **TOL)
        torch.testing.assert_close(m_bo.compute(), mbo.nanmean(), **TOL)


def test_many_gt_channels_use_wide_label_counts() -> None:
    """Above 254 GT channels the per-pixel label no longer fits uint8."""
    g = torch.Generator().manual_seed(5)
    K, S = 300, 7
    labels = torch.randint(0, K, (2, 2, 12, 12), generator=g)
    true = F.one_hot(labels, K).movedim(-1, 2).bool()
    pred = F.one_hot(labels % S, S).movedim(-1, 2).float()
    t, p = torch.from_numpy(_points(true, True)), torch.from_numpy(_points(pred, True))
    metric = FGARI(video=True)
    metric.update(true, pred)
    torch.testing.assert_close(metric.compute(), adjusted_rand_index(t, p).mean(), **TOL)


@pytest.mark.parametrize(
    ("K", "S"),
    [(4, 6), (12, 16), (20, 16)],  # pair index: two byte histograms, one byte histogram, int64
)
def test_frame_counts_match_a_brute_force_table(K: int, S: int) -> None:
    """Every (frame, label, slot) count, with unlabelled and overlapping pixels (COCO style)."""
    g = torch.Generator().manual_seed(13)
    true = torch.rand(2, 3, K, 5, 9, generator=g) < 1.2 / K
    pred = F.one_hot(torch.randint(0, S, (2, 3, 5, 9), generator=g), S).movedim(-1, 2).float()
    n_on = true.sum(2)  # (B, T, H, W)
    labels = torch.where(n_on == 1, true.int().argmax(2) + 1, torch.where(n_on == 0, 0, K + 1))
    expected = torch.einsum(
        "btlhw,btshw->btls", F.one_hot(labels, K + 2).movedim(-1, 2).double(), pred.double()
    )
    counts = frame_counts("test", true, pred, ignore_background=False, ignore_overlaps=True)
    assert (n_on == 0).any() and (n_on > 1).any()
    torch.testing.assert_close(counts.table, expected, rtol=0, atol=0)


def test_float_reductions_by_frame_match_the_elementwise_path() -> None:
    """The CPU path (NumPy count, BLAS gemv per frame) against the elementwise one (CUDA's)."""
    _, pred = _random_masks(14)
    one_hot = pred.flatten(3).flatten(0, 1).contiguous()  # (N, S, P)
    soft = torch.rand(one_hot.shape, generator=torch.Generator().manual_seed(14))
    for x, exact in [(one_hot, True), (one_hot.double(), True), (soft, False)]:
        # one-hot: one nonzero term per pixel, so no rounding; soft: the summation orders differ
        weights = torch.arange(x.shape[1], dtype=x.dtype) + 1 / torch.finfo(x.dtype).eps
        n, y, lowest, highest = _float_reductions_by_frame(x, weights)
        expected = _float_reductions(x, weights)
        assert n == expected[0]
        torch.testing.assert_close(y, expected[1], **({"rtol": 0, "atol": 0} if exact else {}))
        torch.testing.assert_close(torch.tensor([lowest, highest]), torch.tensor(expected[2:]))


def test_reduced_float32_matmul_precision_changes_nothing() -> None:
    """The slot weights (2^23 + s) do not survive bf16/TF32: the CPU path must not use such a matmul."""
    true, pred = _random_masks(15)
    expected = frame_counts("test", true, pred, ignore_background=True, ignore_overlaps=False).table
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        got = frame_counts("test", true, pred, ignore_background=True, ignore_overlaps=False).table
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(got, expected)


# ---- edge cases and semantics ----------------------------------------------------------------


def _one_hot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(labels, n).movedim(-1, 2)


def test_single_object_cases() -> None:
    labels = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    labels[..., :2, :2] = 1  # one object on background
    true = _one_hot(labels, 2).bool()
    perfect = _one_hot(labels, 3).float()
    split = _one_hot(torch.where(labels == 1, torch.arange(4) % 2 + 1, 0), 3).float()
    for pred, ari, mbo in [(perfect, 1.0, 1.0), (split, 0.0, 0.5)]:
        fg_ari, m_bo = FGARI(ignore_background=True), MBO(ignore_background=True)
        fg_ari.update(true, pred)
        m_bo.update(true, pred)
        assert float(fg_ari.compute()) == pytest.approx(ari)
        assert float(m_bo.compute()) == pytest.approx(mbo)


def test_empty_samples_are_skipped_and_empty_average_is_nan() -> None:
    true = torch.zeros(2, 1, 3, 4, 4, dtype=torch.bool)  # YT-VIS style: nothing annotated
    pred = _one_hot(torch.zeros(2, 1, 4, 4, dtype=torch.long), 2).float()
    for metric in (FGARI(), MBO()):
        with pytest.warns(UserWarning, match="before the ``update``"):
            assert torch.isnan(metric.compute())  # never updated
        metric.update(true, pred)
        assert int(metric.total) == 0
        assert torch.isnan(metric.compute())
    assert torch.isnan(matched_iou(true[:, 0].flatten(2).mT, pred[:, 0].flatten(2).mT)).all()
    # with no labelled point at all, ARI itself is 1.0 (undefined); the metric's skip hides it
    assert adjusted_rand_index(true[:, 0].flatten(2).mT, pred[:, 0].flatten(2).mT).eq(1).all()


def test_video_and_image_variants_differ_on_identity_switch() -> None:
    """Two objects swap slots between frames: each frame is perfect, the clip is not."""
    labels = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    labels[..., :, :2] = 1
    labels[..., :, 2:] = 2
    slots = labels.clone()
    slots[:, 1] = torch.where(labels[:, 1] == 1, 2, torch.where(labels[:, 1] == 2, 1, 0))
    true, pred = _one_hot(labels, 3).bool(), _one_hot(slots, 3).float()
    # video: each tube shares 8 of 16 pixels with both slots (IoU 8/24); ARI = -1/30 by hand
    for video, expected_ari, expected_mbo in [(False, 1.0, 1.0), (True, -1 / 30, 1 / 3)]:
        fg_ari, m_bo = FGARI(video, ignore_background=True), MBO(video, ignore_background=True)
        fg_ari.update(true, pred)
        m_bo.update(true, pred)
        assert int(fg_ari.total) == (1 if video else 2)
        assert float(fg_ari.compute()) == pytest.approx(expected_ari, abs=1e-9)
        assert float(m_bo.compute()) == pytest.approx(expected_mbo, abs=1e-9)


@pytest.mark.parametrize("metric_class", [FGARI, MBO])
def test_summed_states_of_two_ranks_equal_one_metric(metric_class: type) -> None:
    """What DDP's sum reduction does: states of two shards add up to the whole batch's."""
    true, pred = _random_masks(6, B=4)
    whole, first, second = (metric_class(video=False, ignore_background=True) for _ in range(3))
    whole.update(true, pred)
    first.update(true[:2], pred[:2])
    second.update(true[2:], pred[2:])
    # dist_reduce_fx="sum": torchmetrics sums the gathered states of all ranks
    assert set(first._reductions.values()) == {dim_zero_sum}
    first.values = dim_zero_sum(torch.stack([first.values, second.values]))
    first.total = dim_zero_sum(torch.stack([first.total, second.total]))
    torch.testing.assert_close(first.compute(), whole.compute(), rtol=0, atol=1e-12)
    assert first.values.dtype == torch.float64


def test_other_pred_dtypes_give_the_same_result() -> None:
    true, pred = _random_masks(7)
    results = []
    negative_zeros = torch.where(pred == 0, -0.0, 1.0)  # zeros by value, but not by their bits
    for p in (pred, pred.double(), pred.bool(), pred.half(), pred.long(), negative_zeros):
        metric = MBO(ignore_background=True)
        metric.update(true, p)
        results.append(metric.compute())
    assert all(result == results[0] for result in results)


# ---- input checks ----------------------------------------------------------------------------


def _poke(pred: torch.Tensor, values: list[float]) -> torch.Tensor:
    """A copy of ``pred`` whose first pixel has the given slot values."""
    poked = pred.clone()
    poked[0, 0, :, 0, 0] = torch.tensor(values, dtype=pred.dtype)
    return poked


@pytest.mark.parametrize("metric_class", [FGARI, MBO])
def test_bad_inputs_raise_clear_errors(metric_class: type) -> None:
    true, pred = _random_masks(8)
    name = metric_class.__name__
    cases = [
        (true.float() * 2, pred, "true masks must be binary"),
        (true, pred * 0.5, "one-hot"),
        (true, torch.full_like(pred, 1 / pred.shape[2]), "one-hot"),
        (true, -pred, "one-hot"),
        (true, _poke(pred, [1 + 1e-9] + [1e-9] * (pred.shape[2] - 1)), "one-hot"),  # mass rounds to 1
        (true, _poke(pred, [2.0, -1.0] + [0.0] * (pred.shape[2] - 2)), "one-hot"),  # mass 1
        (true, _poke(pred, [float("nan")] * pred.shape[2]), "one-hot"),
        (true, _poke(pred, [1 + 2**-23] + [0.0] * (pred.shape[2] - 1)), "one-hot"),  # 1 ulp above 1
        (true, _poke(pred, [1 + 2**-7] + [0.0] * (pred.shape[2] - 1)), "one-hot"),  # a bfloat16 value
        (true, _poke(pred, [0.0] * (pred.shape[2] - 1) + [1 - 2**-24]), "one-hot"),
        (true, _poke(pred, [2.0] + [0.0] * (pred.shape[2] - 1)), "one-hot"),
        (true, _poke(pred, [0.5, 0.5] + [0.0] * (pred.shape[2] - 2)), "one-hot"),
        (true, _poke(pred, [1.0, 1.0] + [0.0] * (pred.shape[2] - 2)), "one-hot"),
        (true, _poke(pred, [0.0] * pred.shape[2]), "one-hot"),
        (true, _poke(pred.double(), [1.0, 1e-300] + [0.0] * (pred.shape[2] - 2)), "one-hot"),
        (true[:, 0], pred[:, 0], r"\(B, T, K, H, W\)"),
        (true, pred[..., :-1], "differ in B, T, H or W"),
    ]
    for t, p, message in cases:
        with pytest.raises(ValueError, match=message):
            metric_class(ignore_background=True).update(t, p)
    unlabelled = true.clone()
    unlabelled[0, 0, :, 0, 0] = False
    with pytest.raises(ValueError, match=rf"{name}\(ignore_background=True\)"):
        metric_class(ignore_background=True).update(unlabelled, pred)
    overlapping = true.clone()
    overlapping[0, 0, :2, 0, 0] = True
    with pytest.raises(ValueError, match=rf"{name}\(ignore_overlaps=False\).*1 pixels"):
        metric_class().update(overlapping, pred)
    metric = metric_class(ignore_overlaps=True)
    metric.update(overlapping, pred)  # allowed: the overlap pixel is left out
    assert int(metric.total) == true.shape[0]


def test_unknown_matching_lists_valid_values() -> None:
    with pytest.raises(ValueError, match=r"matching='greedy'.*'overlap', 'hungarian', 'none'"):
        MBO(matching="greedy")
    true, pred = _random_masks(9)
    with pytest.raises(ValueError, match="valid values"):
        per_object_iou(true[:, 0].flatten(2).mT, pred[:, 0].flatten(2).mT, "greedy")


# ---- one count for several metrics -----------------------------------------------------------


def test_mask_metrics_count_once_and_equal_the_separate_metrics() -> None:
    true, pred = _random_masks(10)
    members = {
        f"{kind}_{name}": cls(video=kind == "video", ignore_background=True)
        for kind in ("video", "image")
        for name, cls in (("fg_ari", FGARI), ("mbo", MBO))
    }
    shared = MaskMetrics(members)
    for half in (slice(0, 1), slice(1, None)):  # two batches accumulate like two updates
        shared.update(true[half], pred[half])
    for name, value in shared.compute().items():
        alone = type(members[name])(video=members[name].video, ignore_background=True)
        alone.update(true, pred)
        torch.testing.assert_close(value, alone.compute(), rtol=0, atol=1e-12)
    assert list(shared.compute()) == list(members)  # logging order is kept
    shared.reset()
    assert all(int(m.total) == 0 for m in shared.values())


def test_bool_predictions_are_read_as_bytes_and_still_checked() -> None:
    true, pred = _random_masks(11)
    expected, got = FGARI(ignore_background=True), FGARI(ignore_background=True)
    expected.update(true, pred)
    got.update(true, pred.bool())
    assert got.compute() == expected.compute()
    two_slots = pred.bool().clone()
    two_slots[0, 0, :2, 0, 0] = True
    for bad in (two_slots, torch.zeros_like(two_slots)):
        with pytest.raises(ValueError, match="one-hot"):
            FGARI(ignore_background=True).update(true, bad)


def test_counts_from_other_options_are_refused() -> None:
    true, pred = _random_masks(12)
    counts = frame_counts("test", true, pred, ignore_background=True, ignore_overlaps=False)
    with pytest.raises(ValueError, match=r"counts made with .*\(True, False\).*\(False, False\)"):
        MBO().update(true, pred, counts=counts)
    with pytest.raises(ValueError, match="same"):
        MaskMetrics({"a": FGARI(ignore_background=True), "b": MBO()})
