"""The reference's WebDataset shards (videosaur.md §5), read unchanged, and written by the converters.

A shard is a tar of samples; a sample is `<key>.<name>.npy` files (`video.npy`, `image.npy`,
`segmentations.npy`, ...). Shard names are brace patterns relative to the data root, e.g.
`movi_c/movi_c-train-{000000..000304}.tar`. The train stream resamples shards with replacement
forever, yields one random aligned chunk per visit of a video, shuffles through a buffer and
batches inside each worker. The validation stream reads every shard once, split over DDP ranks and
DataLoader workers (streams.ValidationStream, each clip numbered by its place in the whole set),
and yields every video whole or every aligned chunk of it (`val_protocol`).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import lightning as L
import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from slotsweep.cache import ClipSource, ClipViews, FeatureStore
from slotsweep.config import check_shards
from slotsweep.contracts import val_frames
from slotsweep.data import cache_sources
from slotsweep.data.arguments import check, check_positive_ints
from slotsweep.data.layouts import LAYOUTS, SampleLayout
from slotsweep.data.streams import ValidationStream, chunk_starts, stream_rng
from slotsweep.data.video_transforms import ClipTransform, collate_clips
from slotsweep.errors import SlotsweepError

__all__ = [
    "ShardDataModule",
    "TrainClips",
    "ValClips",
    "VAL_PROTOCOLS",
    "expand_shards",
    "read_samples",
    "stored_frame_counts",
    "write_shards",
]

log = logging.getLogger(__name__)

VAL_PROTOCOLS = ("videos", "chunks")  # whole videos (later papers), or every aligned chunk (reference)
_SHUFFLE_INITIAL_FRACTION = 0.5  # start yielding once the buffer is half full (faster first batch)


def expand_shards(data_dir: str | Path, pattern: str) -> list[Path]:
    """Shard paths of a brace pattern relative to data_dir (absolute patterns are kept)."""
    return [Path(data_dir) / name for name in braceexpand(pattern)]


def _reraise(error: Exception) -> bool:
    """webdataset's error handler: the shard named, the original error kept as the cause."""
    urls = [a for a in error.args[1:] if isinstance(a, str)]
    where = urls[-1] if urls else "a shard"
    raise SlotsweepError(f"cannot read {where}: {error.args[0] if error.args else error!r}") from error


def _npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy file at the stream's position, which then is the
    start of the array's bytes."""
    version = np.lib.format.read_magic(stream)  # 2.0 and 3.0 share a header layout
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise SlotsweepError(f"{where} is not a readable .npy array ({error})") from error


