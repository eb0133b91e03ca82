"""The Lightning module's training step: the NaN flag kept on the device, and bf16 autocast losses."""

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from slotsweep.training.module import NonFiniteLossError, ObjectCentricModule, model_inputs
from slotsweep.training.task import build_task

# bf16 keeps 8 bits of mantissa (~0.4% per rounding); the losses are means over thousands of terms
# whose roundings mostly cancel. Stated tolerance: 2%.
BF16_RTOL = 2e-2


@pytest.fixture
def module_and_batch(compose_train: Callable[..., DictConfig]) -> tuple[ObjectCentricModule, dict]:
    torch.manual_seed(0)
    datamodule, module = build_task(compose_train())
    return module, next(iter(datamodule.train_dataloader()))


def test_a_nan_loss_is_flagged_without_stopping_the_step_and_raised_at_the_check(module_and_batch):
    """training_step never reads the loss on the host; check_finite (at logging and checkpoint
    time) raises for the first non-finite step, with its losses."""
    module, batch = module_and_batch
    module.check_finite()  # nothing trained yet: nothing to report
    assert torch.isfinite(module.training_step(batch, 0))
    module.check_finite()
    poisoned = {**batch, "video": torch.full_like(batch["video"], float("nan"))}
    assert torch.isnan(module.training_step(poisoned, 1))  # returned, not raised
    module.training_step(batch, 2)  # a later finite step does not clear the flag
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 0 \(\{.*nan"):
        module.check_finite()


def test_bf16_autocast_losses_are_within_tolerance_of_fp32(module_and_batch):
    """What trainer.precision=bf16-mixed changes, on the CPU's autocast: every loss on a fixed batch
    within BF16_RTOL of fp32 (the similarity target stays fp32 under its guard)."""
    module, batch = module_and_batch
    with torch.no_grad():
        fp32 = module.compute_losses(module.model(**model_inputs(batch)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = module.compute_losses(module.model(**model_inputs(batch)))
    assert fp32.keys() == bf16.keys()
    for name in fp32:
        assert bf16[name].dtype == torch.float32  # the losses themselves are computed in fp32
        assert torch.isclose(bf16[name], fp32[name], rtol=BF16_RTOL), (name, bf16[name], fp32[name])
        assert not torch.equal(bf16[name], fp32[name])  # autocast did run in bf16
