"""YouTube-VIS 2021 official layout -> reference shards -> the reader, on a tiny release."""

import importlib.util
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from real_formats import write_ytvis_release
from slotsweep.data.converters.ytvis import convert_ytvis, resize_short_side_uint8
from slotsweep.data.shards import ShardDataModule, read_samples
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    polygons = importlib.util.find_spec("pycocotools") is not None  # decoding polygons needs it
    return write_ytvis_release(tmp_path_factory.mktemp("ytvis"), n_videos=5, polygons=polygons)


def _jpegs(release, v: int) -> np.ndarray:
    index = json.loads((release.src / "instances.json").read_text())
    files = index["videos"][v]["file_names"]
    return np.stack([np.asarray(Image.open(release.src / "JPEGImages" / f).convert("RGB")) for f in files])


def test_round_trip_keeps_frames_masks_order_and_the_validation_split(release, tmp_path):
    written = convert_ytvis(release.src, tmp_path / "ytvis2021_resized", resize=None, n_val=2)
    assert [p.name for p in written["train"]] == ["ytvis-train-000000.tar"]  # 3 videos, 32 a shard
    assert [p.name for p in written["validation"]] == ["ytvis-validation-000000.tar"]
    train = list(read_samples(written["train"], ("video",)))
    val = list(read_samples(written["validation"], ("video", "segmentations")))
    assert [s["__key__"] for s in train + val] == release.names  # the file's order, last 2 = val
    for v, sample in enumerate(train + val):
        assert np.array_equal(sample["video"], _jpegs(release, v))
    for sample, masks in zip(val, release.masks[3:], strict=True):
        assert sample["segmentations"].dtype == np.uint8
        assert np.array_equal(sample["segmentations"], masks)  # instance x category, nulls are zeros
    assert val[-1]["segmentations"].shape[-1] == 1 and not val[-1]["segmentations"].any()  # no annotation


def test_resize_short_side_as_the_reference(release, tmp_path):
    written = convert_ytvis(release.src, tmp_path / "out", resize=12, n_val=2)
    val = list(read_samples(written["validation"], ("video", "segmentations")))
    frames = torch.from_numpy(_jpegs(release, 3)).permute(0, 3, 1, 2)
    expected = TF.resize(frames, 12, interpolation=InterpolationMode.NEAREST_EXACT)  # 18x26 -> 12x17
    assert torch.equal(torch.from_numpy(val[0]["video"]).permute(0, 3, 1, 2), expected)
    masks = torch.from_numpy(release.masks[3]).permute(0, 3, 1, 2)
    expected = TF.resize(masks, 12, interpolation=InterpolationMode.NEAREST_EXACT)
    assert torch.equal(torch.from_numpy(val[0]["segmentations"]).permute(0, 3, 1, 2), expected)
    bicubic = resize_short_side_uint8(_jpegs(release, 0), 12, "bicubic")
    assert bicubic.shape[1:] == (12, 17, 3) and bicubic.dtype == np.uint8


def test_converted_shards_feed_the_datamodule(release, tmp_path):
    convert_ytvis(release.src, tmp_path / "ytvis2021_resized", resize=None, n_val=2)
    dm = ShardDataModule(
        data_dir=str(tmp_path),
        layout="ytvis",
        convert_command="-",
        train_shards="ytvis2021_resized/ytvis-train-000000.tar",
        val_shards="ytvis2021_resized/ytvis-validation-000000.tar",
        n_mask_channels=25,
        input_size=14,
        mask_size=7,
        train_clip_frames=2,
        val_protocol="videos",
        val_chunk_frames=6,
        shuffle_size=2,
        hflip=True,
        train_crops=None,
        batch_size=2,
        val_batch_size=1,
        num_workers=0,
    )
    dm.setup("fit")
    assert frames_to_video(next(iter(dm.train_dataloader())))["video"].shape == (2, 2, 3, 14, 14)
    val = list(dm.val_dataloader())
    assert [b["masks"].shape[1] for b in val] == [m.shape[0] for m in release.masks[3:]]
    assert val[0]["masks"].shape[2:] == (25, 7, 7) and val[0]["masks"].any()


def test_limit_and_errors(release, tmp_path):
    written = convert_ytvis(release.src, tmp_path / "out", resize=None, n_val=2, limit=1)
    assert len(list(read_samples(written["train"], ("video",)))) == 1
    with pytest.raises(SlotsweepError, match=r"instances.json not found: --src must be the YouTube-VIS 2021"):
        convert_ytvis(tmp_path, tmp_path / "out")
    with pytest.raises(SlotsweepError, match="--val-videos 300 is invalid: .* has 5 videos"):
        convert_ytvis(release.src, tmp_path / "out")
    with pytest.raises(SlotsweepError, match="--resize-mode 'area' is invalid"):
        convert_ytvis(release.src, tmp_path / "out", resize_mode="area")
