"""How the iterable readers (shards, video files) share out and cut up their data.

- `process_share`: the part of a list this process reads (DDP rank x DataLoader worker), so a
  validation pass sees every item exactly once however many ranks and workers there are.
- `stream_rng`: one random generator per iteration, different on every rank and worker.
- `chunk_starts`: the reference's non-overlapping, aligned chunks of a video (videosaur.md §5).
- `batch_same_shape`: validation batches of consecutive clips; whole videos differ in length, so
  a change of shape closes the batch instead of failing to collate.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils.data import default_collate
from webdataset.utils import pytorch_worker_info

__all__ = ["batch_same_shape", "chunk_starts", "process_share", "stream_rng"]

T = TypeVar("T")


def process_share(items: Sequence[T]) -> list[T]:
    """The items this process reads: item i goes to the (rank, worker) slot i mod (ranks x workers).

    Reads RANK/WORLD_SIZE (or torch.distributed) and the DataLoader worker info, as webdataset does.
    """
    rank, world_size, worker, n_workers = pytorch_worker_info()
    return list(items[rank * n_workers + worker :: world_size * n_workers])


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
