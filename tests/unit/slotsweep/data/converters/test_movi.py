"""MOVi export: TFDS-format examples -> reference shards -> the reader; the TFDS path where installed."""

import importlib.util

import numpy as np
import pytest

from slotsweep.data.converters.movi import convert_movi, movi_samples
from slotsweep.data.shards import ShardDataModule, read_samples, write_shards
from slotsweep.errors import SlotsweepError


def _examples(n: int, seed: int = 0):
    """Examples as tfds.as_numpy yields them for movi_c/128x128 (shrunk to 8 frames of 16x16)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {
            "video": rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
            "segmentations": rng.integers(0, 11, (8, 16, 16, 1), dtype=np.uint8),
            "forward_flow": rng.integers(0, 2**16, (8, 16, 16, 2), dtype=np.uint16),
            "metadata": {"num_instances": 10},
        }


def test_examples_become_reference_samples(tmp_path):
    samples = list(movi_samples(_examples(3), with_masks=True))
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002"]
    assert set(samples[0]) == {"__key__", "video.npy", "segmentations.npy"}  # flow is not exported
    assert list(movi_samples(_examples(1), with_masks=False))[0].keys() == {"__key__", "video.npy"}
    write_shards(samples, str(tmp_path / "movi_c" / "movi_c-validation-%06d.tar"), per_shard=2)
    write_shards(movi_samples(_examples(3, 1), False), str(tmp_path / "movi_c" / "movi_c-train-%06d.tar"), 2)
    read = list(
        read_samples([tmp_path / "movi_c" / "movi_c-validation-000000.tar"], ("video", "segmentations"))
    )
    for got, example in zip(read, _examples(2), strict=False):
        assert np.array_equal(got["video"], example["video"])
        assert np.array_equal(got["segmentations"], example["segmentations"])
    dm = ShardDataModule(
        data_dir=str(tmp_path),
        layout="movi",
        convert_command="-",
        train_shards="movi_c/movi_c-train-{000000..000001}.tar",
        val_shards="movi_c/movi_c-validation-{000000..000001}.tar",
        n_mask_channels=11,
        input_size=16,
        mask_size=16,
        train_clip_frames=4,
        val_protocol="videos",
        val_chunk_frames=6,
        shuffle_size=2,
        hflip=False,
        train_crops=None,
        batch_size=2,
        val_batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    (val,) = list(dm.val_dataloader())
    ids = np.stack([e["segmentations"][..., 0] for e in _examples(3)])
    assert np.array_equal(val["masks"].long().argmax(dim=2).numpy(), ids)  # one-hot, channel = id


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is not None,
    reason="tensorflow-datasets is installed: the missing-extra message cannot be shown",
)
def test_without_tfds_the_error_names_the_extra(tmp_path):
    with pytest.raises(
        SlotsweepError, match=r"exporting MOVi from TFDS needs pip install 'slotsweep\[movi\]'"
    ):
        convert_movi("movi_c", tmp_path, splits=("validation",))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is None,
    reason="tensorflow-datasets (the movi extra) is not installed: the TFDS export is not run",
)
def test_tfds_export_of_a_few_validation_videos(tmp_path):
    """Reads the public kubric bucket: needs network access (gs://kubric-public/tfds)."""
    written = convert_movi("movi_c", tmp_path, splits=("validation",), limit=2)
    (sample, _) = list(read_samples(written["validation"], ("video", "segmentations")))
    assert sample["video"].shape == (24, 128, 128, 3) and sample["segmentations"].shape == (24, 128, 128, 1)


def test_bad_variant_and_split(tmp_path):
    with pytest.raises(
        SlotsweepError, match=r"--variant 'movi_f' is invalid: choose from \('movi_c', 'movi_e'\)"
    ):
        convert_movi("movi_f", tmp_path)
    with pytest.raises(SlotsweepError, match="--splits 'test' is invalid"):
        convert_movi("movi_c", tmp_path, splits=("test",))
