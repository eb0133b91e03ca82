"""Tests of the stream helpers: validation shares and indices, chunks, batching, per-process seeds."""

import random

import pytest
import torch
from torch.utils.data import DataLoader

from slotsweep.data.streams import ValidationStream, batch_same_shape, chunk_starts, map_stream, stream_rng
from slotsweep.errors import SlotsweepError

COUNTS = [2, 0, 3, 1, 1]  # samples per item (an item with none, as a video shorter than a chunk)


def _read(item: int) -> list[dict[str, torch.Tensor]]:
    """Item i's samples: their "value" is (item, k), so a test sees which sample went where."""
    return [{"value": torch.tensor([item, k])} for k in range(COUNTS[item])]


def _stream(batch_size: int = 2, counts: list[int] = COUNTS) -> ValidationStream[int]:
    return ValidationStream(list(range(len(counts))), counts, _read, batch_size)


def _samples(loader) -> list[tuple[int, tuple[int, int]]]:
    """(index, (item, k)) of every sample of every batch."""
    return [(int(i), tuple(v.tolist())) for b in loader for i, v in zip(b["index"], b["value"], strict=True)]


def test_one_process_reads_every_sample_in_order_numbered_by_position():
    expected = [(n, pair) for n, pair in enumerate((i, k) for i, c in enumerate(COUNTS) for k in range(c))]
    assert _samples(_stream()) == expected
    assert _samples(_stream(batch_size=3)) == expected  # the index does not depend on batching


@pytest.mark.parametrize("n_workers", [0, 2])
def test_every_sample_once_over_ranks_and_workers_with_the_single_process_index(monkeypatch, n_workers):
    """2 ranks (RANK/WORLD_SIZE, as torchrun and Lightning set them) x DataLoader workers: nothing
    padded or repeated, and each sample keeps the index one process gives it."""
    single = sorted(_samples(_stream()))
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen += _samples(DataLoader(_stream(), batch_size=None, num_workers=n_workers))
    assert sorted(seen) == single


def _one_of(item: int) -> list[dict[str, torch.Tensor]]:
    return [{"value": torch.tensor(item)}]


def _items_read(monkeypatch, n_items: int, n_ranks: int, n_workers: int) -> list[list[int]]:
    """Which items each rank reads over all its workers (RANK/WORLD_SIZE and WORKER/NUM_WORKERS, the
    variables the stream's process lookup reads, stand in for DDP and DataLoader workers)."""
    read = []
    for rank in range(n_ranks):
        items = []
        for worker in range(n_workers):
            for name, value in {
                "RANK": rank,
                "WORLD_SIZE": n_ranks,
                "WORKER": worker,
                "NUM_WORKERS": n_workers,
            }.items():
                monkeypatch.setenv(name, str(value))
            stream = ValidationStream(list(range(n_items)), [1] * n_items, _one_of, batch_size=1)
            items += [int(b["value"]) for b in stream]
        read.append(sorted(items))
    return read


@pytest.mark.parametrize(
    "n_items, n_ranks, n_workers, per_rank",
    [(8, 4, 4, [2, 2, 2, 2]), (8, 4, 8, [2, 2, 2, 2]), (2, 3, 4, [1, 1, 0]), (7, 3, 2, [3, 2, 2])],
)
def test_each_rank_reads_floor_or_ceil_of_the_items_whatever_its_workers(
    monkeypatch, n_items, n_ranks, n_workers, per_rank
):
    """8 validation shards over 4 ranks of 4 or 8 workers: 2 shards per rank (dealing by
    rank * workers + worker gave ranks 0-1 all 8, or rank 0 all 8 with 8 workers); every item once."""
    read = _items_read(monkeypatch, n_items, n_ranks, n_workers)
    assert [len(items) for items in read] == per_rank
    assert sorted(i for items in read for i in items) == list(range(n_items))


def test_a_rank_without_items_yields_no_batch(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert list(_stream(counts=[3])) == []


@pytest.mark.parametrize("counts, found", [([3, 0, 0, 0, 0], "2"), ([1, 0, 0, 0, 0], "more than 1")])
def test_an_item_that_yields_other_than_its_count_is_an_error(counts, found):
    stream = ValidationStream([0, 1, 2, 3, 4], counts, _read, 4)  # item 0 really has 2
    with pytest.raises(SlotsweepError, match=f"0 gave {found} validation samples where {counts[0]}"):
        list(stream)


def test_map_stream_numbers_a_map_style_dataset():
    dataset = [{"value": torch.tensor([i, 0])} for i in range(5)]
    assert _samples(map_stream(dataset, batch_size=2)) == [(i, (i, 0)) for i in range(5)]


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
