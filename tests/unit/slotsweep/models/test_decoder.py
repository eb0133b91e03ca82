"""SlotMixer and MLP decoders against the original VideoSAUR/DINOSAUR modules."""

import pytest
import torch
from torch.testing import assert_close

from slotsweep.models.decoder import MLPDecoder, SlotMixerDecoder
from slotsweep.models.weights import reference_to_local


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "written_out"])
def test_slot_mixer_matches_reference(reference, fused: bool) -> None:
    entry = reference("modules.pt")["slot_mixer_decoder"]
    config = entry["config"]
    decoder = SlotMixerDecoder(
        inp_dim=config["inp_dim"],
        outp_dim=config["outp_dim"],
        n_patches=config["n_patches"],
        embed_dim=config["embed_dim"],
        n_blocks=config["allocator"]["n_blocks"],
        n_heads=config["allocator"]["n_heads"],
        renderer_hidden_dims=tuple(config["renderer"]["hidden_dims"]),
        renderer_dim=config["renderer_dim"],
        fused=fused,
    ).eval()
    decoder.load_state_dict(reference_to_local(entry["state_dict"]))  # strict
    with torch.no_grad():
        reconstruction, masks = decoder(entry["inputs"]["slots"])
    assert reconstruction.shape == (2, 16, 20) and masks.shape == (2, 4, 16)
    assert_close(reconstruction, entry["outputs"]["reconstruction"], rtol=1e-5, atol=1e-5)
    assert_close(masks, entry["outputs"]["masks"], rtol=1e-5, atol=1e-6)
    assert_close(masks.sum(dim=1), torch.ones(2, 16))  # mixing weights: a softmax over slots


def test_mlp_decoder_matches_reference(reference) -> None:
    entry = reference("modules.pt")["mlp_decoder"]
    config = entry["config"]
    decoder = MLPDecoder(
        config["inp_dim"], config["outp_dim"], config["n_patches"], tuple(config["hidden_dims"])
    ).eval()
    decoder.load_state_dict(reference_to_local(entry["state_dict"]))
    with torch.no_grad():
        reconstruction, masks = decoder(entry["inputs"]["slots"])
    assert reconstruction.shape == (2, 16, 12) and masks.shape == (2, 4, 16)
    assert_close(reconstruction, entry["outputs"]["reconstruction"], rtol=1e-5, atol=1e-6)
    assert_close(masks, entry["outputs"]["masks"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["w1024", "p576_w64"])
def test_mlp_decoder_matches_slotcontrast(reference, name: str) -> None:
    """SlotContrast's decoder: 3 x 1024 at the released D 64 and F 384, and the 576-patch grid."""
    entry = reference("slotcontrast/slotcontrast_modules.pt")[f"mlp_decoder.{name}"]
    config = entry["config"]
    decoder = MLPDecoder(
        config["inp_dim"], config["outp_dim"], config["n_patches"], tuple(config["hidden_dims"])
    ).eval()
    decoder.load_state_dict(reference_to_local(entry["state_dict"]))  # strict
    slots = entry["inputs"]["slots"]
    with torch.no_grad():
        reconstruction, masks = decoder(slots)
    B, S, _ = slots.shape
    assert reconstruction.shape == (B, config["n_patches"], 384) and masks.shape == (
        B,
        S,
        config["n_patches"],
    )
    assert_close(reconstruction, entry["outputs"]["reconstruction"], rtol=1e-5, atol=1e-5)
    assert_close(masks, entry["outputs"]["masks"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decoder_cls", [SlotMixerDecoder, MLPDecoder])
def test_decoders_are_permutation_invariant_over_slots(decoder_cls: type) -> None:
    """Reordering the slots reorders the masks and leaves the reconstruction unchanged."""
    torch.manual_seed(0)
    small = dict(renderer_hidden_dims=(32,), renderer_dim=32) if decoder_cls is SlotMixerDecoder else {}
    decoder = decoder_cls(inp_dim=16, outp_dim=10, n_patches=12, **small).eval()
    slots, perm = torch.randn(2, 5, 16), torch.randperm(5)
    with torch.no_grad():
        reconstruction, masks = decoder(slots)
        reconstruction_perm, masks_perm = decoder(slots[:, perm])
    assert_close(reconstruction_perm, reconstruction, rtol=1e-5, atol=1e-5)
    assert_close(masks_perm, masks[:, perm], rtol=1e-5, atol=1e-6)


def test_slot_mixer_init_follows_reference() -> None:
    """pos_emb ~ randn * E^-0.5; zero biases in the renderer and the output map."""
    torch.manual_seed(1)
    decoder = SlotMixerDecoder(inp_dim=64, outp_dim=8, n_patches=400, renderer_hidden_dims=(16,))
    assert decoder.pos_emb.shape == (1, 400, 64)
    assert abs(decoder.pos_emb.std().item() - 64**-0.5) < 0.01
    biases = [m.bias for m in decoder.renderer if hasattr(m, "bias")]
    assert all(torch.count_nonzero(b) == 0 for b in [*biases, decoder.output_transform.bias])
    assert isinstance(decoder.renderer[-1], torch.nn.ReLU)  # the renderer ends with a ReLU
