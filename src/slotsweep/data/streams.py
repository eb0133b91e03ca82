"""How the iterable readers (shards, video files) share out and cut up their data.

- `ValidationStream`: one validation pass, every reader's: this process's share of the items
  (shards, video files, clips; DDP rank x DataLoader worker, no padding), so every sample is read
  exactly once however many ranks and workers there are, and each sample carries "index", its
  position in the whole validation set, which seeds its slots (module.py): metrics then do not
  depend on the batch size, the worker count or the number of devices.
- `stream_rng`: one random generator per iteration, different on every rank and worker.
- `chunk_starts`: the reference's non-overlapping, aligned chunks of a video (videosaur.md §5).
- `batch_same_shape`: validation batches of consecutive clips; whole videos differ in length, so
  a change of shape closes the batch instead of failing to collate.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate
from webdataset.utils import pytorch_worker_info

from slotsweep.errors import SlotsweepError

__all__ = ["ValidationStream", "batch_same_shape", "chunk_starts", "map_stream", "stream_rng"]

T = TypeVar("T")


class ValidationStream(IterableDataset, Generic[T]):
    """One pass over the validation set in batches; every sample once over all processes.

    Items (shards, video files, clips) are dealt to the ranks first, item i to rank i mod ranks, so
    each rank reads floor or ceil of items/ranks whatever its worker count; a rank's items are then
    dealt to its DataLoader workers the same way. Nothing is padded or repeated (Lightning's
    DistributedSampler would repeat samples to even the ranks out), so a rank may get fewer batches
    or none; the metrics are sums synced at epoch end.

    Args:
        items: what `read` reads, in the validation set's order.
        counts: samples per item (`read(items[i])` yields counts[i] of them), known before reading
            so that every process numbers its samples as a single process would.
        read: item -> its samples (dicts of tensors), in order; picklable for DataLoader workers.
        batch_size: samples per batch; a batch closes early when the sample shape changes.
    Yields:
        batches of `read`'s samples plus "index" (B,) int64, each sample's position in the set.
    """

    def __init__(
        self,
        items: Sequence[T],
        counts: Sequence[int],
        read: Callable[[T], Iterable[dict[str, Tensor]]],
        batch_size: int,
    ) -> None:
        if len(items) != len(counts):
            raise ValueError(f"{len(items)} items but {len(counts)} counts")
        self.items, self.counts, self.read, self.batch_size = items, counts, read, batch_size
        self.firsts = list(itertools.accumulate(counts, initial=0))  # index of each item's first sample

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return batch_same_shape(self._samples(), self.batch_size)

    def _samples(self) -> Iterator[dict[str, Tensor]]:
        # RANK/WORLD_SIZE (or torch.distributed) and the DataLoader worker info, as webdataset reads them
        rank, world_size, worker, n_workers = pytorch_worker_info()
        # ranks before workers: dealing i to slot rank * n_workers + worker would give 8 shards to
        # rank 0 alone when the ranks have 8 workers each, and validation would run at one GPU's pace
        for i in range(rank, len(self.items), world_size)[worker::n_workers]:
            n = 0
            for n, sample in enumerate(self.read(self.items[i]), 1):
                if n > self.counts[i]:
                    raise self._miscounted(i, f"more than {self.counts[i]}")
                yield {**sample, "index": torch.tensor(self.firsts[i] + n - 1)}
            if n < self.counts[i]:
                raise self._miscounted(i, str(n))

    def _miscounted(self, i: int, found: str) -> SlotsweepError:
        # the item changed after it was counted: its samples' indices would collide with the next's
        return SlotsweepError(
            f"{self.items[i]} gave {found} validation samples where {self.counts[i]} were counted; "
            "was it rewritten during the run?"
        )


def _one_sample(dataset: Dataset, index: int) -> tuple[dict[str, Tensor]]:
    return (dataset[index],)


def map_stream(dataset: Dataset, batch_size: int) -> ValidationStream[int]:
    """A map-style validation set (`len` and `dataset[i]`) as a ValidationStream: item i is sample i."""
    n = len(dataset)
    return ValidationStream(range(n), [1] * n, functools.partial(_one_sample, dataset), batch_size)


def stream_rng() -> random.Random:
    """A generator for one pass over a stream, reproducible under `seed_everything(workers=True)`.

    The seed is drawn from torch's generator, which Lightning seeds per rank and worker; rank and
    worker are mixed in as well, so that no two processes draw the same shards, chunks or crops even
    when they start from the same torch seed (num_workers=0 under DDP).
    """
    rank, _, worker, _ = pytorch_worker_info()
    seed = int(torch.randint(2**62, ()).item())
    return random.Random(f"{seed}-{rank}-{worker}")


def chunk_starts(n_frames: int, chunk_frames: int) -> range:
    """First frames of the chunks of `chunk_frames` frames aligned at multiples of chunk_frames.

    The remainder is dropped: a 10-frame video has chunks of 4 at 0 and 4; a 3-frame video none.
    """
    return range(0, n_frames - chunk_frames + 1, chunk_frames)


def batch_same_shape(samples: Iterable[dict[str, Tensor]], batch_size: int) -> Iterator[dict[str, Tensor]]:
    """Collate consecutive samples into batches of at most `batch_size`.

    A sample whose tensors have other shapes than the batch so far starts a new batch, and the last
    batch may be partial: nothing is dropped or repeated.
    """
    batch: list[dict[str, Tensor]] = []
    shapes = None
    for sample in samples:
        sample_shapes = {key: tuple(value.shape) for key, value in sample.items()}
        if batch and (len(batch) == batch_size or sample_shapes != shapes):
            yield default_collate(batch)
            batch = []
        batch.append(sample)
        shapes = sample_shapes
    if batch:
        yield default_collate(batch)
