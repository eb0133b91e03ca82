"""The video-file backend: mp4 + lossless masks, decoded with decord; corrupt files; shards -> mp4."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from real_formats import write_movi_shards, write_ytvis_shards
from slotsweep.data.converters.videos import shards_to_videos
from slotsweep.data.layouts import LAYOUTS
from slotsweep.data.shards import read_samples
from slotsweep.data.video_files import (
    VideoFolderDataModule,
    read_frames,
    read_masks,
    scan_videos,
    write_masks,
    write_video,
)
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError


def _clip(T=7, H=13, W=21, seed=0):
    """Smooth frames (x264 keeps them close) and their instance ids (0 = background)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((T, H, W), np.uint8)
    ids[:, 2:8, 3:10] = 1
    ids[:, 6:12, 12:20] = 2
    colours = rng.integers(30, 220, (3, 3))
    return colours[ids].astype(np.uint8), ids


def _folder(root: Path, n_train=3, n_val=3, T=7) -> Path:
    for i in range(n_train):
        write_video(root / f"train{i}.mp4", _clip(T + i, seed=i)[0])
    (root / "validation").mkdir(parents=True)
    for i in range(n_val):
        frames, ids = _clip(T + 3 * i, seed=10 + i)
        write_video(root / "validation" / f"val{i}.mp4", frames)
        masks = ids[:, None] == np.arange(1, 3)[None, :, None, None]  # (T, 2, H, W), no background
        write_masks(root / "validation" / f"val{i}.masks.npz", masks, background=False)
    return root


def datamodule(root: Path, **overrides) -> VideoFolderDataModule:
    args = dict(
        root=str(root),
        extensions=[".mp4"],
        n_mask_channels=4,
        ignore_background=False,
        ignore_overlaps=False,
        input_size=12,
        mask_size=6,
        train_clip_frames=4,
        val_protocol="videos",
        val_chunk_frames=3,
        hflip=True,
        train_crops=None,
        batch_size=2,
        val_batch_size=2,
        num_workers=0,
        skip_corrupt=False,
    )
    return VideoFolderDataModule(**{**args, **overrides})


def test_mp4_round_trip_with_random_access(tmp_path):
    frames, _ = _clip(T=9, H=13, W=21)  # odd sides: 4:4:4 chroma needs no even size
    write_video(tmp_path / "a.mp4", frames)
    (clip,) = scan_videos(tmp_path, (".mp4",), skip_corrupt=False)
    assert clip.n_frames == 9 and clip.masks is None
    decoded = read_frames(tmp_path / "a.mp4", [0, 4, 8])
    assert decoded.shape == (3, 13, 21, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames[[0, 4, 8]]).mean() < 3  # lossy, but close


@pytest.mark.parametrize("background", [False, True])
def test_masks_are_stored_losslessly(tmp_path, background):
    _, ids = _clip()
    channels = np.arange(3) if background else np.arange(1, 3)
    masks = ids[:, None] == channels[None, :, None, None]
    write_masks(tmp_path / "m.npz", masks, background=background)
    assert set(np.load(tmp_path / "m.npz")) == {"ids", "background"}  # no overlap: stored as ids
    back = read_masks(tmp_path / "m.npz", n_channels=5, background=background)
    assert back.shape == (7, 5, 13, 21) and np.array_equal(back[:, : len(channels)], masks)
    assert not back[:, len(channels) :].any()
    with pytest.raises(
        SlotsweepError, match=f"dataset.ignore_background={not background}; set it to {background}"
    ):
        read_masks(tmp_path / "m.npz", 5, background=not background)


def test_overlapping_masks_are_stored_as_channels(tmp_path):
    masks = np.zeros((2, 3, 4, 4), bool)
    masks[:, 0, :2] = masks[:, 1, 1:3] = True  # row 1 is in two instances
    write_masks(tmp_path / "m.npz", masks, background=False)
    assert "masks" in np.load(tmp_path / "m.npz")
    assert np.array_equal(read_masks(tmp_path / "m.npz", 3, background=False), masks)
    with pytest.raises(SlotsweepError, match=r"has 3 instance channels, more than dataset.n_mask_channels=2"):
        read_masks(tmp_path / "m.npz", 2, background=False)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(SlotsweepError, match="bad.npz is not a readable .npz"):
        read_masks(tmp_path / "bad.npz", 3, background=False)


def test_corrupt_videos_are_named_or_skipped_and_counted(tmp_path, caplog):
    write_video(tmp_path / "good.mp4", _clip()[0])
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.mp4").write_bytes(b"")
    write_video(tmp_path / "w16.mp4", np.zeros((2, 8, 16, 3), np.uint8))  # a width decord mis-decodes
    with pytest.raises(
        SlotsweepError, match=rf"video {tmp_path}/truncated.mp4 is unreadable .*dataset.skip_corrupt"
    ):
        scan_videos(tmp_path, (".mp4",), skip_corrupt=False)
    with caplog.at_level(logging.WARNING):
        clips = scan_videos(tmp_path, (".mp4",), skip_corrupt=True)
    assert [c.path.name for c in clips] == ["good.mp4"]
    assert "skipped 3 unreadable videos" in caplog.text


