"""The mask report's yardsticks: one segment, a fixed grid, per-clip colour k-means."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from slotsweep.evaluation.baselines import BASELINES, colour_kmeans, grid_segments, single_segment
from slotsweep.evaluation.metrics import FGARI

# Flat colours: background and three objects, distinct enough that colour alone separates them.
COLOURS = torch.tensor([[20, 20, 20], [230, 25, 75], [60, 180, 75], [0, 130, 200]], dtype=torch.uint8)


def flat_colour_clips(B: int = 3, T: int = 3, H: int = 16, W: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (B, T, H, W, 3) uint8 and labels (B, T, H, W): moving flat-colour rectangles, background 0."""
    labels = torch.zeros(B, T, H, W, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            labels[b, t, 2 + t : 7 + t, 2:8] = 1  # moves down
            labels[b, t, 9:14, 3 + b : 9 + b] = 2  # placed per clip
            labels[b, t, 3:12, 11:14] = 3  # a small one: uniform seeding rarely picks it
    return COLOURS[labels], labels


def _assert_one_hot(masks: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert masks.shape == shape
    assert ((masks == 0) | (masks == 1)).all()
    assert (masks.sum(dim=2) == 1).all()  # every pixel in exactly one segment


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("n_segments", [1, 4, 6])
def test_baselines_are_one_hot(name: str, n_segments: int):
    rgb, _ = flat_colour_clips(B=2, T=3, H=12, W=18)
    masks = BASELINES[name](rgb, n_segments)
    S = masks.shape[2]
    _assert_one_hot(masks, (2, 3, S, 12, 18))
    assert (1 if name == "one segment" else n_segments) == S


def test_single_segment():
    rgb, _ = flat_colour_clips(B=2, T=2)
    assert torch.equal(single_segment(rgb, 7), torch.ones(2, 2, 1, 16, 16))


@pytest.mark.parametrize(
    ("n_segments", "rows", "cols"), [(6, 2, 3), (4, 2, 2), (7, 1, 7), (12, 3, 4), (1, 1, 1)]
)
def test_grid_layout(n_segments: int, rows: int, cols: int):
    H, W = 12, 84  # divisible by every rows/cols above: equal cells
    masks = grid_segments(torch.zeros(1, 2, H, W, 3, dtype=torch.uint8), n_segments)
    _assert_one_hot(masks, (1, 2, rows * cols, H, W))
    labels = masks[0, 0].argmax(dim=0)  # (H, W)
    for r in range(rows):
        for c in range(cols):
            cell = labels[r * H // rows : (r + 1) * H // rows, c * W // cols : (c + 1) * W // cols]
            assert (cell == r * cols + c).all(), (r, c)
    assert torch.equal(masks[0, 0], masks[0, 1])  # fixed: the same grid on every frame


@pytest.mark.parametrize("seed", range(5))
def test_colour_kmeans_recovers_flat_colours_exactly(seed: int):
    rgb, labels = flat_colour_clips()
    masks = colour_kmeans(rgb, n_segments=4, seed=seed)
    _assert_one_hot(masks, (3, 3, 4, 16, 16))
    pred = masks.argmax(dim=2)
    for b in range(3):  # ARI over all pixels of the clip, all frames: one clustering per clip
        assert adjusted_rand_score(labels[b].flatten(), pred[b].flatten()) == 1.0


def test_colour_kmeans_scores_one_with_the_project_metric():
    rgb, labels = flat_colour_clips()
    true = F.one_hot(labels, 4).permute(0, 1, 4, 2, 3).bool()  # (B, T, K, H, W), channel 0 background
    metric = FGARI(video=True, ignore_background=True, ignore_overlaps=False)
    metric.update(true, colour_kmeans(rgb, n_segments=5))  # a spare segment stays empty or splits none
    assert metric.compute().item() == pytest.approx(1.0)


def test_colour_kmeans_fewer_colours_than_segments():
    rgb = COLOURS[torch.tensor([0, 1]).repeat_interleave(32).view(1, 1, 8, 8)]  # two colours, top/bottom
    masks = colour_kmeans(rgb, n_segments=5)
    _assert_one_hot(masks, (1, 1, 5, 8, 8))
    pred = masks[0, 0].argmax(dim=0)
    assert (pred[:4] == pred[0, 0]).all() and (pred[4:] == pred[4, 0]).all() and pred[0, 0] != pred[4, 0]


def test_colour_kmeans_is_seeded():
    rgb, _ = flat_colour_clips()
    noisy = rgb.int() + torch.randint(-30, 30, rgb.shape, generator=torch.Generator().manual_seed(0))
    noisy = noisy.clamp(0, 255).to(torch.uint8)
    assert torch.equal(colour_kmeans(noisy, 6, seed=3), colour_kmeans(noisy, 6, seed=3))
