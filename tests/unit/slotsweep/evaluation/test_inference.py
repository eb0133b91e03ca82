"""How infer.py fits frames to the model's square input, and which device it picks."""

import numpy as np
import pytest
import torch

from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.inference import fit_to_square, resolve_device


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
