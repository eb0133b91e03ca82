"""How infer.py fits frames to the model's square input, maps its masks back onto the whole
frame, and which device it picks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.inference import fit_to_square, masks_on_frame, resolve_device, view_box
from slotsweep.evaluation.masks import resize_patch_masks


def _frames() -> np.ndarray:
    """(1, 40, 80, 3): a red left quarter, a green centre half, a blue right quarter."""
    frames = np.zeros((1, 40, 80, 3), dtype=np.uint8)
    frames[:, :, :20, 0] = frames[:, :, 20:60, 1] = frames[:, :, 60:, 2] = 255
    return frames


def test_short_side_crop_keeps_the_centre_and_stretch_the_whole_frame() -> None:
    crop = fit_to_square(_frames(), 16, "short_side_crop")
    stretch = fit_to_square(_frames(), 16, "stretch")
    assert crop.shape == stretch.shape == (1, 16, 16, 3)
    assert (crop[..., 1] == 255).all() and (crop[..., [0, 2]] == 0).all()  # only the green centre
    assert (stretch[0, :, :3, 0] == 255).all() and (stretch[0, :, -3:, 2] == 255).all()  # both edges


def test_masks_come_back_on_the_whole_frame() -> None:
    """A 40x80 frame: the crop's masks fill its centred 40x40 square, zero on the cut-off sides;
    stretch's fill the frame. Each is the patch masks resized to the region the model saw."""
    masks = torch.rand(2, 3, 16).softmax(dim=1)  # (t, S, P): a 4x4 patch grid
    assert view_box(40, 80, "short_side_crop") == (0, 20, 40, 40)
    crop = masks_on_frame(masks, 40, 80, "short_side_crop")
    assert crop.shape == (2, 3, 40, 80)
    torch.testing.assert_close(crop[..., 20:60], resize_patch_masks(masks[None], (40, 40))[0])
    assert (crop[..., :20] == 0).all() and (crop[..., 60:] == 0).all()
    stretch = masks_on_frame(masks, 40, 80, "stretch")  # the square 4x4 grid stretched as the frame was
    grid = masks.reshape(2, 3, 4, 4)
    torch.testing.assert_close(
        stretch, F.interpolate(grid, size=(40, 80), mode="bilinear", align_corners=False)
    )


def test_unknown_resize_mode_lists_the_choices() -> None:
    with pytest.raises(SlotsweepError, match=r"resize=pad .*\['short_side_crop', 'stretch'\]"):
        fit_to_square(_frames(), 16, "pad")


def test_devices() -> None:
    gpu = torch.cuda.is_available()
    assert resolve_device("auto").type == ("cuda" if gpu else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if gpu:
        assert resolve_device("gpu").type == "cuda"
    else:  # a GPU that is absent is an error, never a silent CPU run
        with pytest.raises(SlotsweepError, match="accelerator=gpu but torch sees no CUDA GPU"):
            resolve_device("gpu")
    with pytest.raises(SlotsweepError, match=r"accelerator=tpu is not one of \['auto', 'cpu', 'gpu'\]"):
        resolve_device("tpu")