def read_samples(
    paths: Iterable[str | Path], keys: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[dict[str, np.ndarray]]:
    """Samples of the given shards, in order, with the `<key>.npy` arrays of `keys` decoded.

    Other files of a sample (e.g. MOVi's `forward_flow.npy`) are not decoded; `optional` keys are
    decoded where a sample has them.

    Yields:
        {"__key__": str, "__url__": str, key: array for key in keys (and optional keys present)}.
    """
    for sample, where in _raw_samples(paths, keys):
        present = [*keys, *(k for k in optional if f"{k}.npy" in sample)]
        decoded = {k: _decode(sample[f"{k}.npy"], f"{k}.npy of {where}") for k in present}
        yield {"__key__": sample["__key__"], "__url__": sample["__url__"], **decoded}


def _raw_samples(paths: Iterable[str | Path], keys: tuple[str, ...]) -> Iterator[tuple[dict, str]]:
    """(sample with its files' bytes, "sample <key> of <shard>") of the shards in order; every
    sample has `<key>.npy` for each of keys."""
    sources = ({"url": str(path)} for path in paths)
    for sample in wds.tarfile_samples(sources, handler=_reraise):
        where = f"sample {sample['__key__']} of {sample['__url__']}"
        missing = [k for k in keys if f"{k}.npy" not in sample]
        if missing:
            found = sorted(k for k in sample if not k.startswith("__"))
            raise SlotsweepError(f"{where} has no {[f'{k}.npy' for k in missing]} (it has {found})")
        yield sample, where


class StoredFrames(NamedTuple):
    """A stored frames array (`video.npy` or `image.npy`) not yet decoded: its bytes and header."""

    data: bytes
    shape: tuple[int, ...]  # as stored: (T, H, W, 3), or (H, W, 3) for an image
    offset: int  # where the array's bytes start; -1: not a plain C-order uint8 array
    where: str  # "<key>.npy of sample <key> of <shard>", for messages

    @classmethod
    def parse(cls, data: bytes, where: str) -> StoredFrames:
        stream = io.BytesIO(data)
        try:
            shape, fortran_order, dtype = _npy_header(stream)
        except ValueError as error:
            raise SlotsweepError(f"{where} is not a readable .npy array ({error})") from error
        plain = dtype == np.uint8 and not fortran_order and len(shape) >= 3
        return cls(data, tuple(shape), stream.tell() if plain else -1, where)

    def frames(self, layout: SampleLayout, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as (stop - start, H, W, 3) uint8, a copy of their bytes alone (the
        rest of the video is never decoded)."""
        if self.offset < 0:  # an unusual array (e.g. Fortran order): decode it whole
            return layout.to_frames(_decode(self.data, self.where))[start:stop].copy()
        frame_shape = self.shape[-3:]
        size = int(np.prod(frame_shape))
        array = np.frombuffer(self.data, np.uint8, (stop - start) * size, self.offset + start * size)
        return array.reshape(stop - start, *frame_shape).copy()


def stored_frame_counts(path: str | Path, layout: SampleLayout) -> Iterator[int]:
    """The frame count of each sample of a shard, from the tar and .npy headers alone (no decoding)."""
    suffix = f"{layout.frames_key}.npy"
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if Path(member.name).name.partition(".")[2] != suffix:  # webdataset's key split
                    continue
                with tar.extractfile(member) as data:
                    shape = _npy_header(data)[0]
                yield layout.n_frames(shape)
    except (OSError, tarfile.TarError, ValueError) as error:
        raise SlotsweepError(f"cannot read {path}: {error}") from error


def write_shards(samples: Iterable[dict], pattern: str, per_shard: int) -> list[Path]:
    """Write samples as the reference does: `per_shard` per tar, numbered from 0 into `pattern`.

    Args:
        samples: {"__key__": str (no dots), "<name>.npy": array, ...} in order.
        pattern: printf pattern of the shard paths, e.g. "out/ytvis-train-%06d.tar".
    Each shard is written under a temporary name and renamed when complete, so an interrupted
    conversion leaves no truncated shard behind.
    """
    paths = []
    samples = iter(samples)
    for index in itertools.count():
        group = list(itertools.islice(samples, per_shard))
        if not group:
            break
        path = Path(pattern % index)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with wds.TarWriter(str(partial)) as sink:
            for sample in group:
                sink.write(sample)
        os.replace(partial, path)
        paths.append(path)
        log.info("wrote %s (%d samples)", path, len(group))
    return paths


class _Chunk(NamedTuple):
    """A train chunk on its way through the shuffle buffer: its frames, or where they are cached."""

    frames: np.ndarray | None  # (clip_frames, H, W, 3) uint8; None when read from the cache
    index: int  # the clip's index in the feature store (-1 without one)
    start: int  # first frame of the chunk in the clip


class TrainClips(IterableDataset):
    """Endless train batches: shards drawn with replacement, one random chunk per video visit.

    Args:
        paths: shard files.
        layout: the dataset's sample format.
        transform: draws a chunk's view ({"frames", "view"}: `ClipTransform.train`).
        clip_frames: frames per chunk (images: 1).
        shuffle_size: samples in the shuffle buffer.
        batch_size: clips per batch; batches are made in the worker, none is partial.
        features: the split's feature cache: chunks then hold {"features", "keys"} of the same
            frames and view, read without opening a shard (the random draws are the same).
    """

    def __init__(
        self,
        paths: list[Path],
        layout: SampleLayout,
        transform: ClipTransform,
        clip_frames: int,
        shuffle_size: int,
        batch_size: int,
        features: FeatureStore | None = None,
    ) -> None:
        self.paths, self.layout, self.transform = [str(p) for p in paths], layout, transform
        self.clip_frames, self.shuffle_size, self.batch_size = clip_frames, shuffle_size, batch_size
        self.features = features
        self._cached: dict[str, list[int]] = {path: [] for path in self.paths}  # shard -> clips
        for index, clip in enumerate(features.clips if features is not None else []):
            self._cached[self.paths[clip["shard"]]].append(index)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        rng = stream_rng()
        shards = (rng.choice(self.paths) for _ in itertools.count())  # resampled: never ends
        chunks = self._random_chunks(shards, rng)
        initial = max(1, int(self.shuffle_size * _SHUFFLE_INITIAL_FRACTION))
        shuffled = wds.shuffle(self.shuffle_size, initial=initial, rng=rng)(chunks)
        clips = (self._sample(chunk, rng) for chunk in shuffled)
        return wds.batched(self.batch_size, collation_fn=collate_clips, partial=False)(clips)

    def _clips(self, shards: Iterable[str]) -> Iterator[tuple[int, StoredFrames | None, int]]:
        """(n_frames, stored frames or None, store index) of each clip of each shard in turn."""
        if self.features is None:
            key = self.layout.frames_key
            for sample, where in _raw_samples(shards, (key,)):
                stored = StoredFrames.parse(sample[f"{key}.npy"], f"{key}.npy of {where}")
                yield self.layout.n_frames(stored.shape), stored, -1
        else:
            for shard in shards:
                for index in self._cached[shard]:
                    yield self.features.clips[index]["n_frames"], None, index

    def _random_chunks(self, shards: Iterable[str], rng) -> Iterator[_Chunk]:
        for n_frames, stored, index in self._clips(shards):
            starts = chunk_starts(n_frames, self.clip_frames)
            if len(starts) > 0:  # videos shorter than a chunk are skipped, as in the reference
                start = rng.choice(starts)
                # Only the chunk's frames are copied out: the shuffle buffer does not hold the video.
                stop = start + self.clip_frames
                chunk = None if stored is None else stored.frames(self.layout, start, stop)
                yield _Chunk(chunk, index, start)

    def _sample(self, chunk: _Chunk, rng) -> dict[str, Tensor]:
        if self.features is None:
            return self.transform.train(chunk.frames, rng)
        frames = slice(chunk.start, chunk.start + self.clip_frames)
        return cache_sources.cached_train_sample(self.features, self.transform, chunk.index, frames, rng)


class ValClips:
    """Reads one validation shard: every video of it whole, or every aligned chunk of it.

    Args:
        paths: all validation shards, in order (`features` numbers its clips by shard position).
        layout: the dataset's sample format.
        transform: turns a clip and its masks into {"video", "rgb", "masks"}.
        n_mask_channels: K of the masks.
        chunk_frames: frames per chunk, or None for whole videos.
        features: the split's feature cache: clips then hold {"features", "keys"} instead of "video".
    """

    def __init__(
        self,
        paths: list[Path],
        layout: SampleLayout,
        transform: ClipTransform,
        n_mask_channels: int,
        chunk_frames: int | None,
        features: FeatureStore | None = None,
    ) -> None:
        self.layout, self.transform = layout, transform
        self.n_mask_channels, self.chunk_frames = n_mask_channels, chunk_frames
        self.features = features
        paths = [str(p) for p in paths]
        self._cached = {  # (shard, sample key) -> clip index in the store
            (paths[clip["shard"]], clip["key"]): index
            for index, clip in enumerate(features.clips if features is not None else [])
        }

    def count(self, path: str | Path) -> int:
        """How many clips `__call__(path)` yields, from the tar and .npy headers alone (no decoding)."""
        return sum(
            len(chunk_starts(n_frames, self.chunk_frames or n_frames))
            for n_frames in stored_frame_counts(path, self.layout)
        )

    def __call__(self, path: str | Path) -> Iterator[dict[str, Tensor]]:
        """The shard's transformed clips {"video", "rgb", "masks"}, in order."""
        keys = (self.layout.frames_key, self.layout.masks_key)
        for sample in read_samples([path], keys):
            where = f"sample {sample['__key__']} of {sample['__url__']}"
            frames = self.layout.to_frames(sample[self.layout.frames_key])  # (T, H, W, 3)
            masks = self.layout.to_masks(sample[self.layout.masks_key], self.n_mask_channels, where)
            length = self.chunk_frames or len(frames)
            for start in chunk_starts(len(frames), length):
                clip = self.transform.val(frames[start : start + length], masks[start : start + length])
                if self.features is not None:
                    index = self._cached[(sample["__url__"], sample["__key__"])]
                    clip = cache_sources.cached_val_sample(
                        clip, self.features, index, slice(start, start + length)
                    )
                yield clip


# Shard directories that hold the same validation videos at another storage resolution: one dataset
# for the protocol stamp (evaluation.protocol).
_SAME_DATA = {"ytvis2021_resized": "ytvis2021", "ytvis2021_resized_518": "ytvis2021"}


class ShardDataModule(L.LightningDataModule):
    """A reference dataset (MOVi-C/E, YT-VIS, COCO) from its shards; args are conf/dataset/<name>.yaml.

    Train batches: {"frames": (B, train_clip_frames, H, W, 3) uint8 as stored (zero-padded to the
    batch's largest), "views": B ClipViews}; `video_transforms.frames_to_video` turns them into
    "video" (B, train_clip_frames, 3, S, S) float32, ImageNet-normalised, on the training device.
    Val batches add {"masks": (B, T, K, M, M) bool, "rgb": (B, T, S, S, 3) uint8, "index": (B,)
    int64}, each clip once over all DDP ranks, S = input_size,
    M = mask_size, K = n_mask_channels; T is the whole video or val_chunk_frames (`val_protocol`).

    Args:
        data_dir: data root; shard patterns are relative to it.
        layout: sample format, one of LAYOUTS (movi, ytvis, coco).
        train_shards: brace pattern of the train shards.
        val_shards: brace pattern of the validation shards.
        convert_command: how to make the shards, shown when they are missing ({data_dir} filled in).
        n_mask_channels: K, mask channels per frame (MOVi: background + objects).
        input_size: model input side in pixels (the encoder's img_size).
        mask_size: validation mask side in pixels (the metric resolution).
        train_clip_frames: frames per train chunk (images: 1).
        val_protocol: "videos" (whole videos) or "chunks" (every aligned chunk of val_chunk_frames).
        val_chunk_frames: frames per validation chunk when val_protocol is "chunks".
        shuffle_size: train shuffle buffer, in clips.
        hflip: train augmentation, one horizontal flip per clip with probability 0.5.
        train_crops: train crop positions: null = any offset (the reference), n = n evenly spaced
            ones (what `cache=true` needs on non-square frames: it encodes each).
        batch_size: train clips per batch and device.
        val_batch_size: validation clips per batch.
        num_workers: DataLoader workers for train and validation (0 = main process).
        prefetch_factor: batches each worker keeps ready (with num_workers > 0); host memory per
            worker is about this many batches.
    """

    def __init__(
        self,
        data_dir: str,
        layout: str,
        train_shards: str,
        val_shards: str,
        convert_command: str,
        n_mask_channels: int,
        input_size: int,
        mask_size: int,
        train_clip_frames: int,
        val_protocol: str,
        val_chunk_frames: int,
        shuffle_size: int,
        hflip: bool,
        train_crops: int | None,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        prefetch_factor: int = 2,  # torch's default; a run config saved before this key has none
    ) -> None:
        super().__init__()
        check(layout in LAYOUTS, "layout", layout, f"choose from {sorted(LAYOUTS)}")
        check(val_protocol in VAL_PROTOCOLS, "val_protocol", val_protocol, f"choose from {VAL_PROTOCOLS}")
        check_positive_ints(
            dict(
                n_mask_channels=n_mask_channels,
                input_size=input_size,
                mask_size=mask_size,
                train_clip_frames=train_clip_frames,
                val_chunk_frames=val_chunk_frames,
                shuffle_size=shuffle_size,
                batch_size=batch_size,
                val_batch_size=val_batch_size,
            )
        )
        check(isinstance(num_workers, int) and num_workers >= 0, "num_workers", num_workers, "must be >= 0")
        check(
            isinstance(prefetch_factor, int) and prefetch_factor >= 1,
            "prefetch_factor",
            prefetch_factor,
            "must be >= 1",
        )
        check(isinstance(hflip, bool), "hflip", hflip, "must be true or false")
        check(train_crops is None or train_crops >= 1, "train_crops", train_crops, "must be >= 1 or null")
        self.layout_name, self.layout = layout, LAYOUTS[layout]
        if self.layout.frames_key == "image":
            check(train_clip_frames == 1, "train_clip_frames", train_clip_frames, "images have 1 frame")
        self.data_dir = Path(data_dir)
        self.train_paths = expand_shards(data_dir, train_shards)
        self.val_paths = expand_shards(data_dir, val_shards)
        self.convert_command = convert_command
        self.n_mask_channels = n_mask_channels
        self.transform = ClipTransform(input_size, mask_size, hflip, train_crops)
        self.train_clip_frames = train_clip_frames
        self.val_chunk_frames = val_chunk_frames if val_protocol == "chunks" else None
        self.shuffle_size = shuffle_size
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.feature_stores: dict[str, FeatureStore] = {}  # set by slotsweep.cache
        # the facts of contracts.DataModule
        directory = Path(val_shards).parts[0]
        self.dataset_name = _SAME_DATA.get(directory, directory)
        images = self.layout.frames_key == "image"
        self.val_frames = val_frames(self.val_chunk_frames, images=images)
        self.mask_size = mask_size
        self.val_batch_keys = ("video", "masks", "rgb", "index")

    @property
    def ignore_background(self) -> bool:
        """Mask channel 0 is the background (MOVi)."""
        return self.layout.ignore_background

    @property
    def ignore_overlaps(self) -> bool:
        """Instances may overlap (COCO)."""
        return self.layout.ignore_overlaps

    def check_data(self, stage: str | None = None) -> None:
        """Fail with one line if a shard the stage needs is missing (cheap: file existence only)."""
        if stage in (None, "fit"):
            check_shards(self.train_paths, "dataset.train_shards", self.data_dir, self.convert_command)
        check_shards(self.val_paths, "dataset.val_shards", self.data_dir, self.convert_command)

    def setup(self, stage: str | None = None) -> None:
        self.check_data(stage)

    def feature_cache_sources(self, stage: str | None = None) -> dict[str, ClipSource]:
        """The splits `stage` reads, as the feature cache encodes them (slotsweep.cache)."""
        splits = [("val", self.val_paths, False)]
        if stage in (None, "fit"):
            splits.insert(0, ("train", self.train_paths, True))
            first = next(read_samples(self.train_paths[:1], (self.layout.frames_key,)), None)
            if first is not None:
                frames = self.layout.to_frames(first[self.layout.frames_key])  # (T, H, W, 3)
                cache_sources.check_finite_views(self.transform, *frames.shape[1:3])
        sources = {}
        for split, paths, train in splits:
            identity = {
                "reader": "shards",
                "layout": self.layout_name,
                "shards": cache_sources.files_identity(paths, self.data_dir),
                **cache_sources.views_identity(self.transform, train),
            }
            n_views = self.transform.n_train_views if train else 1
            n_frames = sum(n for path in paths for n in stored_frame_counts(path, self.layout))
            sources[split] = ClipSource(identity, self._clip_views(paths, train), n_views, n_frames)
        return sources

    def _clip_views(self, paths: list[Path], train: bool) -> Iterator[ClipViews]:
        shard_index = {str(path): k for k, path in enumerate(paths)}
        for sample in read_samples(paths, (self.layout.frames_key,)):
            frames = self.layout.to_frames(sample[self.layout.frames_key])  # (T, H, W, 3)
            meta = {"shard": shard_index[sample["__url__"]], "key": sample["__key__"]}
            yield cache_sources.clip_views(frames, self.transform, train, meta)

    def use_feature_cache(self, stores: dict[str, FeatureStore]) -> None:
        """Read encoder outputs from `stores` ({split: store}) instead of decoding frames."""
        self.feature_stores = dict(stores)

    def _loader(self, dataset: IterableDataset, num_workers: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,  # the stream batches itself, inside the workers
            num_workers=num_workers,
            # torch refuses a prefetch_factor without workers
            prefetch_factor=self.prefetch_factor if num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        clips = TrainClips(
            self.train_paths,
            self.layout,
            self.transform,
            self.train_clip_frames,
            self.shuffle_size,
            self.batch_size,
            self.feature_stores.get("train"),
        )
        return self._loader(clips, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        read = ValClips(
            self.val_paths,
            self.layout,
            self.transform,
            self.n_mask_channels,
            self.val_chunk_frames,
            self.feature_stores.get("val"),
        )
        paths = [str(p) for p in self.val_paths]
        stream = ValidationStream(paths, [read.count(p) for p in paths], read, self.val_batch_size)
        # A worker without a shard would only start up to yield nothing.
        return self._loader(stream, min(self.num_workers, len(self.val_paths)))
