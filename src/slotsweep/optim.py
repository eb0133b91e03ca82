"""Adam with linear warmup and exponential decay, lr scaled with the batch (videosaur.md §4)."""

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["AdamWarmupDecay", "warmup_exp_decay"]


def warmup_exp_decay(step: int, warmup_steps: int, decay_steps: int) -> float:
    """LR factor: s / W during warmup, then 0.5 ** ((s - W) / (D - W)) (0.5 at s = D, and beyond)."""
    if step < warmup_steps:
        return step / warmup_steps
    return 0.5 ** ((step - warmup_steps) / (decay_steps - warmup_steps))


class AdamWarmupDecay:
    """Builds the optimizer and its step-wise schedule once the parameters are known.

    Args:
        base_lr: learning rate at a total batch of `reference_batch_size`.
        warmup_steps: W, linear warmup from 0.
        decay_steps: D, the step at which the factor reaches 0.5 (it keeps decaying after).
        reference_batch_size: lr = base_lr * total_batch / reference_batch_size (the reference uses 32).
        betas, eps, weight_decay: Adam's arguments (reference: torch defaults, no weight decay).
    """

    def __init__(
        self,
        base_lr: float = 1e-4,
        warmup_steps: int = 2500,
        decay_steps: int = 100_000,
        reference_batch_size: int = 32,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not base_lr > 0:
            raise ValueError(f"optim.base_lr={base_lr} must be > 0")
        if warmup_steps < 0 or decay_steps <= warmup_steps:
            raise ValueError(
                f"optim.warmup_steps={warmup_steps}, optim.decay_steps={decay_steps}: "
                "need 0 <= warmup_steps < decay_steps"
            )
        self.base_lr, self.warmup_steps, self.decay_steps = base_lr, warmup_steps, decay_steps
        self.reference_batch_size = reference_batch_size
        self.adam_kwargs = dict(betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def lr(self, total_batch_size: int) -> float:
        return self.base_lr * total_batch_size / self.reference_batch_size

    def build(
        self, params: Iterable[torch.nn.Parameter], total_batch_size: int
    ) -> tuple[torch.optim.Optimizer, LambdaLR]:
        optimizer = torch.optim.Adam(params, lr=self.lr(total_batch_size), **self.adam_kwargs)
        schedule = LambdaLR(optimizer, lambda s: warmup_exp_decay(s, self.warmup_steps, self.decay_steps))
        return optimizer, schedule
