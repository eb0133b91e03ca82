"""Tests of the shared frame conversion."""

import numpy as np
import pytest
import torch

from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor


def test_frames_to_tensor_normalises_and_moves_channels():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)  # (T, H, W, 3)
    out = frames_to_tensor(frames)
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.float32
    for c in range(3):
        expected = (frames[..., c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(out[:, c].numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 6, 3), (2, 3, 4, 6, 3)])
def test_any_leading_dims(shape):
    frames = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = frames_to_tensor(frames, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.shape == (*shape[:-3], 3, *shape[-3:-1])
    torch.testing.assert_close(out, frames.movedim(-1, -3).float() / 127.5 - 1)


def test_read_only_memory_map(tmp_path):
    path = tmp_path / "frames.npy"
    np.save(path, np.full((1, 2, 2, 3), 255, np.uint8))
    out = frames_to_tensor(np.load(path, mmap_mode="r")[0, :, ::-1])  # flipped view of a memmap
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 1, 1], expected)


@pytest.mark.parametrize("frames", [np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 4), np.uint8)])
def test_rejects_non_uint8_rgb(frames):
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(frames)
