"""The frozen-feature cache: contents, reuse, identity, manifest checks, parallel builders, errors."""

import contextlib
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from slotsweep.cache import (
    ClipSource,
    ClipViews,
    FeatureStore,
    _DirLock,
    bytes_per_frame_view,
    cached_split,
    encoder_identity,
    feature_cache_sources,
    stored_arrays,
)
from slotsweep.contracts import EncoderOutput, ModelOutput
from slotsweep.errors import SlotsweepError
from slotsweep.losses import FeatureReconstructionLoss, TemporalSimilarityLoss
from slotsweep.models.encoder import ViTEncoder

N, T, SIZE = 3, 2, 32
ENCODER = dict(model_name="vit_tiny_patch16_224", img_size=SIZE, pretrained=False, init_seed=0)
ENCODER_KWARGS = dict(patch_size=8, depth=2)  # 16 patches of 192-d
CONFIG = {**ENCODER, "model_kwargs": ENCODER_KWARGS, "weights": None}
FP16_TOL = {"rtol": 2e-3, "atol": 2e-3}  # float16 keeps 11 significant bits


def make_encoder(init_seed: int = 0) -> ViTEncoder:
    return ViTEncoder(**{**ENCODER, "init_seed": init_seed}, model_kwargs=ENCODER_KWARGS)


def clips(seed: int = 0, hflip: bool = True, lengths: tuple[int, ...] = (T,) * N) -> list[ClipViews]:
    """Random normalised clips of the given lengths, each (V, T, 3, H, W) with view 1 the flip."""
    generator = torch.Generator().manual_seed(seed)
    videos = [torch.randn(t, 3, SIZE, SIZE, generator=generator) for t in lengths]
    views = [torch.stack([v, v.flip(-1)]) if hflip else v[None] for v in videos]
    return [ClipViews(v, {"clip": i}) for i, v in enumerate(views)]


def source(seed: int = 0, hflip: bool = True, lengths: tuple[int, ...] = (T,) * N) -> ClipSource:
    identity = {"dataset": "random", "seed": seed, "lengths": lengths}
    return ClipSource(identity, clips(seed, hflip, lengths), 1 + hflip, sum(lengths))


def test_store_holds_every_frame_in_every_view_as_float16(tmp_path: Path) -> None:
    encoder, lengths = make_encoder(), (2, 1, 3)  # clips of any length, images included
    store = cached_split(encoder, source(lengths=lengths), "train", tmp_path, CONFIG, batch_frames=3)
    assert store.shape == (sum(lengths), 2, encoder.n_patches, encoder.feat_dim) and len(store) == 3
    assert [clip["n_frames"] for clip in store.clips] == list(lengths)
    assert [clip["clip"] for clip in store.clips] == [0, 1, 2]  # the source's meta, kept in order
    for index, clip in enumerate(clips(lengths=lengths)):
        for view in (0, 1):
            expected = encoder(clip.views[view])  # (T, P, D)
            sample = store.read(index, slice(None), view)
            assert sample["features"].dtype == sample["keys"].dtype == torch.float16
            torch.testing.assert_close(sample["features"].float(), expected.features, **FP16_TOL)
            torch.testing.assert_close(sample["keys"].float(), expected.keys, **FP16_TOL)
    # a window of frames reads those frames of the stored clip
    window = store.read(2, slice(1, 3), 1)["features"]
    assert torch.equal(window, store.read(2, slice(None), 1)["features"][1:3])
    # flipped tokens are not the unflipped ones mirrored: why the flip is encoded, not derived
    plain, flipped = (store.read(0, slice(None), v)["features"].float() for v in (0, 1))
    grid = plain.unflatten(1, (4, 4))  # (T, 4, 4, D) patch grid, rows of 4
    assert not torch.allclose(flipped, grid.flip(2).flatten(1, 2), atol=1e-2)


def test_found_again_without_rebuilding(tmp_path: Path) -> None:
    encoder = make_encoder()
    first = cached_split(encoder, source(), "train", tmp_path, CONFIG)
    manifest = (first.directory / "manifest.json").read_text()
    second = cached_split(encoder, source(), "train", tmp_path, CONFIG)
    assert second.directory == first.directory
    assert (first.directory / "manifest.json").read_text() == manifest  # not rewritten
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        first.directory.name
    ]


