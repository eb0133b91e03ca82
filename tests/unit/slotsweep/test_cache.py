"""The frozen-feature cache: contents, reuse, identity, manifest checks, parallel builders, errors."""

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from slotsweep.cache import (
    ClipSource,
    FeatureStore,
    attach_feature_cache,
    cache_root,
    cached_split,
    encoder_identity,
)
from slotsweep.errors import SlotsweepError
from slotsweep.models.encoder import ViTEncoder

N, T, SIZE = 3, 2, 32
ENCODER = dict(model_name="vit_tiny_patch16_224", img_size=SIZE, pretrained=False, init_seed=0)
ENCODER_KWARGS = dict(patch_size=8, depth=2)  # 16 patches of 192-d
CONFIG = {**ENCODER, "model_kwargs": ENCODER_KWARGS, "cache": True, "weights": None}
FP16_TOL = {"rtol": 2e-3, "atol": 2e-3}  # float16 keeps 11 significant bits


def make_encoder(init_seed: int = 0) -> ViTEncoder:
    return ViTEncoder(**{**ENCODER, "init_seed": init_seed}, model_kwargs=ENCODER_KWARGS)


class Clips(Dataset):
    """N random normalised clips (T, 3, H, W), the same for the same seed."""

    def __init__(self, seed: int = 0) -> None:
        self.video = torch.randn(N, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"video": self.video[index]}


def source(seed: int = 0, hflip: bool = True) -> ClipSource:
    return ClipSource({"dataset": "random", "seed": seed}, Clips(seed), hflip)


def test_store_holds_every_frame_and_its_flip_as_float16(tmp_path: Path) -> None:
    encoder, src = make_encoder(), source()
    store = cached_split(encoder, src, "train", tmp_path, CONFIG, batch_frames=3)  # uneven batches
    assert store.shape == (N, 2, T, encoder.n_patches, encoder.feat_dim) and len(store) == N
    for index in range(N):
        video = src.clips[index]["video"]
        for flipped in (False, True):
            expected = encoder(video.flip(-1) if flipped else video)  # (T, P, D)
            sample = store.read(index, slice(None), flipped)
            assert sample["features"].dtype == sample["keys"].dtype == torch.float16
            torch.testing.assert_close(sample["features"].float(), expected.features, **FP16_TOL)
            torch.testing.assert_close(sample["keys"].float(), expected.keys, **FP16_TOL)
    # a window of frames reads those frames of the stored clip
    window = store.read(1, slice(1, 2), True)["features"]
    assert torch.equal(window, store.read(1, slice(None), True)["features"][1:2])
    # flipped tokens are not the unflipped ones mirrored: why the flip is encoded, not derived
    plain, flipped = (store.read(0, slice(None), f)["features"].float() for f in (False, True))
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
    assert others[2].n_variants == 1
    # where the weights file lives, or whether the cache is on, is no part of the identity
    moved = encoder_identity(encoder, {**CONFIG, "weights": "/elsewhere/w.pth", "cache": "/x"})
    assert moved == encoder_identity(encoder, CONFIG)


def test_manifest_for_another_setting_is_refused(tmp_path: Path) -> None:
    store = cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)
    manifest_path = store.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["hflip"] = False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SlotsweepError, match=rf"{store.directory}.*another setting.*'hflip'"):
        cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)


def test_truncated_array_is_refused(tmp_path: Path) -> None:
    store = cached_split(make_encoder(), source(), "train", tmp_path, CONFIG)
    path = store.directory / "keys.npy"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SlotsweepError, match=r"keys\.npy.*delete"):
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
    with pytest.raises(SlotsweepError, match="beyond float16's range.*encoder.cache=null"):
        cached_split(encoder, source(), "train", tmp_path, CONFIG)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]  # nothing half-built


def test_settings_and_unsupported_uses_fail_clearly(tmp_path: Path) -> None:
    assert cache_root(None, tmp_path, frozen=True) is None
    assert cache_root(False, tmp_path, frozen=True) is None
    assert cache_root(True, tmp_path, frozen=True) == tmp_path / "features"
    assert cache_root("/scratch/f", tmp_path, frozen=True) == Path("/scratch/f")
    with pytest.raises(SlotsweepError, match=r"encoder.cache=3 is invalid"):
        cache_root(3, tmp_path, frozen=True)
    with pytest.raises(SlotsweepError, match="encoder.frozen=true or encoder.cache=null"):
        cache_root(True, tmp_path, frozen=False)
    unfrozen = ViTEncoder(**ENCODER, model_kwargs=ENCODER_KWARGS, frozen=False)
    with pytest.raises(SlotsweepError, match="frozen"):
        cached_split(unfrozen, source(), "train", tmp_path, CONFIG)
    with pytest.raises(SlotsweepError, match="not supported by object.*encoder.cache=null"):
        attach_feature_cache(object(), make_encoder(), tmp_path, CONFIG)
    store = cached_split(make_encoder(), source(hflip=False), "train", tmp_path, CONFIG)
    with pytest.raises(ValueError, match="no flipped frames"):
        store.read(0, slice(None), flipped=True)
