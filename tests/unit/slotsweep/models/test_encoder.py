"""The frozen ViT encoder: every preset's shapes, block-N tokens and keys, weights, freezing."""

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from safetensors.torch import save_file
from torch.testing import assert_close

from slotsweep.errors import SlotsweepError
from slotsweep.models.encoder import ViTEncoder

CONF = Path(__file__).resolve().parents[4] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml") if not p.stem.startswith("_"))
SLOW_PRESETS = {"dinov2_vitl14"}  # ViT-L on 1369 tokens: over a minute on a shared CPU
# (patches, width) of the reference backbones (videosaur.md §2.2) and of the CPU default.
REFERENCE_SHAPES = {
    "dino_vitb8": (784, 768),
    "dino_vitb16": (196, 768),
    "dinov2_vitb14": (1369, 768),
    "dinov2": (1369, 768),
    # SlotContrast (docs/methods.md): S/14 and B/14 at 336 (MOVi) and 518 (YT-VIS)
    "dinov2_vits14": (1369, 384),
    "dinov2_vits14_336": (576, 384),
    "dinov2_vitb14_336": (576, 768),
    "tiny": (64, 192),
}
TINY = dict(model_name="vit_tiny_patch16_224", img_size=32, pretrained=False)
TINY_KWARGS = dict(patch_size=8, depth=2)  # 16 patches of 192-d, two blocks


def test_presets_exist() -> None:
    assert set(REFERENCE_SHAPES) <= set(PRESETS)


@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.heavy) if p in SLOW_PRESETS else p for p in PRESETS]
)
def test_preset_shapes(preset: str) -> None:
    """Each conf/encoder preset builds (random weights) and returns (B, P, D) features and keys."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+encoder={preset}", "encoder.pretrained=false"])
    encoder = instantiate(cfg.encoder)
    size = encoder.img_size
    out = encoder(torch.randn(1, 3, size, size))
    n_patches, width = encoder.n_patches, encoder.feat_dim
    assert n_patches == (size // encoder.model.patch_embed.patch_size[0]) ** 2
    assert out.features.shape == out.keys.shape == (1, n_patches, width)
    assert (n_patches, width) == REFERENCE_SHAPES.get(preset, (n_patches, width))
    assert isinstance(encoder.model.norm, torch.nn.Identity)  # no final norm: pre-norm tokens
    if preset.startswith("dinov2"):  # [Q] every DINOv2 preset stores the 518-px 37x37 table
        assert encoder.model.pos_embed.shape == (1, 1 + 37 * 37, width)


@pytest.mark.parametrize("block", [1, 2])
def test_features_and_keys_are_block_n_outputs(block: int) -> None:
    """Features: block-N tokens before the final norm; keys: the k part of block N's qkv; no CLS."""
    torch.manual_seed(0)
    full = timm.create_model(TINY["model_name"], num_classes=0, img_size=32, **TINY_KWARGS).eval()
    encoder = ViTEncoder(**TINY, block=block, model_kwargs=TINY_KWARGS)
    assert len(encoder.model.blocks) == block  # the blocks after N are dropped
    result = encoder.model.load_state_dict(full.state_dict(), strict=False)
    assert result.missing_keys == []
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = full.norm_pre(full._pos_embed(full.patch_embed(images)))  # (B, 1 + P, D)
        for earlier in full.blocks[: block - 1]:
            x = earlier(x)
        target = full.blocks[block - 1]
        qkv = target.attn.qkv(target.norm1(x)).unflatten(-1, (3, 192))  # (B, 1 + P, 3, D)
        tokens = target(x)
    out = encoder(images)
    assert out.features.shape == out.keys.shape == (2, 16, 192)
    assert_close(out.features, tokens[:, 1:], rtol=1e-5, atol=1e-5)
    assert_close(out.keys, qkv[:, 1:, 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.features, full.norm(tokens)[:, 1:], atol=1e-2)


def test_keys_are_returned_not_captured_so_the_encoder_compiles_as_one_graph() -> None:
    """No hook with a side effect: torch.compile traces the whole encoder without a graph break
    (fullgraph=True raises on one; the eager backend runs dynamo's tracing without code generation)."""
    encoder = ViTEncoder(**TINY, model_kwargs=TINY_KWARGS)
    assert not any(module._forward_hooks for module in encoder.modules())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = encoder(images)
        compiled = torch.compile(encoder, backend="eager", fullgraph=True)(images)
    assert torch.equal(compiled.features, eager.features) and torch.equal(compiled.keys, eager.keys)


def test_resampled_pos_embed_matches_bicubic_antialias() -> None:
    """[Q] pos_embed_size: the stored table is resampled (bicubic, antialias) on every forward."""
    kwargs = dict(patch_size=8, depth=1)
    encoder = ViTEncoder(**TINY, pos_embed_size=64, model_kwargs=kwargs)
    table = encoder.model.pos_embed.detach()
    assert table.shape == (1, 1 + 8 * 8, 192)  # the checkpoint keeps the big table
    assert encoder.n_patches == 16
    plain = ViTEncoder(**TINY, model_kwargs=kwargs)
    state = dict(encoder.model.state_dict())
    grid = table[:, 1:].reshape(1, 8, 8, 192).permute(0, 3, 1, 2)
    small = F.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True)
    state["pos_embed"] = torch.cat([table[:, :1], small.permute(0, 2, 3, 1).reshape(1, 16, 192)], 1)
    plain.model.load_state_dict(state)
    images = torch.randn(2, 3, 32, 32)
    assert_close(encoder(images).features, plain(images).features, rtol=1e-5, atol=1e-5)


