"""Tests of COCO-format annotation masks: RLE decoding here, and pycocotools where installed."""

import builtins

import numpy as np
import pytest

from real_formats import rectangle_polygon, rle_compressed, rle_uncompressed
from slotsweep.data import annotation_masks
from slotsweep.data.annotation_masks import annotation_mask, decode_rle, rle_counts
from slotsweep.errors import SlotsweepError


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), np.uint8)
    yield np.ones((5, 7), np.uint8)
    yield (rng.random((13, 17)) < 0.5).astype(np.uint8)  # many short runs
    big = np.zeros((300, 400), np.uint8)
    big[20:280, 50:390] = 1  # runs longer than 2^10: multi-character counts and negative deltas
    big[100:110, :] = 0
    yield big


@pytest.fixture
def no_pycocotools(monkeypatch):
    """Import pycocotools fails, as in an install without the `coco` extra."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("mask", list(_masks()), ids=["empty", "full", "random", "large"])
def test_rle_decoding_inverts_the_encoding(mask, no_pycocotools):
    H, W = mask.shape
    compressed = rle_compressed(mask)
    assert rle_counts(compressed["counts"]) == rle_uncompressed(mask)["counts"]
    assert np.array_equal(decode_rle(rle_uncompressed(mask)["counts"], H, W), mask)
    assert np.array_equal(annotation_mask(compressed, H, W, "a"), mask)
    assert np.array_equal(annotation_mask(rle_uncompressed(mask), H, W, "a"), mask)
    assert np.array_equal(
        annotation_mask({**compressed, "counts": compressed["counts"].encode()}, H, W, "a"), mask
    )


def test_without_pycocotools_polygons_name_the_extra(no_pycocotools):
    with pytest.raises(SlotsweepError, match=r"video 3, frame 2 is a polygon: .*slotsweep\[coco\]"):
        annotation_mask(rectangle_polygon(1, 1, 2, 2), 5, 5, "video 3, frame 2")


def test_counts_that_do_not_fill_the_image_are_rejected():
    with pytest.raises(ValueError, match="RLE counts sum to 6, not 2x4 = 8"):
        decode_rle([2, 4], 2, 4)


@pytest.mark.parametrize("mask", list(_masks()), ids=["empty", "full", "random", "large"])
def test_same_masks_as_pycocotools(mask):
    coco_mask = pytest.importorskip("pycocotools.mask", reason="pycocotools (the coco extra) not installed")
    assert annotation_masks._pycocotools_mask() is coco_mask
    encoded = coco_mask.encode(np.asfortranarray(mask))
    assert rle_compressed(mask)["counts"] == encoded["counts"].decode()
    assert np.array_equal(decode_rle(rle_counts(encoded["counts"]), *mask.shape), mask)
    assert np.array_equal(annotation_mask(rle_uncompressed(mask), *mask.shape, "a"), mask)


def test_polygons_with_pycocotools():
    pytest.importorskip("pycocotools.mask", reason="pycocotools (the coco extra) not installed")
    mask = annotation_mask(rectangle_polygon(3, 4, 6, 8) + rectangle_polygon(12, 0, 2, 2), 18, 26, "a")
    expected = np.zeros((18, 26), np.uint8)
    expected[3:9, 4:12] = 1
    expected[12:14, 0:2] = 1  # several polygons of one annotation are merged
    assert np.array_equal(mask, expected)
