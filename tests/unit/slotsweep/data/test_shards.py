"""Tests of the WebDataset shard reader on tiny shards in the reference's exact format."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from real_formats import YTVIS_LENGTHS, write_coco_shards, write_movi_shards, write_tar, write_ytvis_shards
from slotsweep.data.layouts import LAYOUTS
from slotsweep.data.shards import ShardDataModule, read_samples, write_shards
from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError

MOVI = dict(
    layout="movi",
    train_shards="movi_c/movi_c-train-{000000..000002}.tar",
    val_shards="movi_c/movi_c-validation-{000000..000002}.tar",
    n_mask_channels=11,
    val_protocol="videos",
)
YTVIS = dict(
    layout="ytvis",
    train_shards="ytvis2021_resized/ytvis-train-{000000..000002}.tar",
    val_shards="ytvis2021_resized/ytvis-validation-{000000..000002}.tar",
    n_mask_channels=25,
    val_protocol="chunks",
)
COCO = dict(
    layout="coco",
    train_shards="coco/coco-train-{000000..000002}.tar",
    val_shards="coco/coco-validation-{000000..000002}.tar",
    n_mask_channels=63,
    val_protocol="videos",
    train_clip_frames=1,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """MOVi (8 frames of 16x16: 6 train, 5 val videos), YT-VIS and COCO shards, 2 samples a shard."""
    root = tmp_path_factory.mktemp("shards")
    write_movi_shards(root, n_frames=8, size=16)
    write_ytvis_shards(root)
    write_coco_shards(root)
    return root


def datamodule(root: Path, spec: dict, **overrides) -> ShardDataModule:
    args = dict(
        data_dir=str(root),
        convert_command="python src/convert.py movi --variant movi_c --out {data_dir}/movi_c",
        input_size=16,
        mask_size=8,
        train_clip_frames=4,
        val_chunk_frames=6,
        shuffle_size=4,
        hflip=False,
        train_crops=None,
        batch_size=2,
        val_batch_size=2,
        num_workers=0,
    )
    dm = ShardDataModule(**{**args, **spec, **overrides})
    dm.setup("fit")
    return dm


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) normalised -> (..., H, W, 3) uint8."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (video * std + mean).mul(255).round().byte().movedim(-3, -1).numpy()


def stored(paths, key="video") -> dict[str, np.ndarray]:
    """{sample key: array} read with tarfile and numpy only."""
    arrays = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                name, _, ext = member.name.partition(".")
                if ext == f"{key}.npy":
                    arrays[name] = np.load(io.BytesIO(tar.extractfile(member).read()))
    return arrays


def test_missing_shards_are_one_line_naming_path_env_and_converter(tmp_path):
    dm = ShardDataModule(
        **{
            **MOVI,
            "data_dir": str(tmp_path),
            "convert_command": "python src/convert.py movi --variant movi_c --out {data_dir}/movi_c",
            "input_size": 16,
            "mask_size": 8,
            "train_clip_frames": 4,
            "val_chunk_frames": 6,
            "shuffle_size": 4,
            "hflip": False,
            "train_crops": None,
            "batch_size": 2,
            "val_batch_size": 2,
            "num_workers": 0,
        }
    )
    with pytest.raises(SlotsweepError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert "\n" not in message
    assert f"{tmp_path}/movi_c/movi_c-train-000000.tar" in message
    assert "3 of 3 shards missing" in message and "dataset.train_shards" in message
    assert "paths.data_dir" in message and "SLOTSWEEP_DATA_DIR" in message
    assert f"python src/convert.py movi --variant movi_c --out {tmp_path}/movi_c" in message
    with pytest.raises(SlotsweepError, match="dataset.val_shards: 3 of 3"):
        dm.setup("validate")  # validation alone needs only the validation shards


def test_train_clips_are_random_aligned_chunks_of_stored_videos(root):
    dm = datamodule(root, MOVI)
    videos = stored(dm.train_paths)
    starts = set()
    batches = iter(dm.train_dataloader())
    for _ in range(12):  # 24 clips from 6 videos: the stream resamples shards without end
        batch = frames_to_video(next(batches))
        assert batch["video"].shape == (2, 4, 3, 16, 16) and batch["video"].dtype == torch.float32
        for clip in to_uint8(batch["video"]):  # 16x16 stored and input, no flip: the stored pixels
            found = [
                (key, s) for key, v in videos.items() for s in range(5) if np.array_equal(v[s : s + 4], clip)
            ]
            assert len(found) == 1
            starts.add(found[0][1])
    assert starts <= {0, 4} and starts == {0, 4}  # aligned, non-overlapping chunks, both drawn


def test_train_batches_of_every_layout(root):
    for spec, T in [(YTVIS, 4), (COCO, 1)]:
        dm = datamodule(root, spec, input_size=12)
        batch = frames_to_video(next(iter(dm.train_dataloader())))
        assert set(batch) == {"video"} and batch["video"].shape == (2, T, 3, 12, 12)


def _clip_ids(batches) -> list[str]:
    """A content hash per validation clip (rgb and masks), to count how often each is seen."""
    ids = []
    for batch in batches:
        assert batch["masks"].dtype == torch.bool and batch["rgb"].dtype == torch.uint8
        for rgb, masks in zip(batch["rgb"], batch["masks"], strict=True):
            ids.append(hashlib.sha1(rgb.numpy().tobytes() + masks.numpy().tobytes()).hexdigest())
    return ids


def _expected_ids(dm: ShardDataModule) -> list[str]:
    """The same hashes, from clips read one by one in the main process, in the set's order."""
    stream = dm.val_dataloader().dataset
    return _clip_ids(
        {k: v[None] for k, v in clip.items()} for path in stream.items for clip in stream.read(path)
    )


