"""Trivial segmentations scored with the same metric code as the model (the demo's yardsticks).

Each returns one-hot masks (B, T, S, H, W) for a validation batch: one segment for everything,
a fixed grid of regions, and per-clip colour k-means (an upper reference: it sees colour).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BASELINES", "colour_kmeans", "grid_segments", "single_segment"]


def single_segment(rgb: Tensor, n_segments: int) -> Tensor:
    """Everything in one segment. rgb: (B, T, H, W, 3) -> (B, T, 1, H, W)."""
    B, T, H, W, _ = rgb.shape
    return torch.ones(B, T, 1, H, W)


def grid_segments(rgb: Tensor, n_segments: int) -> Tensor:
    """A fixed rows x cols grid with rows * cols closest to n_segments from below (e.g. 6 -> 2x3)."""
    B, T, H, W, _ = rgb.shape
    rows = max(r for r in range(1, math.isqrt(n_segments) + 1) if n_segments % r == 0)
    cols = n_segments // rows
    row_id = torch.arange(H) * rows // H
    col_id = torch.arange(W) * cols // W
    labels = row_id[:, None] * cols + col_id[None, :]  # (H, W)
    one_hot = F.one_hot(labels, rows * cols).permute(2, 0, 1).float()  # (S, H, W)
    return one_hot.expand(B, T, -1, -1, -1)


def colour_kmeans(rgb: Tensor, n_segments: int, n_iters: int = 20, seed: int = 0) -> Tensor:
    """k-means on pixel colours, one clustering per clip over all its frames (batched over clips).

    rgb: (B, T, H, W, 3) uint8 -> (B, T, S, H, W) one-hot.
    """
    B, T, H, W, _ = rgb.shape
    x = rgb.reshape(B, -1, 3).float() / 255  # (B, N, 3)
    centres = _kmeans_plus_plus(x, n_segments, torch.Generator().manual_seed(seed))  # (B, S, 3)
    for _ in range(n_iters):
        labels = torch.cdist(x, centres).argmin(dim=-1)  # (B, N)
        one_hot = F.one_hot(labels, n_segments).float()  # (B, N, S)
        counts = one_hot.sum(dim=1)[..., None]  # (B, S, 1)
        means = one_hot.transpose(1, 2) @ x / counts.clamp(min=1)
        centres = torch.where(counts > 0, means, centres)  # an empty cluster keeps its centre
    return one_hot.view(B, T, H, W, n_segments).permute(0, 1, 4, 2, 3)


def _kmeans_plus_plus(x: Tensor, n_segments: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centre is a pixel drawn with probability ~ squared distance to
    the nearest centre so far. Uniform draws put several centres in one large region and k-means
    then merges distinct colours. x: (B, N, 3) -> (B, S, 3)."""
    B, N, _ = x.shape
    rows = torch.arange(B)
    centres = [x[rows, torch.randint(N, (B,), generator=generator)]]  # (B, 3) each
    dist = (x - centres[0][:, None]).square().sum(-1)  # (B, N) to the nearest centre
    for _ in range(1, n_segments):
        # fewer colours than segments: every pixel sits on a centre, draw uniformly
        weights = torch.where(dist.sum(1, keepdim=True) > 0, dist, torch.ones_like(dist))
        centres.append(x[rows, torch.multinomial(weights, 1, generator=generator)[:, 0]])
        dist = torch.minimum(dist, (x - centres[-1][:, None]).square().sum(-1))
    return torch.stack(centres, dim=1)


BASELINES = {"one segment": single_segment, "grid": grid_segments, "colour k-means": colour_kmeans}
