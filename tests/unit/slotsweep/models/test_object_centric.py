"""The assembled model: feature projection and the scan over time against the reference."""

from functools import partial
from typing import Any

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from slotsweep.contracts import EncoderOutput, SlotRequest
from slotsweep.models.decoder import SlotMixerDecoder
from slotsweep.models.encoder import ViTEncoder
from slotsweep.models.grouper import SlotAttention
from slotsweep.models.initializers import FixedLearnedInit
from slotsweep.models.layers import feature_projection
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.models.transformer import TransformerEncoder
from slotsweep.models.weights import reference_to_local

FEAT_DIM, N_PATCHES, IMG = 192, 16, 32


def tiny_model(
    slot_dim: int = 16, n_slots: int = 4, predictor: bool = True, **grouper: Any
) -> ObjectCentricModel:
    """A random-weight model on a 1-block ViT: 16 patches of 192-d per 32x32 frame; `grouper`:
    more SlotAttention arguments."""
    torch.manual_seed(0)
    encoder = ViTEncoder(
        "vit_tiny_patch16_224", IMG, pretrained=False, model_kwargs=dict(patch_size=8, depth=1)
    )
    return ObjectCentricModel(
        encoder=encoder,
        grouper=SlotAttention(n_slots, slot_dim, n_iters=2, n_iters_first=3, **grouper),
        predictor=partial(TransformerEncoder, n_blocks=1, n_heads=4) if predictor else nn.Identity,
        decoder=partial(SlotMixerDecoder, renderer_hidden_dims=(32,), renderer_dim=32),
        decoder_channels=10,
    ).eval()


def random_features(B: int = 2, T: int = 3) -> EncoderOutput:
    return EncoderOutput(torch.randn(B, T, N_PATCHES, FEAT_DIM), torch.randn(B, T, N_PATCHES, FEAT_DIM))


def test_feature_projection_matches_reference(reference) -> None:
    entry = reference("modules.pt")["two_layer_mlp"]
    config = entry["config"]
    assert config["hidden_dim"] == 2 * config["inp_dim"]  # the width feature_projection uses
    projection = feature_projection(config["inp_dim"], config["outp_dim"]).eval()
    named = {f"encoder.output_transform.{k}": v for k, v in entry["state_dict"].items()}
    projection.load_state_dict(
        {k.removeprefix("projection."): v for k, v in reference_to_local(named).items()}
    )
    with torch.no_grad():
        y = projection(entry["inputs"]["x"])
    assert_close(y, entry["outputs"]["y"], rtol=1e-5, atol=1e-6)


def test_scan_matches_reference_processor(reference) -> None:
    """ScanOverTime(LatentProcessor(SA, predictor)): 3 iterations on frame 0, then 2."""
    entry = reference("modules.pt")["processor"]
    model = tiny_model(slot_dim=16, n_slots=4)
    assert (
        model.grouper.n_iters_first
        == entry["config"]["latent_processor"]["first_step_corrector_args"]["n_iters"]
    )
    assert model.grouper.n_iters == entry["config"]["grouper"]["n_iters"]
    named = {f"processor.{k}": v for k, v in entry["state_dict"].items()}  # module.corrector.* ...
    result = model.load_state_dict(reference_to_local(named), strict=False)
    assert result.unexpected_keys == []
    loaded = set(model.state_dict()) - set(result.missing_keys)
    assert all(k.startswith(("grouper.", "predictor.")) for k in loaded)
    assert {k for k in result.missing_keys if k.startswith(("grouper.", "predictor."))} == {
        "grouper.initializer.mean",
        "grouper.initializer.log_std",
    }
    with torch.no_grad():
        slots, predicted, masks = model.scan(entry["inputs"]["features"], entry["inputs"]["initial_state"])
    expected = entry["outputs"]
    assert slots.shape == predicted.shape == (2, 3, 4, 16) and masks.shape == (2, 3, 4, 20)
    assert_close(slots, expected["state"], rtol=1e-4, atol=1e-5)
    assert_close(slots, expected["corrector.slots"], rtol=1e-4, atol=1e-5)
    assert_close(predicted, expected["state_predicted"], rtol=1e-4, atol=1e-5)
    assert_close(masks, expected["corrector.masks"], rtol=1e-4, atol=1e-6)


