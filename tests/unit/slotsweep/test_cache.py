"""The frozen-feature cache: contents, reuse, identity, manifest checks, parallel builders, errors."""

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from slotsweep.cache import (
    ClipSource,
    ClipViews,
    FeatureStore,
    cached_split,
    encoder_identity,
    feature_cache_sources,
)
from slotsweep.errors import SlotsweepError
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
    return ClipSource(
        {"dataset": "random", "seed": seed, "lengths": lengths}, clips(seed, hflip, lengths), 1 + hflip
    )


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
