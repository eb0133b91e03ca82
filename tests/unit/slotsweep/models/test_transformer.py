"""Attention and the transformer (predictor, allocator) against the original VideoSAUR modules."""

import pytest
import torch
from torch.testing import assert_close

from slotsweep.models.transformer import Attention, TransformerEncoder

FUSED = pytest.mark.parametrize("fused", [True, False], ids=["fused", "written_out"])


@FUSED
def test_attention_matches_reference(reference, fused: bool) -> None:
    entry = reference("modules.pt")["attention"]
    attn = Attention(dim=16, n_heads=4, qkv_bias=True, fused=fused).eval()
    attn.load_state_dict(entry["state_dict"])
    x, memory, expected = entry["inputs"]["x"], entry["inputs"]["memory"], entry["outputs"]
    with torch.no_grad():
        out_self, _ = attn(x)
        out_cross, _ = attn(x, memory)
    assert_close(out_self, expected["self"], rtol=1e-5, atol=1e-6)
    assert_close(out_cross, expected["cross"], rtol=1e-5, atol=1e-6)


@FUSED
def test_attention_head_averaged_weights_match_reference(reference, fused: bool) -> None:
    entry = reference("modules.pt")["attention"]
    attn = Attention(dim=16, n_heads=4, fused=fused).eval()  # weights force the written-out path
    attn.load_state_dict(entry["state_dict"])
    x, memory, expected = entry["inputs"]["x"], entry["inputs"]["memory"], entry["outputs"]
    with torch.no_grad():
        out_self, w_self = attn(x, return_weights=True)
        out_cross, w_cross = attn(x, memory, return_weights=True)
    assert w_self.shape == (2, 5, 5) and w_cross.shape == (2, 5, 4)
    assert_close(w_self, expected["self_weights"], rtol=1e-5, atol=1e-7)
    assert_close(w_cross, expected["cross_weights"], rtol=1e-5, atol=1e-7)
    assert_close(out_self, expected["self"], rtol=1e-5, atol=1e-6)
    assert_close(out_cross, expected["cross"], rtol=1e-5, atol=1e-6)


@FUSED
def test_predictor_matches_reference(reference, fused: bool) -> None:
    entry = reference("modules.pt")["predictor"]
    config = entry["config"]
    predictor = TransformerEncoder(config["dim"], config["n_blocks"], config["n_heads"], fused=fused).eval()
    predictor.load_state_dict(entry["state_dict"])  # strict: names are the reference's
    with torch.no_grad():
        y = predictor(entry["inputs"]["x"])
    assert_close(y, entry["outputs"]["y"], rtol=1e-5, atol=1e-6)


@FUSED
def test_allocator_is_cross_attention_matching_reference(reference, fused: bool) -> None:
    entry = reference("modules.pt")["allocator"]
    config = entry["config"]
    allocator = TransformerEncoder(config["dim"], config["n_blocks"], config["n_heads"], fused=fused).eval()
    allocator.load_state_dict(entry["state_dict"])
    queries, memory = entry["inputs"]["queries"], entry["inputs"]["memory"]
    with torch.no_grad():
        y = allocator(queries, memory=memory)
        without_memory = allocator(queries)
    assert_close(y, entry["outputs"]["y"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(without_memory, y, atol=1e-3)  # memory is what is attended to


def test_inverted_scale_multiplies_logits_by_head_dim() -> None:
    """[Q] inverted scale == the textbook scale with q multiplied by head_dim (§2.4)."""
    torch.manual_seed(0)
    quirk = Attention(dim=16, n_heads=4, inverted_scale=True, fused=False)
    textbook = Attention(dim=16, n_heads=4, inverted_scale=False, fused=False)
    textbook.load_state_dict(quirk.state_dict())
    with torch.no_grad():
        quirk.qkv.bias.normal_()
        textbook.qkv.bias.copy_(quirk.qkv.bias)
        textbook.qkv.weight[:16] *= 4  # head_dim = 4: (q * d) / sqrt(d) = q * sqrt(d)
        textbook.qkv.bias[:16] *= 4
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    out, weights = quirk(x, memory, return_weights=True)
    expected, expected_weights = textbook(x, memory, return_weights=True)
    assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert_close(weights, expected_weights, rtol=1e-5, atol=1e-7)
    textbook.load_state_dict(quirk.state_dict())  # same weights, textbook scale: other numbers
    assert not torch.allclose(textbook(x, memory)[0], out, atol=1e-3)


@pytest.mark.parametrize("inverted_scale", [True, False])
def test_fused_and_written_out_paths_agree(inverted_scale: bool) -> None:
    torch.manual_seed(1)
    fused = TransformerEncoder(32, n_blocks=2, n_heads=4, inverted_scale=inverted_scale)
    plain = TransformerEncoder(32, n_blocks=2, n_heads=4, inverted_scale=inverted_scale, fused=False)
    plain.load_state_dict(fused.state_dict())
    x, memory = torch.randn(3, 6, 32), torch.randn(3, 4, 32)
    assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    assert_close(fused(x, memory), plain(x, memory), rtol=1e-5, atol=1e-5)


def test_predictor_is_permutation_equivariant_over_slots() -> None:
    torch.manual_seed(2)
    predictor = TransformerEncoder(16, n_blocks=1, n_heads=4).eval()
    slots, perm = torch.randn(2, 7, 16), torch.randperm(7)
    assert_close(predictor(slots[:, perm]), predictor(slots)[:, perm], rtol=1e-5, atol=1e-6)


def test_init_follows_reference() -> None:
    """Zero biases; Xavier bounds computed per q/k/v chunk, not over the fused (3D, D) matrix."""
    torch.manual_seed(3)
    attn = Attention(dim=64, n_heads=4)
    assert torch.count_nonzero(attn.qkv.bias) == 0 and torch.count_nonzero(attn.out_proj.bias) == 0
    chunk_bound = (6 / (64 + 64)) ** 0.5
    assert attn.qkv.weight.abs().max() <= chunk_bound
    assert attn.qkv.weight.abs().max() > (6 / (64 + 3 * 64)) ** 0.5  # wider than fused Xavier


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible by n_heads=3"):
        Attention(dim=16, n_heads=3)
    with pytest.raises(ValueError, match="predictor.n_blocks=0"):
        TransformerEncoder(16, n_blocks=0)
