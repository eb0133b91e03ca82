"""The learning-rate schedule and scaling rule of the reference (videosaur.md §4)."""

import math

import pytest
import torch
from torch.testing import assert_close

from slotsweep.optim import AdamWarmupDecay, warmup_exp_decay

W, D = 2500, 100_000  # the VideoSAUR configs


def test_warmup_exp_decay_values() -> None:
    assert warmup_exp_decay(0, W, D) == 0.0
    assert warmup_exp_decay(W // 2, W, D) == 0.5  # linear warmup
    assert warmup_exp_decay(W - 1, W, D) == (W - 1) / W
    assert warmup_exp_decay(W, W, D) == 1.0
    assert warmup_exp_decay(D, W, D) == 0.5
    assert_close(warmup_exp_decay(2 * D - W, W, D), 0.25)  # keeps halving every D - W steps


def test_decay_is_monotonic_after_warmup() -> None:
    steps = range(W, 3 * D, 997)
    values = [warmup_exp_decay(s, W, D) for s in steps]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_coco_schedule_keeps_decaying_past_decay_steps() -> None:
    """[Q] COCO: max_steps 500k with D = 100k ends at about 0.023 x lr."""
    final = warmup_exp_decay(500_000, 10_000, 100_000)
    assert_close(final, 0.5 ** (490_000 / 90_000))
    assert 0.022 < final < 0.024


@pytest.mark.parametrize(
    ("base_lr", "total_batch", "lr"),
    [(1e-4, 128, 4e-4), (1e-4, 64, 2e-4), (2e-4, 64, 4e-4), (1e-4, 32, 1e-4)],
)
def test_lr_scales_with_the_batch(base_lr: float, total_batch: int, lr: float) -> None:
    """lr = base_lr * total_batch / 32: MOVi/YT-VIS 4e-4, YT-VIS DINOv2 2e-4, COCO 4e-4."""
    assert math.isclose(AdamWarmupDecay(base_lr=base_lr).lr(total_batch), lr)


def test_build_gives_adam_with_the_schedule() -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer, schedule = AdamWarmupDecay(base_lr=1e-4, warmup_steps=4, decay_steps=10).build(
        [param], total_batch_size=128
    )
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0
    lrs = []
    for _ in range(12):
        lrs.append(group["lr"])
        param.grad = torch.ones(3)
        optimizer.step()
        schedule.step()
    expected = [4e-4 * warmup_exp_decay(s, 4, 10) for s in range(12)]
    assert_close(torch.tensor(lrs), torch.tensor(expected))
    assert lrs[0] == 0.0 and math.isclose(lrs[4], 4e-4) and math.isclose(lrs[10], 2e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(base_lr=0.0), "optim.base_lr=0.0"),
        (dict(warmup_steps=-1), "optim.warmup_steps=-1"),
        (dict(warmup_steps=100, decay_steps=100), "optim.decay_steps=100"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdamWarmupDecay(**kwargs)
