"""COCO 2017 official layout -> reference shards -> the reader, on a tiny release."""

import numpy as np
import pytest
from PIL import Image

from real_formats import write_coco_release
from slotsweep.data.converters.coco import convert_coco
from slotsweep.data.shards import ShardDataModule, read_samples
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_coco_release(tmp_path_factory.mktemp("coco"), n_train=3, n_val=4)


def test_round_trip_removes_crowds_and_keeps_overlaps(release, tmp_path):
    pytest.importorskip("pycocotools", reason="COCO polygons need pycocotools (the coco extra)")
    written = convert_coco(release.src, tmp_path / "coco")
    assert [p.name for p in written["train"]] == ["coco-train-000000.tar"]
    train = list(read_samples(written["train"], ("image",), optional=("segmentations",)))
    assert len(train) == 3 and all("segmentations" not in s for s in train)  # train: images only
    val = list(read_samples(written["validation"], ("image", "segmentations")))
    assert [s["__key__"] for s in val] == [f"{i:012d}" for i in release.val_ids]  # the file's order
    for sample, image_id, masks in zip(val, release.val_ids, release.val_masks, strict=True):
        pixels = np.asarray(Image.open(release.src / "val2017" / f"{image_id:012d}.jpg").convert("RGB"))
        assert sample["image"].shape == pixels.shape and np.array_equal(sample["image"], pixels)
        assert sample["segmentations"].dtype == np.uint8
        assert np.array_equal(sample["segmentations"], masks)  # polygons + RLE x category, no crowd
    assert val[0]["image"].shape[-1] == 3  # the greyscale JPEG became RGB
    assert val[1]["segmentations"].shape[0] == 1 and not val[1]["segmentations"].any()  # no annotation
    assert (np.count_nonzero(val[0]["segmentations"], axis=0) > 1).any()  # instances overlap


def test_converted_shards_feed_the_datamodule(release, tmp_path):
    pytest.importorskip("pycocotools", reason="COCO polygons need pycocotools (the coco extra)")
    convert_coco(release.src, tmp_path / "coco")
    dm = ShardDataModule(
        data_dir=str(tmp_path),
        layout="coco",
        convert_command="-",
        train_shards="coco/coco-train-000000.tar",
        val_shards="coco/coco-validation-000000.tar",
        n_mask_channels=63,
        input_size=14,
        mask_size=14,
        train_clip_frames=1,
        val_protocol="videos",
        val_chunk_frames=1,
        shuffle_size=8,
        hflip=True,
        train_crops=None,
        batch_size=3,
        val_batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    assert frames_to_video(next(iter(dm.train_dataloader())))["video"].shape == (3, 1, 3, 14, 14)
    (val,) = list(dm.val_dataloader())
    assert val["masks"].shape == (4, 1, 63, 14, 14) and val["rgb"].shape == (4, 1, 14, 14, 3)
    assert val["masks"][:, 0, :3].flatten(1).any(1).tolist() == [True, False, True, True]


def test_train_split_needs_no_pycocotools_and_errors_name_the_fix(release, tmp_path):
    written = convert_coco(release.src, tmp_path / "coco", splits=("train",), limit=2)
    assert list(written) == ["train"] and len(list(read_samples(written["train"], ("image",)))) == 2
    with pytest.raises(
        SlotsweepError, match="instances_val2017.json not found: --src must be the COCO 2017 root"
    ):
        convert_coco(tmp_path, tmp_path / "out", splits=("validation",))
    with pytest.raises(SlotsweepError, match="--splits 'test' is invalid"):
        convert_coco(release.src, tmp_path / "out", splits=("test",))