def _ids(batches) -> list[str]:
    return [hashlib.sha1(rgb.numpy().tobytes()).hexdigest() for batch in batches for rgb in batch["rgb"]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_folder_datamodule_train_and_every_validation_clip_once(tmp_path, num_workers):
    dm = datamodule(_folder(tmp_path), num_workers=num_workers)
    dm.setup("fit")
    assert (dm.ignore_background, dm.ignore_overlaps) == (False, False)
    train = [frames_to_video(batch) for batch in dm.train_dataloader()]
    assert len(train) == 1 and train[0]["video"].shape == (2, 4, 3, 12, 12)  # 3 clips, last dropped
    val = list(dm.val_dataloader())
    assert [b["video"].shape[1] for b in val] == [7, 10, 13]  # whole videos, one length a batch
    assert val[0]["masks"].shape == (1, 7, 4, 6, 6) and val[0]["masks"][:, :, :2].any()
    assert val[0]["masks"][:, :, 2:].sum() == 0  # padded channels
    single = datamodule(tmp_path, num_workers=0)
    single.setup("validate")
    assert sorted(_ids(val)) == sorted(_ids(single.val_dataloader()))
    chunks = datamodule(tmp_path, val_protocol="chunks", num_workers=num_workers)
    chunks.setup("validate")
    indices = torch.cat([b["index"] for b in chunks.val_dataloader()])
    assert sorted(indices.tolist()) == list(range(7 // 3 + 10 // 3 + 13 // 3))  # each chunk once


def test_without_masks_it_trains_and_validates_nothing(tmp_path, caplog):
    write_video(tmp_path / "mine.mp4", _clip(T=6)[0])
    write_video(tmp_path / "short.mp4", _clip(T=2)[0])
    dm = datamodule(tmp_path, batch_size=1)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "no validation videos with masks" in caplog.text and "training only, no metrics" in caplog.text
    assert "1 videos shorter than 4 frames" in caplog.text
    assert dm.val_dataloader() == []
    assert frames_to_video(next(iter(dm.train_dataloader())))["video"].shape == (1, 4, 3, 12, 12)
    with pytest.raises(SlotsweepError, match=rf"dataset.root={tmp_path}/nothing is not a folder"):
        datamodule(tmp_path / "nothing").setup("fit")


def test_masks_must_match_their_video(tmp_path):
    _folder(tmp_path, n_train=1, n_val=1)
    write_masks(tmp_path / "validation" / "val0.masks.npz", np.zeros((3, 1, 13, 21), bool), background=False)
    dm = datamodule(tmp_path)
    dm.setup("validate")
    with pytest.raises(SlotsweepError, match=r"val0.masks.npz has 3 frames .*val0.mp4 has 7"):
        list(dm.val_dataloader())


@pytest.mark.parametrize("layout", ["movi", "ytvis"])
def test_shards_to_videos_round_trip(tmp_path, layout):
    if layout == "movi":
        shards = write_movi_shards(tmp_path / "shards", n_train=2, n_val=2, n_frames=6, size=20)
    else:
        shards = write_ytvis_shards(tmp_path / "shards", n_train=2, lengths=(7, 6, 5))
    out = tmp_path / "videos"
    train = shards_to_videos(shards["train"], LAYOUTS[layout], out)
    val = shards_to_videos(shards["validation"], LAYOUTS[layout], out / "validation")
    assert len(train) == 2 and not list(out.glob("*.masks.npz"))
    samples = list(read_samples(shards["validation"], ("video", "segmentations")))
    assert [p.stem for p in val] == [s["__key__"] for s in samples]
    for path, sample in zip(val, samples, strict=True):
        stored = LAYOUTS[layout].to_masks(sample["segmentations"], None, "x")
        back = read_masks(
            path.with_name(path.stem + ".masks.npz"), stored.shape[1], LAYOUTS[layout].ignore_background
        )
        assert np.array_equal(back, stored)  # masks: exact
        frames = read_frames(path, list(range(len(sample["video"]))))
        assert np.abs(frames.astype(int) - sample["video"]).mean() < 20  # noisy frames, lossy codec
    dm = datamodule(out, ignore_background=layout == "movi", n_mask_channels=11, train_clip_frames=2)
    dm.setup("fit")
    assert len(list(dm.val_dataloader())) >= 1
    assert torch.is_tensor(frames_to_video(next(iter(dm.train_dataloader())))["video"])
