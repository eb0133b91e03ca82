"""Training objectives (videosaur.md §3, docs/methods.md), each a contracts.Loss owning a slice
of the decoder output (the slot-slot contrastive loss owns none: it reads the slots).

A loss's name is its key in the loss YAML: its log key (`train/<name>`) and its weight key
(`loss.<name>.weight`) are that word, and build.py prefixes `loss.<name>.` to a constructor's error
(so the messages here name the argument only). `channel_layout` sizes the decoder and splits its
output among the losses, in dict order.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotsweep.contracts import Encoder, Loss, ModelOutput
from slotsweep.numerics import exact_fp32

__all__ = [
    "CONTRAST_DIRECTIONS",
    "FeatureReconstructionLoss",
    "SlotContrastiveLoss",
    "TemporalSimilarityLoss",
    "channel_layout",
    "feature_time_similarity",
    "slot_contrast",
]


def channel_layout(losses: Mapping[str, Loss], encoder: Encoder) -> list[int]:
    """Decoder channels of each loss, in the losses' order: the decoder's C is their sum, and the
    reconstruction (B, T, P, C) splits into these slices."""
    return [loss.n_channels(encoder.feat_dim, encoder.n_patches) for loss in losses.values()]


class FeatureReconstructionLoss(nn.Module):
    """MSE between the decoded features and the raw block-N encoder tokens (all frames).

    Args:
        weight: factor in the total loss; 0 drops the loss (and its decoder channels).
    """

    reads_keys = False  # the feature cache stores the keys only for losses that read them

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
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
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if offset < 1:
            raise ValueError(f"offset={offset} must be >= 1")
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
            raise ValueError(
                f"TemporalSimilarityLoss: offset={self.offset} must be shorter than the clip ({T} frames)"
            )
        keys = out.encoder.keys.detach().float()
        # plain fp32 under bf16 autocast and TF32 (slotsweep.numerics): bf16 cosines (3 significant
        # digits) divided by a small temperature would move the target distribution by percents
        with torch.no_grad(), exact_fp32(keys.device.type):
            probs = feature_time_similarity(keys, self.offset, self.temperature, self.threshold)
        logp = prediction[:, : T - self.offset].float().log_softmax(dim=-1)
        return -(probs * logp).sum(dim=-1).mean()


# Which frame's slots are the anchors (docs/methods.md): the original classifies each slot of
# frame t+1 among the slots of frame t; the paper's formula anchors frame t among frame t+1's.
CONTRAST_DIRECTIONS = ("next_to_prev", "prev_to_next", "symmetric")


def _anchor_losses(
    anchors: Tensor, candidates: Tensor, temperature: float, include_positive: bool, first: int
) -> Tensor:
    """-log softmax of each anchor's positive among the candidates.

    Args:
        anchors: (G, T', N, D) L2-normalised; anchor i's positive is candidate first + i.
        candidates: (G, T', M, D) L2-normalised, M >= first + N.
    Returns:
        (G, T', N) per-anchor losses.
    """
    logits = anchors @ candidates.transpose(-1, -2) / temperature  # (G, T', N, M)
    N, M = logits.shape[-2:]
    positive_index = (torch.arange(N, device=logits.device) + first).expand(*logits.shape[:-1])  # (G, T', N)
    positive = logits.gather(-1, positive_index[..., None]).squeeze(-1)  # (G, T', N)
    if not include_positive:  # the paper's denominator: negatives only
        is_positive = F.one_hot(positive_index, M).bool()
        logits = logits.masked_fill(is_positive, float("-inf"))
    return logits.logsumexp(dim=-1) - positive


def _gather_candidates(z: Tensor) -> tuple[Tensor, int]:
    """(1, T, N, D) local slots -> (1, T, W·N, D) every rank's, and this rank's first index.

    An autograd all_gather: each rank's loss sends gradients to the other ranks' slots, so under
    DDP's gradient averaging the update equals that of one loss over the whole batch. Needs the same
    N on every rank (equal per-device batches).
    """
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0
    parts = all_gather(z.contiguous())
    return torch.cat(parts, dim=-2), dist.get_rank() * z.shape[-2]


def slot_contrast(
    slots: Tensor,
    temperature: float = 0.1,
    batch_contrast: bool = True,
    direction: str = "next_to_prev",
    include_positive: bool = True,
    gather_negatives: bool = False,
) -> Tensor:
    """Slot-slot contrastive loss over consecutive frames (docs/methods.md).

    Cosine similarity of L2-normalised slots over a temperature. With direction next_to_prev (the
    original), slot k of frame t+1 is classified among the slots of frame t: its positive is slot k
    of the same video, kept in the denominator; with batch_contrast the candidates are the frame-t
    slots of every video in the batch (index b·S + k), else of its own video only.

    Args:
        slots: (B, T, S, D), T >= 2.
        temperature: tau > 0.
        batch_contrast: negatives from every video of the (per-device) batch.
        direction: one of CONTRAST_DIRECTIONS; symmetric is the mean of the two.
        include_positive: the positive is one of the softmax's candidates (the original); False =
            the paper's form, negatives only in the denominator.
        gather_negatives: with batch_contrast under DDP, candidates from every rank's batch
            (the original contrasts per device only).
    Returns:
        () the mean over all (T - 1)·B·S anchors (per direction).
    """
    B, T, S, D = slots.shape
    z = F.normalize(slots, dim=-1)
    if batch_contrast:  # one pseudo-video whose slots are every video's: index b·S + k
        z = z.transpose(0, 1).reshape(1, T, B * S, D)  # (1, T, B·S, D)
    candidates, first = _gather_candidates(z) if gather_negatives else (z, 0)
    earlier, later = z[:, :-1], z[:, 1:]  # anchors: (B', T-1, N, D)
    earlier_pool, later_pool = candidates[:, :-1], candidates[:, 1:]
    terms = []
    if direction in ("next_to_prev", "symmetric"):
        terms.append(_anchor_losses(later, earlier_pool, temperature, include_positive, first).mean())
    if direction in ("prev_to_next", "symmetric"):
        terms.append(_anchor_losses(earlier, later_pool, temperature, include_positive, first).mean())
    return sum(terms) / len(terms)


class SlotContrastiveLoss(nn.Module):
    """SlotContrast's slot-slot contrastive loss on the decoded slots (docs/methods.md).

    It reads out.slots (B, T, S, D), the slots after grouping each frame (the original's
    `processor.state`), and no decoder channels. Computed in fp32 even under autocast.

    Args:
        weight: factor in the total loss (released: 0.5 beside feature reconstruction 1.0).
        temperature: tau of the cosine similarities (released: 0.1).
        batch_contrast: negatives from every video of the batch on this device (released: true);
            false = the other slots of the same video only.
        direction: next_to_prev (the original code: anchors at frame t+1, softmax over frame t),
            prev_to_next (the paper's formula), or symmetric (the mean of both).
        include_positive: the positive stays in the softmax denominator (the original's
            cross-entropy); false = the paper's form, negatives only.
        gather_negatives: [Q] the original contrasts within each device's batch only, so its
            result depends on the per-device batch (docs/methods.md); true gathers every
            rank's slots as negatives during training (validation stays per device: ranks may
            hold different numbers of validation batches). Needs equal per-device batches.
    """

    reads_keys = False  # reads the slots: a feature cache needs only the block-N tokens

    def __init__(
        self,
        weight: float = 0.5,
        temperature: float = 0.1,
        batch_contrast: bool = True,
        direction: str = "next_to_prev",
        include_positive: bool = True,
        gather_negatives: bool = False,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if direction not in CONTRAST_DIRECTIONS:
            raise ValueError(f"direction={direction} is not one of {list(CONTRAST_DIRECTIONS)}")
        if gather_negatives and not batch_contrast:
            raise ValueError(
                "gather_negatives=true needs batch_contrast=true "
                "(intra-video negatives have nothing to gather)"
            )
        self.weight, self.temperature, self.batch_contrast = weight, temperature, batch_contrast
        self.direction, self.include_positive, self.gather_negatives = (
            direction,
            include_positive,
            gather_negatives,
        )

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return 0  # reads the slots, not the decoder

    def check_clip(self, name: str, n_frames: int) -> None:
        """Pairs of consecutive frames: clips of at least 2 frames."""
        if n_frames < 2:
            raise ValueError(
                f"loss.{name} contrasts consecutive frames: dataset.train_clip_frames={n_frames} must be "
                ">= 2; use loss=dinosaur for single images"
            )

    def forward(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        """prediction: (B, T, P, 0), unused; out.slots (B, T, S, D) -> scalar."""
        slots = out.slots
        if slots.shape[1] < 2:
            raise ValueError(
                f"SlotContrastiveLoss needs clips of >= 2 frames, got slots {tuple(slots.shape)}"
            )
        if not self.include_positive and not self.batch_contrast and slots.shape[2] == 1:
            raise ValueError(
                "SlotContrastiveLoss: include_positive=false with one slot per video leaves no negatives"
            )
        # fp32 under bf16 autocast: cosines / 0.1 in bf16 would move the logits by percents
        with torch.autocast(slots.device.type, enabled=False):
            return slot_contrast(
                slots.float(),
                self.temperature,
                self.batch_contrast,
                self.direction,
                self.include_positive,
                self.gather_negatives and self.training,
            )
