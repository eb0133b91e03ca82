"""Training objectives (videosaur.md §3), each a contracts.Loss owning a slice of the decoder output.

A loss's config key, its log key (`train/<key>`) and its weight key (`loss.<key>.weight`) are the
same word; `channel_layout` sizes the decoder and splits its output among the losses, in dict order.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotsweep.contracts import Encoder, Loss, ModelOutput
from slotsweep.numerics import exact_fp32

__all__ = ["FeatureReconstructionLoss", "TemporalSimilarityLoss", "channel_layout", "feature_time_similarity"]


def channel_layout(losses: Mapping[str, Loss], encoder: Encoder) -> list[int]:
    """Decoder channels of each loss, in the losses' order: the decoder's C is their sum, and the
    reconstruction (B, T, P, C) splits into these slices."""
    return [loss.n_channels(encoder.feat_dim, encoder.n_patches) for loss in losses.values()]


def _check_weight(name: str, weight: float) -> None:
    if not weight >= 0:  # also rejects NaN
        raise ValueError(f"loss.{name}.weight={weight} must be >= 0 (0 disables the loss)")


class FeatureReconstructionLoss(nn.Module):
    """MSE between the decoded features and the raw block-N encoder tokens (all frames).

    Args:
        weight: factor in the total loss; 0 drops the loss (and its decoder channels).
    """

    reads_keys = False  # the feature cache stores the keys only for losses that read them

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        _check_weight("featrec", weight)
        self.weight = weight

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return feat_dim

    def check_clip(self, name: str, n_frames: int) -> None:
        """Any clip length, single images included."""

    def forward(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        """prediction: (B, T, P, D_feat) decoder channels of this loss; target out.encoder.features."""
        target = out.encoder.features.detach().float()
        return F.mse_loss(prediction.float(), target)  # fp32 under autocast


def feature_time_similarity(
    keys: Tensor, offset: int = 1, temperature: float = 0.1, threshold: float = 0.0
) -> Tensor:
    """Target distribution of each patch of frame t over the patches of frame t + offset.

    Args:
        keys: (B, T, P, D) attention keys.
    Returns:
        (B, T - offset, P, P): row p of frame t is a softmax over patches q of frame t + offset of
        cos(p, q) / temperature, with similarities below `threshold` set to -inf; a row that is all
        -inf becomes uniform (the reference sets it to 0 before the softmax).
    """
    z = F.normalize(keys, dim=-1)
    sim = torch.einsum("btpd,btqd->btpq", z[:, :-offset], z[:, offset:])  # (B, T-k, P, P)
    sim = sim.masked_fill(sim < threshold, float("-inf")) / temperature
    sim = sim.masked_fill(torch.isinf(sim).all(dim=-1, keepdim=True), 0.0)
    return sim.softmax(dim=-1)


class TemporalSimilarityLoss(nn.Module):
    """Cross-entropy between decoded logits of frame t and the key-affinity to frame t + offset.

    Args:
        weight: factor in the total loss (the reference uses 0.1 even alone, which matters with
            gradient clipping); 0 drops the loss.
        temperature: softmax temperature tau of the target (MOVi 0.075, YT-VIS 0.25, DINOv2 0.15).
        offset: time shift k in frames; must be shorter than the training clip.
        threshold: cosine similarities below it are treated as maximally dissimilar.
    """

    reads_keys = True  # out.encoder.keys: the similarity target (only their cosines)

    def __init__(
        self, weight: float = 0.1, temperature: float = 0.1, offset: int = 1, threshold: float = 0.0
    ) -> None:
        super().__init__()
        _check_weight("timesim", weight)
        if not temperature > 0:
            raise ValueError(f"loss.timesim.temperature={temperature} must be > 0")
        if offset < 1:
            raise ValueError(f"loss.timesim.offset={offset} must be >= 1")
        self.weight, self.temperature, self.offset, self.threshold = weight, temperature, offset, threshold

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return n_patches

    def check_clip(self, name: str, n_frames: int) -> None:
        """A target needs frame t + offset inside the clip."""
        if not 1 <= self.offset < n_frames:
            raise ValueError(
                f"loss.{name}.offset={self.offset} must be in [1, {n_frames - 1}] "
                f"(dataset.train_clip_frames={n_frames}); use loss=dinosaur for single images"
            )

    def forward(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        """prediction: (B, T, P, P) logits; the last `offset` frames have no target and are dropped.
        Target: the similarity of out.encoder.keys between frames t and t + offset."""
        T = prediction.shape[1]
        if self.offset >= T:
            raise ValueError(f"loss.timesim.offset={self.offset} must be shorter than the clip ({T} frames)")
        keys = out.encoder.keys.detach().float()
        # plain fp32 under bf16 autocast and TF32 (slotsweep.numerics): bf16 cosines (3 significant
        # digits) divided by a small temperature would move the target distribution by percents
        with torch.no_grad(), exact_fp32(keys.device.type):
            probs = feature_time_similarity(keys, self.offset, self.temperature, self.threshold)
        logp = prediction[:, : T - self.offset].float().log_softmax(dim=-1)
        return -(probs * logp).sum(dim=-1).mean()