def test_anything_that_changes_the_features_gets_another_directory(tmp_path: Path) -> None:
    encoder = make_encoder()
    base = cached_split(encoder, source(), "train", tmp_path, CONFIG).directory
    others = [
        cached_split(make_encoder(init_seed=1), source(), "train", tmp_path, CONFIG),  # weights
        cached_split(encoder, source(seed=1), "train", tmp_path, CONFIG),  # data
        cached_split(encoder, source(hflip=False), "train", tmp_path, CONFIG),  # flips
        cached_split(encoder, source(), "val", tmp_path, CONFIG),  # split
        cached_split(encoder, source(), "train", tmp_path, {**CONFIG, "block": 1}),  # config
    ]
    directories = {base, *(store.directory for store in others)}
    assert len(directories) == 1 + len(others)
    assert others[2].n_views == 1
    # where the weights file lives is no part of the identity
    moved = encoder_identity(encoder, {**CONFIG, "weights": "/elsewhere/w.pth"})
    assert moved == encoder_identity(encoder, CONFIG)


def test_manifest_for_another_setting_is_refused(tmp_path: Path) -> None:
    store = cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)
    manifest_path = store.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["n_views"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SlotsweepError, match=rf"{store.directory}.*another setting.*'n_views'"):
        cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)


def test_truncated_array_is_refused(tmp_path: Path) -> None:
    store = cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)
    path = store.directory / "keys.f16"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SlotsweepError, match=r"keys\.f16 has 1000 bytes.*delete"):
        cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)


def _build_in_process(root: str) -> tuple[str, bool]:
    """One of several parallel builders: (its store's directory, whether it encoded anything)."""
    torch.set_num_threads(1)
    built = []
    encoder = make_encoder()
    forward = encoder.forward
    encoder.forward = lambda images: built.append(1) or forward(images)  # count encoder calls
    store = cached_split(encoder, source(), "train", Path(root), CONFIG)
    return str(store.directory), bool(built)


def test_parallel_builders_build_once_and_read_the_same(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_build_in_process, [str(tmp_path)] * 3)
    assert len({directory for directory, _ in results}) == 1
    assert sum(built for _, built in results) == 1
    assert not list(tmp_path.glob("*.tmp"))  # no half-built directory left behind
    store = FeatureStore(
        Path(results[0][0]), json.loads((Path(results[0][0]) / "manifest.json").read_text())["spec"]
    )
    assert np.isfinite(store.read(0, slice(None))["features"].numpy()).all()


def test_outputs_beyond_float16_are_refused(tmp_path: Path) -> None:
    encoder = make_encoder()
    with torch.no_grad():
        encoder.model.patch_embed.proj.weight.mul_(1e6)
    with pytest.raises(SlotsweepError, match="beyond float16's range.*cache=false"):
        cached_split(encoder, source(), "train", tmp_path, CONFIG)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]  # nothing half-built


def test_unsupported_uses_fail_clearly(tmp_path: Path) -> None:
    unfrozen = ViTEncoder(**ENCODER, model_kwargs=ENCODER_KWARGS, frozen=False)
    with pytest.raises(SlotsweepError, match="encoder.frozen=true or cache=false"):
        cached_split(unfrozen, source(), "train", tmp_path, CONFIG)
    with pytest.raises(SlotsweepError, match="not supported by object.*CachedClipSource.*cache=false"):
        feature_cache_sources(object())
    store = cached_split(make_encoder(), source(hflip=False), "train", tmp_path, CONFIG)
    with pytest.raises(ValueError, match="views 0..0, not view 1"):
        store.read(0, slice(None), view=1)


