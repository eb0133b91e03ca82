"""Tests of the stream helpers: process shares, chunks, same-shape batching, per-process seeds."""

import random

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from slotsweep.data.streams import batch_same_shape, chunk_starts, process_share, stream_rng


class _Share(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(process_share(list(range(self.n))))


@pytest.mark.parametrize("n_items", [1, 5, 8])
def test_every_item_once_over_ranks_and_workers(monkeypatch, n_items):
    """2 ranks (RANK/WORLD_SIZE, as torchrun and Lightning set them) x 2 DataLoader workers."""
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen += [int(x) for x in DataLoader(_Share(n_items), batch_size=None, num_workers=2)]
    assert sorted(seen) == list(range(n_items))


def test_single_process_reads_everything():
    assert process_share(list("abc")) == list("abc")


def test_chunk_starts_are_aligned_and_drop_the_remainder():
    assert list(chunk_starts(10, 4)) == [0, 4]
    assert list(chunk_starts(24, 6)) == [0, 6, 12, 18]
    assert list(chunk_starts(24, 24)) == [0]
    assert list(chunk_starts(3, 4)) == []


def test_batches_close_on_shape_change_and_keep_the_last_partial_one():
    lengths = [6, 6, 6, 4, 4, 6]
    samples = [{"video": torch.full((t, 2), float(i))} for i, t in enumerate(lengths)]
    batches = list(batch_same_shape(samples, batch_size=2))
    assert [tuple(b["video"].shape) for b in batches] == [(2, 6, 2), (1, 6, 2), (2, 4, 2), (1, 6, 2)]
    order = torch.cat([b["video"][:, 0, 0] for b in batches])
    assert order.tolist() == [0, 1, 2, 3, 4, 5]  # nothing dropped, nothing repeated, in order


def test_stream_rng_differs_per_rank_and_is_reproducible(monkeypatch):
    draws = {}
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        torch.manual_seed(0)  # the same torch seed on both ranks, as seed_everything without workers
        draws[rank] = stream_rng().random()
        torch.manual_seed(0)
        assert stream_rng().random() == draws[rank]
    assert draws[0] != draws[1]
    assert isinstance(stream_rng(), random.Random)
