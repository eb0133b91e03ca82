"""Slot initializers (contracts.SlotInitializer): the slots a video's first frame starts from.

The grouper owns one; `grouper.initializer` picks another (a partial called with n_slots and dim):
    python src/train.py +grouper/initializer=mask_boxes ...     (conf/grouper/initializer/)
"""

import math

import torch
from torch import Tensor, nn

from slotsweep.contracts import SlotRequest
from slotsweep.errors import SlotsweepError
from slotsweep.models.layers import mlp

__all__ = ["FixedLearnedInit", "MaskBoxInit", "RandomInit", "check_n_slots"]


def check_n_slots(n_slots: int, key: str = "grouper.n_slots") -> int:
    """The one check of a slot count (config, evaluation and inference overrides)."""
    if not isinstance(n_slots, int) or n_slots < 1:  # a typo like n_slots=abc arrives as a str
        raise SlotsweepError(f"{key}={n_slots} must be >= 1 (an integer)")
    return n_slots


class RandomInit(nn.Module):
    """Learned Gaussian slot initialisation, shared by all slots, sampled fresh on every call.

    Args:
        n_slots: default number of slots S (can be overridden per call, e.g. at inference).
        dim: slot width D.
    """

    def __init__(self, n_slots: int, dim: int) -> None:
        super().__init__()
        self.n_slots = check_n_slots(n_slots)
        self.mean = nn.Parameter(torch.zeros(1, 1, dim))
        self.log_std = nn.Parameter(torch.full((1, 1, dim), math.log(dim**-0.5)))

    def forward(self, request: SlotRequest) -> Tensor:
        """(B, S, D) initial slots, drawn with request.generator; no conditions."""
        n_slots = self.n_slots if request.n_slots is None else check_n_slots(request.n_slots, "n_slots")
        shape = (request.batch_size, n_slots, self.mean.shape[-1])
        noise = torch.randn(
            shape, generator=request.generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.log_std.exp() * noise


class FixedLearnedInit(nn.Module):
    """SlotContrast's initial slots: S learned vectors, the same for every video, never sampled.

    Deterministic (docs/methods.md): every video starts from the same S0, so evaluation needs no
    seed. The slot count is fixed by the parameter: an evaluation with another count is an error
    ([Q] the original silently keeps its S when asked for another, docs/methods.md).

    Args:
        n_slots: S, the number of learned slots.
        dim: slot width D; initialised as randn * D^-0.5, as the original.
    """

    def __init__(self, n_slots: int, dim: int) -> None:
        super().__init__()
        self.n_slots = check_n_slots(n_slots)
        self.slots = nn.Parameter(torch.randn(1, n_slots, dim) * dim**-0.5)

    def forward(self, request: SlotRequest) -> Tensor:
        """(B, S, D): the learned slots for every video (a view); no sampling, no conditions."""
        n_slots = request.n_slots
        if n_slots is not None and n_slots != self.n_slots:
            raise SlotsweepError(
                f"n_slots={n_slots}: this model learned exactly {self.n_slots} initial slots "
                f"(grouper.initializer=FixedLearnedInit); evaluate with n_slots=null or {self.n_slots}, "
                f"or train with grouper.n_slots={n_slots}"
            )
        return self.slots.expand(request.batch_size, -1, -1)  # (B, S, D), one copy in memory


class MaskBoxInit(nn.Module):
    """Slots conditioned on the first frame's objects: an MLP encodes each object's bounding box.

    A box- or mask-conditioned protocol (SAVi-style): slot k starts from GT object k of frame 0.
    Box = (y0, x0, y1, x1) of the object's pixels in [0, 1]; objects without pixels in frame 0 (and
    the padding channels) start from a learned `empty` slot. Deterministic: no sampling.

    Args:
        n_slots: S; the conditions' object channels K must be <= S (the rest are empty slots).
        dim: slot width D.
        hidden_dim: width of the box MLP.
    """

    def __init__(self, n_slots: int, dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.n_slots = check_n_slots(n_slots)
        self.encode_box = mlp(4, [hidden_dim], dim)
        self.empty = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, request: SlotRequest) -> Tensor:
        """request.conditions["masks"]: (B, K, H, W) bool first-frame GT masks -> (B, S, D) slots."""
        conditions, n_slots = request.conditions, request.n_slots
        if conditions is None or "masks" not in conditions:
            raise ValueError(
                "grouper.initializer=MaskBoxInit needs first-frame masks: train and validate on a "
                "dataset whose batches hold 'masks' (B, T, K, H, W)"
            )
        if n_slots is not None and n_slots != self.n_slots:
            raise ValueError(
                f"n_slots={n_slots}: MaskBoxInit has one slot per object, n_slots={self.n_slots}"
            )
        masks = conditions["masks"]
        B, K, H, W = masks.shape
        if self.n_slots < K:
            raise ValueError(f"grouper.n_slots={self.n_slots} is fewer than the {K} mask channels: raise it")
        boxes, present = _boxes(masks)  # (B, K, 4), (B, K)
        encoded = self.encode_box(boxes.to(self.empty.dtype))  # (B, K, D)
        slots = torch.where(present[..., None], encoded, self.empty)
        padding = self.empty.expand(B, self.n_slots - K, -1)
        return torch.cat([slots, padding], dim=1)  # (B, S, D)


def _boxes(masks: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K, H, W) bool -> boxes (B, K, 4) as (y0, x0, y1, x1) in [0, 1], and present (B, K)."""
    H, W = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (B, K, H), (B, K, W)
    present = rows.any(dim=-1)

    def extent(hit: Tensor, size: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(size, device=hit.device)
        first = torch.where(hit, index, size).amin(dim=-1)
        last = torch.where(hit, index, -1).amax(dim=-1) + 1
        return first / size, last / size

    (y0, y1), (x0, x1) = extent(rows, H), extent(cols, W)
    boxes = torch.stack([y0, x0, y1, x1], dim=-1).float()
    return torch.where(present[..., None], boxes, 0.0), present