def _indexed_ids(batches) -> list[tuple[int, str]]:
    """(index, content hash) of every validation clip."""
    batches = list(batches)
    indices = [int(i) for batch in batches for i in batch["index"]]
    return list(zip(indices, _clip_ids(batches), strict=True))


@pytest.mark.parametrize("spec", [MOVI, YTVIS, COCO], ids=["movi", "ytvis", "coco"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_validation_sees_every_clip_exactly_once(root, spec, num_workers):
    dm = datamodule(root, spec, num_workers=num_workers)
    expected = _expected_ids(dm)
    n_clips = {"movi": 5, "ytvis": sum(T // 6 for T in YTVIS_LENGTHS), "coco": 5}[spec["layout"]]
    assert len(expected) == len(set(expected)) == n_clips
    loader = dm.val_dataloader()
    assert loader.dataset.counts == [len(list(loader.dataset.read(p))) for p in loader.dataset.items]
    assert sorted(_clip_ids(loader)) == sorted(expected)
    assert sorted(_clip_ids(loader)) == sorted(expected)  # the next validation (persistent workers)


def test_validation_split_over_two_ranks_and_two_workers(root, monkeypatch):
    seen = []
    for rank in range(2):  # what each DDP rank reads (RANK/WORLD_SIZE as torchrun and Lightning set)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen += _indexed_ids(datamodule(root, YTVIS, num_workers=2).val_dataloader())
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    # every clip once, numbered by its place in the whole set as one process numbers it
    assert sorted(seen) == list(enumerate(_expected_ids(datamodule(root, YTVIS))))
    assert sorted(seen) == _indexed_ids(datamodule(root, YTVIS).val_dataloader())


def test_validation_batches_hold_masks_at_mask_size(root):
    batch = next(iter(datamodule(root, MOVI).val_dataloader()))
    assert batch["video"].shape == (2, 8, 3, 16, 16)  # whole 8-frame videos
    assert batch["rgb"].shape == (2, 8, 16, 16, 3) and batch["masks"].shape == (2, 8, 11, 8, 8)
    assert (batch["masks"].sum(dim=2) == 1).all()  # MOVi: one-hot, background included
    ids = stored(datamodule(root, MOVI).val_paths, "segmentations")
    first = ids[sorted(ids)[0]][..., 0]  # (T, 16, 16) ids of the first validation video
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(first)[:, None].float(), size=(8, 8), mode="nearest-exact"
    )[:, 0].long()
    assert torch.equal(batch["masks"][0].long().argmax(dim=1), expected)


def test_ytvis_protocols_chunks_and_whole_videos(root):
    chunks = list(datamodule(root, YTVIS).val_dataloader())
    assert all(b["video"].shape[1] == 6 for b in chunks)
    assert sum(len(b["video"]) for b in chunks) == sum(T // 6 for T in YTVIS_LENGTHS)
    videos = list(datamodule(root, YTVIS, val_protocol="videos").val_dataloader())
    lengths = [b["video"].shape[1] for b in videos for _ in range(len(b["video"]))]
    assert lengths == list(YTVIS_LENGTHS)  # every video once, whole, in order; lengths differ
    assert datamodule(root, YTVIS).ignore_background is False
    assert datamodule(root, COCO).ignore_overlaps is True
    assert datamodule(root, MOVI).ignore_background is True


def test_unreadable_shard_and_missing_key_are_named(root, tmp_path):
    bad = tmp_path / "movi_c" / "movi_c-validation-000000.tar"
    bad.parent.mkdir()
    bad.write_bytes(b"not a tar file" * 100)
    dm = datamodule(
        tmp_path,
        MOVI,
        val_shards="movi_c/movi_c-validation-000000.tar",
        train_shards="movi_c/movi_c-validation-000000.tar",
    )
    with pytest.raises(SlotsweepError, match=f"cannot read {bad}"):
        next(iter(dm.val_dataloader()))
    no_masks = tmp_path / "movi_c" / "movi_c-validation-000001.tar"
    write_tar(no_masks, [{"__key__": "v0", "video.npy": np.zeros((8, 16, 16, 3), np.uint8)}])
    dm = datamodule(
        tmp_path,
        MOVI,
        val_shards="movi_c/movi_c-validation-000001.tar",
        train_shards="movi_c/movi_c-validation-000001.tar",
    )
    with pytest.raises(SlotsweepError, match=rf"sample v0 of {no_masks} has no \['segmentations.npy'\]"):
        next(iter(dm.val_dataloader()))


def test_write_shards_round_trips_in_the_reference_layout(tmp_path):
    rng = np.random.default_rng(0)
    samples = [
        {
            "__key__": f"{i:06d}",
            "video.npy": rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8),
            "segmentations.npy": rng.integers(0, 3, (3, 4, 5, 1), dtype=np.uint8),
        }
        for i in range(5)
    ]
    paths = write_shards(samples, str(tmp_path / "x-train-%06d.tar"), per_shard=2)
    assert [p.name for p in paths] == ["x-train-000000.tar", "x-train-000001.tar", "x-train-000002.tar"]
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert sorted(names) == [
        "000000.segmentations.npy",
        "000000.video.npy",
        "000001.segmentations.npy",
        "000001.video.npy",
    ]
    assert not list(tmp_path.glob("*.partial"))
    read = list(read_samples(paths, ("video", "segmentations")))
    assert [r["__key__"] for r in read] == [s["__key__"] for s in samples]
    for r, s in zip(read, samples, strict=True):
        assert np.array_equal(r["video"], s["video.npy"]) and r["video"].dtype == np.uint8
        assert np.array_equal(r["segmentations"], s["segmentations.npy"])
    only_video = next(read_samples(paths, ("video",)))
    assert set(only_video) == {"__key__", "__url__", "video"}  # other files are not decoded


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("layout", "kitti", r"dataset.layout='kitti' is invalid: choose from \['coco', 'movi', 'ytvis'\]"),
        (
            "val_protocol",
            "frames",
            r"dataset.val_protocol='frames' is invalid: choose from \('videos', 'chunks'\)",
        ),
        ("batch_size", 0, "dataset.batch_size=0 is invalid: must be an integer >= 1"),
        ("num_workers", -1, "dataset.num_workers=-1 is invalid"),
        ("prefetch_factor", 0, "dataset.prefetch_factor=0 is invalid: must be >= 1"),
    ],
)
def test_bad_arguments_name_the_key(root, key, value, match):
    with pytest.raises(SlotsweepError, match=match):
        datamodule(root, {**MOVI, key: value})
    assert set(LAYOUTS) == {"movi", "ytvis", "coco"}


def test_images_need_one_frame_clips(root):
    with pytest.raises(SlotsweepError, match="dataset.train_clip_frames=4 is invalid: images have 1 frame"):
        datamodule(root, {**COCO, "train_clip_frames": 4})