@contextlib.contextmanager
def small_file_system(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only: the machines this suite runs on as root
    get a real full file system; elsewhere the disk_usage case below stands in)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def test_a_cache_that_does_not_fit_is_refused_before_anything_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = make_encoder()
    per_frame_view = bytes_per_frame_view(
        encoder.n_patches, encoder.feat_dim, "float16", ("features", "keys")
    )
    assert per_frame_view == 2 * 16 * 192 * 2
    # more frames than this file system has bytes for: refused from the declared count, before a clip is read
    free = shutil.disk_usage(tmp_path).free
    unread = ClipSource({"dataset": "huge"}, iter(()), 2, free // per_frame_view)
    root = tmp_path / "features"
    with (
        caplog.at_level(logging.INFO, logger="slotsweep.cache"),
        pytest.raises(
            SlotsweepError, match=rf"paths.features_dir={root}: the train cache needs .* free;.*cache=int8"
        ),
    ):
        cached_split(encoder, unread, "train", root, CONFIG)
    assert not root.exists()  # nothing written, not even the lock
    assert f"{free // per_frame_view} frames x 2 views x {per_frame_view} B" in caplog.text

    with small_file_system(tmp_path / "small", "128k") as small:
        # 12 frame-views x 12 kB of float16 features and keys: 147 kB, more than the 128 kB there
        with pytest.raises(SlotsweepError, match="needs 147.46 kB"):
            cached_split(encoder, source(), "train", small, CONFIG)
        assert list(small.iterdir()) == []
        # int8 stores the same in 75 kB: it fits, and reads back
        store = cached_split(encoder, source(), "train", small, CONFIG, dtype="int8")
        assert store.read(0, slice(None), 1)["features"].shape == (T, 16, 192)
        del store  # its memory maps keep the file system busy


def test_keys_are_stored_only_when_a_loss_reads_them(tmp_path: Path) -> None:
    assert stored_arrays([FeatureReconstructionLoss()]) == ("features",)  # loss=dinosaur
    assert stored_arrays([FeatureReconstructionLoss(), TemporalSimilarityLoss()]) == ("features", "keys")
    encoder = make_encoder()
    both = cached_split(encoder, source(), "train", tmp_path, CONFIG)
    alone = cached_split(encoder, source(), "train", tmp_path, CONFIG, arrays=("features",))
    assert alone.directory != both.directory
    assert sorted(p.name for p in alone.directory.glob("*.f16")) == ["features.f16"]
    assert set(alone.read(0, slice(None))) == {"features"}
    assert torch.equal(alone.read(1, slice(None), 1)["features"], both.read(1, slice(None), 1)["features"])


# Deviation of each loss read from the int8 cache against the float16 one, on the fixed batch below
# (stated in docs/sweeps.md, "Feature cache"): relative.
INT8_LOSS_DEVIATION = {"featrec": 1e-3, "timesim": 1e-3}


def test_int8_losses_stay_within_the_stated_deviation_of_float16(tmp_path: Path) -> None:
    encoder = make_encoder()
    lengths = (4, 4, 4)
    half = cached_split(encoder, source(lengths=lengths), "train", tmp_path, CONFIG)
    compact = cached_split(encoder, source(lengths=lengths), "train", tmp_path, CONFIG, dtype="int8")
    assert sorted(p.name for p in compact.directory.iterdir() if p.suffix in (".i8", ".f16")) == [
        "features.i8",
        "features.scale.f16",
        "keys.i8",
        "keys.scale.f16",
    ]
    # per value: at most half a step of its token's scale (1/254 of the token's largest magnitude)
    features = torch.stack([half.read(i, slice(None))["features"].float() for i in range(3)])  # (B, T, P, D)
    read = torch.stack([compact.read(i, slice(None))["features"].float() for i in range(3)])
    peak = features.abs().amax(dim=-1, keepdim=True)
    assert ((read - features).abs() <= peak / 254 * 1.01 + 1e-3).all()

    generator = torch.Generator().manual_seed(0)
    B, T4, P, D = features.shape
    predictions = {
        "featrec": torch.randn(B, T4, P, D, generator=generator),
        "timesim": torch.randn(B, T4, P, P, generator=generator),
    }
    losses = {"featrec": FeatureReconstructionLoss(), "timesim": TemporalSimilarityLoss(temperature=0.075)}

    def loss_values(store: FeatureStore) -> dict[str, float]:
        encoded = EncoderOutput(
            *(
                torch.stack([store.read(i, slice(None))[k].float() for i in range(3)])
                for k in ("features", "keys")
            )
        )
        out = ModelOutput(encoded, *(torch.empty(0),) * 5)
        return {name: float(loss(predictions[name], out)) for name, loss in losses.items()}

    reference, got = loss_values(half), loss_values(compact)
    for name, bound in INT8_LOSS_DEVIATION.items():
        assert abs(got[name] - reference[name]) <= bound * abs(reference[name]), (name, got, reference)


def _build_without_flock(root: str) -> tuple[str, bool]:
    """_build_in_process on a file system whose flock fails (as Lustre mounted noflock does)."""

    def no_flock(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    fcntl.flock = no_flock
    return _build_in_process(root)


def test_without_flock_builders_still_take_turns(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_build_without_flock, [str(tmp_path)] * 3)
    assert len({directory for directory, _ in results}) == 1
    assert sum(built for _, built in results) == 1  # one build, not one per trial
    assert not list(tmp_path.glob("*.lock.d"))  # released

    # a lock left by a process that died on this host is taken over; one held elsewhere is waited on
    stale = tmp_path / "stale.lock.d"
    stale.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (stale / "owner").write_text(f"{socket.gethostname()} {dead.pid}")
    with _DirLock(stale):
        assert (stale / "owner").read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not stale.exists()
