"""Patch masks -> pixel masks -> hard masks, against the reference's Resizer/SoftToHardMask."""

from collections.abc import Callable
from typing import Any

import pytest
import torch

from slotsweep.evaluation.masks import hard_masks, patch_grid, resize_patch_masks


@pytest.fixture
def mask_resize(reference: Callable[[str], Any]) -> dict:
    return reference("modules.pt")["mask_resize"]


def test_resize_matches_reference(mask_resize: dict) -> None:
    masks = mask_resize["inputs"]["masks"]  # (2, 3, 4, 16): a 4x4 patch grid
    size = tuple(mask_resize["inputs"]["target_size"].tolist())
    resized = resize_patch_masks(masks, size)
    assert resized.shape == (2, 3, 4, *size)
    torch.testing.assert_close(resized, mask_resize["outputs"]["resized"], rtol=0, atol=0)


def test_hard_masks_match_reference(mask_resize: dict) -> None:
    hard = hard_masks(mask_resize["outputs"]["resized"])
    assert hard.dtype == torch.float32
    assert torch.equal(hard, mask_resize["outputs"]["hard"])


def test_slotcontrast_masks_at_336_match_original(reference: Callable[[str], Any]) -> None:
    """SlotContrast scores MOVi at the input size: a 24x24 patch grid to 336x336 pixels."""
    entry = reference("slotcontrast/slotcontrast_modules.pt")["mask_resize"]
    assert entry["config"]["resizer"]["resize_mode"] == "bilinear"
    size = tuple(entry["inputs"]["size"])
    soft = resize_patch_masks(entry["inputs"]["masks"], size)  # (1, 2, 11, 336, 336)
    assert list(soft.shape) == entry["outputs"]["soft_shape"]
    outputs = entry["outputs"]
    torch.testing.assert_close(soft[..., :56, :56], outputs["soft_crop_top_left_56"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        soft[..., 140:196, 140:196], outputs["soft_crop_center_56"], rtol=1e-5, atol=1e-7
    )
    hard = hard_masks(soft)
    assert torch.equal(hard.argmax(dim=2), outputs["hard_index"].long())
    assert torch.equal(hard.sum(dim=2), torch.ones(1, 2, 336, 336))


def test_hard_masks_one_hot_and_ties_go_to_first_slot() -> None:
    soft = torch.rand(2, 3, 5, 4, 6)
    soft[0, 0, :, 0, 0] = 0.5  # a five-way tie
    hard = hard_masks(soft)
    assert torch.equal(hard.sum(2), torch.ones(2, 3, 4, 6))
    assert torch.equal(hard.argmax(2), soft.argmax(2))
    assert hard[0, 0, 0, 0, 0] == 1


def test_patch_grid_follows_target_aspect() -> None:
    assert patch_grid(16, (32, 32)) == (4, 4)
    assert patch_grid(8, (16, 32)) == (2, 4)
    assert patch_grid(8, (32, 16)) == (4, 2)
    masks = torch.rand(1, 2, 3, 8)
    resized = resize_patch_masks(masks, (16, 32))
    assert resized.shape == (1, 2, 3, 16, 32)
    # the patch grid is row-major: patch 3 is the top-right corner
    corner = resize_patch_masks(torch.eye(8)[3].view(1, 1, 1, 8), (16, 32))
    assert corner[0, 0, 0, 0, -1] == corner.max()


def test_patch_grid_rejects_incompatible_patch_count() -> None:
    with pytest.raises(ValueError, match="10 patches"):
        resize_patch_masks(torch.rand(1, 1, 2, 10), (32, 32))