def test_scan_matches_slotcontrast_processor(reference) -> None:
    """SlotContrast's recurrent core: SA with its MLP (3 iterations on frame 0, then 2) and the
    1-block predictor, from the same learned slots for both videos."""
    entry = reference("slotcontrast/slotcontrast_modules.pt")["processor"]
    config = entry["config"]
    assert (
        config["grouper"]["use_mlp"]
        and config["latent_processor"]["first_step_corrector_args"]["n_iters"] == 3
    )
    model = tiny_model(slot_dim=64, n_slots=11, use_mlp=True, initializer=FixedLearnedInit)
    named = {f"processor.{k}": v for k, v in entry["state_dict"].items()}  # module.corrector.* ...
    result = model.load_state_dict(reference_to_local(named), strict=False)
    assert result.unexpected_keys == []
    assert {k for k in result.missing_keys if k.startswith(("grouper.", "predictor."))} == {
        "grouper.initializer.slots"
    }
    inputs = entry["inputs"]
    with torch.no_grad():
        slots, predicted, masks = model.scan(inputs["features"], inputs["initial_state"])
    expected = entry["outputs"]
    assert slots.shape == predicted.shape == (2, 4, 11, 64) and masks.shape == (2, 4, 11, 64)
    # the fixtures' tolerance for recurrent outputs: 4 frames of sharp (x sqrt(d)) predictor
    # attention carry float noise to ~3e-5 on entries up to 6
    assert_close(slots, expected["state"], rtol=1e-4, atol=1e-4)
    assert_close(predicted, expected["state_predicted"], rtol=1e-4, atol=1e-4)
    assert_close(masks, expected["corrector"]["masks"], rtol=1e-4, atol=1e-5)


def test_forward_shapes_and_slot_count_override() -> None:
    model = tiny_model()
    out = model(features=random_features(), n_slots=6)
    assert out.slots.shape == out.slots_predicted.shape == (2, 3, 6, 16)
    assert out.grouping_masks.shape == out.decoder_masks.shape == (2, 3, 6, N_PATCHES)
    assert out.reconstruction.shape == (2, 3, N_PATCHES, 10)
    assert_close(out.decoder_masks.sum(dim=2), torch.ones(2, 3, N_PATCHES))


def test_forward_chains_frames_through_the_predictor() -> None:
    """Frame 0: fresh slots, n_iters_first; frame t + 1 starts from predictor(slots of frame t)."""
    model = tiny_model()
    features = random_features()
    with torch.no_grad():
        out = model(features=features, generator=torch.Generator().manual_seed(5))
        init = model.grouper.initializer(SlotRequest(2, generator=torch.Generator().manual_seed(5)))
        x = model.projection(features.features)
        first, _ = model.grouper(x[:, 0], init, n_iters=3)
        second, masks = model.grouper(x[:, 1], model.predictor(first), n_iters=2)
    assert_close(out.slots[:, 0], first)
    assert_close(out.slots_predicted[:, 0], model.predictor(first).detach())
    assert_close(out.slots[:, 1], second)
    assert_close(out.grouping_masks[:, 1], masks)


def test_carried_over_slots_get_the_later_frame_iterations() -> None:
    """carried_slots continue a video: frame 0 is not a first frame (n_iters, not n_iters_first)."""
    model = tiny_model()
    features, carried = random_features(T=1), torch.randn(2, 4, 16)
    with torch.no_grad():
        out = model(features=features, carried_slots=carried)
        x = model.projection(features.features[:, 0])
        later, _ = model.grouper(x, carried, n_iters=2)
        first, _ = model.grouper(x, carried, n_iters=3)
    assert_close(out.slots[:, 0], later)
    assert not torch.allclose(out.slots[:, 0], first, atol=1e-4)


def test_given_first_frame_slots_reproduce_the_sampled_run() -> None:
    """initial_slots are a first frame: the same tensor as the initializer's draw, the same run."""
    model = tiny_model()
    features = random_features()
    with torch.no_grad():
        sampled = model(features=features, generator=torch.Generator().manual_seed(3))
        slots = model.grouper.initializer(SlotRequest(2, generator=torch.Generator().manual_seed(3)))
        given = model(features=features, initial_slots=slots)
        carried = model(features=features, carried_slots=slots)
    for name in ("slots", "slots_predicted", "grouping_masks", "reconstruction", "decoder_masks"):
        assert torch.equal(getattr(given, name), getattr(sampled, name)), name
    assert not torch.allclose(carried.slots[:, 0], given.slots[:, 0], atol=1e-4)  # n_iters, not first
    with pytest.raises(ValueError, match="not both"):
        model(features=features, initial_slots=slots, carried_slots=slots)


def test_video_frames_are_encoded_independently() -> None:
    model = tiny_model()
    video = torch.randn(2, 3, 3, IMG, IMG)
    features = model.encode(video)
    assert features.features.shape == features.keys.shape == (2, 3, N_PATCHES, FEAT_DIM)
    frame = model.encoder(video[:, 2])
    assert_close(features.features[:, 2], frame.features)
    assert_close(features.keys[:, 2], frame.keys)


def test_gradients_flow_through_the_whole_clip() -> None:
    """Full BPTT: the last frame's slots depend on frame 0's initial slots and features."""
    model = tiny_model()
    features = random_features()
    features.features.requires_grad_(True)
    carried = torch.randn(2, 4, 16, requires_grad=True)
    model(features=features, carried_slots=carried).slots[:, -1].sum().backward()
    assert carried.grad.abs().sum() > 0
    assert features.features.grad[:, 0].abs().sum() > 0
    assert model.encoder.model.patch_embed.proj.weight.grad is None  # frozen


@pytest.mark.parametrize("T", [1, 2])
def test_identity_predictor_for_images(T: int) -> None:
    model = tiny_model(predictor=False)
    out = model(features=random_features(T=T))
    assert torch.equal(out.slots_predicted, out.slots)
