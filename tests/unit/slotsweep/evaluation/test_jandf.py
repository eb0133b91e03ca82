"""J&F: the reference's fixture values, and an independent brute force on random masks."""

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from scipy.optimize import linear_sum_assignment

from slotsweep.evaluation.jandf import JandF, jandf_per_sample


def _brute_force(true: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """(J&F, J, F) of one clip by loops over objects, slots and frames (DAVIS conventions).

    true (T, K, H, W) and pred (T, S, H, W) bool; NaN without objects.
    """
    T, K, H, W = true.shape
    S = pred.shape[1]
    d = max(1, round(0.02 * math.hypot(H, W)))
    square = np.ones((2 * d + 1, 2 * d + 1), bool)

    def boundary(mask: np.ndarray) -> np.ndarray:
        return mask & ~binary_erosion(mask, square, border_value=0)

    objects = [k for k in range(K) if true[:, k].any()]
    if not objects:
        return math.nan, math.nan, math.nan
    j, f = np.zeros((len(objects), S)), np.zeros((len(objects), S))
    for i, k in enumerate(objects):
        for s in range(S):
            for t in range(T):
                a, b = true[t, k], pred[t, s]
                union = (a | b).sum()
                j[i, s] += ((a & b).sum() / union if union else 1.0) / T
                ba, bb = boundary(a), boundary(b)
                if not ba.any() and not bb.any():
                    f[i, s] += 1.0 / T
                elif ba.any() and bb.any():
                    hit = (ba & bb).sum()
                    precision, recall = hit / bb.sum(), hit / ba.sum()
                    f[i, s] += (2 * precision * recall / (precision + recall) if hit else 0.0) / T
    rows, cols = linear_sum_assignment((j + f) / 2, maximize=True)
    matched_j = np.zeros(len(objects))
    matched_f = np.zeros(len(objects))
    matched_j[rows], matched_f[rows] = j[rows, cols], f[rows, cols]
    return (matched_j.mean() + matched_f.mean()) / 2, matched_j.mean(), matched_f.mean()


def _random_clips(seed: int, B: int, T: int, K: int, S: int, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blobby GT objects (some channels empty) and one-hot random-blob slot masks."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(B, T, K + 1, H // 4, H // 4, generator=g)
    labels = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(H, H)).argmax(1)  # (B·T, H, H)
    true = torch.nn.functional.one_hot(labels, K + 1).permute(0, 3, 1, 2)[:, 1:].bool()  # label 0: none
    true = true.view(B, T, K, H, H)
    true[:, :, -1] = False  # a padding channel
    slots = torch.randint(S, (B * T, H // 2, H // 2), generator=g)
    slots = torch.nn.functional.interpolate(slots[:, None].float(), size=(H, H)).long()[:, 0]
    pred = torch.nn.functional.one_hot(slots, S).permute(0, 3, 1, 2).bool().view(B, T, S, H, H)
    return true, pred


@pytest.mark.parametrize(("seed", "K", "S"), [(0, 4, 5), (1, 6, 3), (2, 2, 4)])
def test_matches_brute_force_on_random_masks(seed: int, K: int, S: int) -> None:
    true, pred = _random_clips(seed, B=3, T=3, K=K, S=S, H=24)
    true[1] = False  # a clip without objects: skipped
    true[2, :, 1:] = False  # a single-object clip
    true[2, 1, 0] = False  # ... absent in one frame (J = 0 there unless no slot is empty)
    expected = [_brute_force(t.numpy(), p.numpy()) for t, p in zip(true, pred, strict=True)]
    np.testing.assert_allclose(jandf_per_sample(true, pred).numpy(), expected, atol=1e-12)
    assert math.isnan(expected[1][0]) and not math.isnan(expected[2][0])

    metric = JandF()
    metric.update(true, pred)
    scored = [e for e in expected if not math.isnan(e[0])]
    values = metric.compute()
    assert int(metric.total) == len(scored)
    np.testing.assert_allclose(
        [values[k].item() for k in ("jandf", "j", "f")], np.mean(scored, axis=0), atol=1e-12
    )


def test_empty_masks_follow_davis() -> None:
    """A perfect single-object prediction scores 1; no object at all is skipped (NaN)."""
    true = torch.zeros(1, 2, 2, 16, 16, dtype=torch.bool)
    true[0, :, 0, 4:10, 4:12] = True
    pred = torch.zeros(1, 2, 2, 16, 16, dtype=torch.bool)
    pred[0, :, 0] = true[0, :, 0]
    pred[0, :, 1] = ~true[0, :, 0]
    assert jandf_per_sample(true, pred).tolist() == [[1.0, 1.0, 1.0]]
    assert jandf_per_sample(torch.zeros_like(true), pred).isnan().all()


def test_matches_reference(reference: Callable[[str], Any]) -> None:
    ytvis = reference("metrics.pt")["ytvis"]
    metric = JandF(ignore_background=ytvis["video_jandf.config"]["ignore_background"])
    metric.update(ytvis["true"], ytvis["pred"])
    values, expected = metric.compute(), ytvis["video_jandf.value"]
    for ours, theirs in (("jandf", "j_and_f"), ("j", "jaccard"), ("f", "boundary_f_measure")):
        torch.testing.assert_close(values[ours], expected[theirs], rtol=0, atol=1e-6)
    assert int(metric.total) == int(ytvis["video_jandf.state_total"])