def test_frozen_encoder_has_no_grads_and_stays_in_eval() -> None:
    encoder = ViTEncoder(**TINY, model_kwargs=TINY_KWARGS)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not any(m.training for m in encoder.modules())
    images = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = encoder(images)
    assert not out.features.requires_grad and not out.keys.requires_grad


def test_unfrozen_encoder_trains() -> None:
    encoder = ViTEncoder(**TINY, frozen=False, model_kwargs=TINY_KWARGS)
    encoder.train()
    assert encoder.model.training and all(p.requires_grad for p in encoder.parameters())
    encoder(torch.randn(1, 3, 32, 32)).features.sum().backward()
    assert encoder.model.patch_embed.proj.weight.grad is not None


def test_random_init_is_seeded() -> None:
    a, b = (ViTEncoder(**TINY, model_kwargs=TINY_KWARGS) for _ in range(2))
    c = ViTEncoder(**TINY, model_kwargs=TINY_KWARGS, init_seed=1)
    assert torch.equal(a.model.pos_embed, b.model.pos_embed)
    assert not torch.equal(a.model.pos_embed, c.model.pos_embed)


def test_local_weights_file_gives_the_same_features(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = timm.create_model(TINY["model_name"], num_classes=0, img_size=32, **TINY_KWARGS)
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    encoder = ViTEncoder(**TINY, weights=str(path), model_kwargs=TINY_KWARGS)
    assert torch.equal(encoder.model.pos_embed, source.pos_embed.detach())
    expected = ViTEncoder(**TINY, model_kwargs=TINY_KWARGS, init_seed=7)
    expected.model.load_state_dict(source.state_dict(), strict=False)
    images = torch.randn(2, 3, 32, 32)
    out, ref = encoder(images), expected(images)
    assert torch.equal(out.features, ref.features) and torch.equal(out.keys, ref.keys)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(weights="/nonexistent/vit.safetensors"), "encoder.weights=/nonexistent/vit.safetensors"),
        (dict(model_name="vit_does_not_exist"), "encoder.model_name=vit_does_not_exist"),
        (dict(block=3), r"encoder.block=3 must be in \[1, 2\]"),
        (dict(img_size=36), "encoder.img_size=36"),
    ],
)
def test_bad_config_raises_slotsweep_error(kwargs: dict, key: str) -> None:
    with pytest.raises(SlotsweepError, match=key):
        ViTEncoder(**{**TINY, **kwargs}, model_kwargs=TINY_KWARGS)
