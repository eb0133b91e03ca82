"""Reference checkpoints: the five released layouts map onto this project's models, and load."""

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from slotsweep.build import build_model
from slotsweep.errors import SlotsweepError
from slotsweep.models.weights import load_model_weights, read_state_dict, reference_to_local

# The released configs (videosaur.md §4) as this project's config overrides.
VIDEOSAUR_B8 = ["encoder=dino_vitb8", "grouper.slot_dim=128", "decoder.n_blocks=2"]
VIDEOSAUR_YTVIS = ["grouper.n_slots=7", "grouper.slot_dim=64", "decoder.n_blocks=3"]
RENDERER_2 = "decoder.renderer_hidden_dims=[1024,1024]"
REFERENCE_CONFIGS = {
    "configs/videosaur/movi_c.yml": [*VIDEOSAUR_B8, "grouper.n_slots=11", "loss=timesim"],
    "configs/videosaur/movi_e.yml": [*VIDEOSAUR_B8, "grouper.n_slots=15", "loss=timesim"],
    "configs/videosaur/ytvis.yml": ["encoder=dino_vitb16", *VIDEOSAUR_YTVIS, RENDERER_2],
    "configs/videosaur/ytvis_dinov2.yml": ["encoder=dinov2_vitb14", *VIDEOSAUR_YTVIS, RENDERER_2],
    "configs/dinosaur/coco_base14_dinov2.yml": [
        "encoder=dinov2_vitb14",
        "encoder.img_size=224",
        "encoder.pos_embed_size=518",
        "grouper.n_slots=7",
        "grouper.slot_dim=256",
        "grouper.n_iters=3",
        "grouper.use_mlp=true",
        "predictor=none",
        "decoder=mlp",
        "loss=dinosaur",
    ],
}
IMAGE_CONFIGS = {"configs/dinosaur/coco_base14_dinov2.yml"}


def local_to_reference(state: dict[str, Tensor], video: bool) -> dict[str, Tensor]:
    """This project's names -> the reference's, written independently of reference_to_local."""
    module = ".module" if video else ""
    prefixes = [
        ("grouper.initializer.", "initializer."),
        ("encoder.model.", f"encoder{module}.backbone.model."),
        ("projection.", f"encoder{module}.output_transform."),
        ("grouper.", f"processor{module}.corrector."),
        ("predictor.", f"processor{module}.predictor."),
        ("decoder.", f"decoder{module}."),
    ]
    renamed = {}
    for key, value in state.items():
        ours, theirs = next((o, t) for o, t in prefixes if key.startswith(o))
        key = theirs + key.removeprefix(ours)
        renamed[re.sub(r"(output_transform|renderer|mlp)\.(\d+)\.", r"\1.layers.\2.", key)] = value
    return renamed


@pytest.mark.parametrize("config", list(REFERENCE_CONFIGS))
def test_reference_layout_maps_onto_our_model(reference, compose_train, config: str) -> None:
    """Names, shapes and trainable parameter counts of the released configs (random weights)."""
    expected = reference("state_dict_keys.json")[config]
    cfg = compose_train(*REFERENCE_CONFIGS[config], "encoder.pretrained=false")
    model, _ = build_model(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    del model  # the ViT-B weights: one model in memory at a time
    theirs = {k: torch.empty(shape, device="meta") for k, shape in expected["keys"].items()}
    mapped = {k: tuple(v.shape) for k, v in reference_to_local(theirs).items()}
    assert len(mapped) == len(theirs) == expected["n_keys"]  # no two names collapse into one
    assert sorted(set(mapped) - set(ours)) == [] and sorted(set(ours) - set(mapped)) == []
    assert mapped == ours
    assert trainable == expected["n_trainable_params"]
    assert total == expected["n_params_total"]  # the frozen ViT ends at block 12, without norm
    video = config not in IMAGE_CONFIGS
    meta = {k: torch.empty(shape, device="meta") for k, shape in ours.items()}
    round_trip = {k: list(v.shape) for k, v in local_to_reference(meta, video).items()}
    assert round_trip == expected["keys"]


def test_reference_to_local_names() -> None:
    x = torch.zeros(1)
    renamed = reference_to_local(
        {
            "initializer.mean": x,
            "encoder.module.backbone.model.blocks.0.attn.qkv.weight": x,
            "encoder.output_transform.layers.3.bias": x,
            "processor.module.corrector.mlp.layers.1.weight": x,
            "processor.predictor.blocks.0.self_attn.qkv.weight": x,
            "decoder.module.renderer.layers.4.weight": x,
            "decoder.mlp.layers.6.bias": x,
            "decoder.module.output_transform.weight": x,
        }
    )
    assert list(renamed) == [
        "grouper.initializer.mean",
        "encoder.model.blocks.0.attn.qkv.weight",
        "projection.3.bias",
        "grouper.mlp.1.weight",
        "predictor.blocks.0.self_attn.qkv.weight",
        "decoder.renderer.4.weight",
        "decoder.mlp.6.bias",
        "decoder.output_transform.weight",
    ]


def outputs(model: torch.nn.Module) -> tuple[Tensor, Tensor]:
    """Reconstruction and decoder masks of a fixed clip from fixed initial slots."""
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, 2, 3, model.encoder.img_size, model.encoder.img_size, generator=generator)
    slots = torch.randn(1, model.grouper.n_slots, model.grouper.slot_dim, generator=generator)
    with torch.no_grad():
        out = model.eval()(video=video, initial_slots=slots)
    return out.reconstruction, out.decoder_masks


@pytest.mark.parametrize("image", [False, True], ids=["video", "image"])
def test_reference_checkpoint_loads_and_gives_the_same_outputs(
    compose_train, tmp_path: Path, image: bool
) -> None:
    overrides = ["predictor=none", "decoder=mlp", "decoder.hidden_dims=[64]"] if image else []
    torch.manual_seed(0)
    source, _ = build_model(compose_train(*overrides))
    torch.manual_seed(1)
    target, _ = build_model(compose_train(*overrides, "encoder.init_seed=1"))
    assert not torch.equal(outputs(source)[0], outputs(target)[0])
    path = tmp_path / "reference.ckpt"  # a PL checkpoint of the reference code
    torch.save({"state_dict": local_to_reference(source.state_dict(), video=not image)}, path)
    load_model_weights(target, path)
    for ours, theirs in zip(outputs(target), outputs(source), strict=True):
        assert torch.equal(ours, theirs)


def test_own_checkpoint_loads(compose_train, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source, _ = build_model(compose_train())
    torch.manual_seed(1)
    target, _ = build_model(compose_train("encoder.init_seed=1"))
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "last.ckpt"  # the LightningModule holds the model as `model`
    torch.save({"state_dict": state, "global_step": 3}, path)
    assert read_state_dict(path).keys() == source.state_dict().keys()
    load_model_weights(target, path)
    assert torch.equal(outputs(target)[0], outputs(source)[0])


def test_other_architecture_names_missing_and_unexpected_keys(compose_train, tmp_path) -> None:
    source, _ = build_model(compose_train())  # SlotMixer decoder
    path = tmp_path / "reference.ckpt"
    torch.save({"state_dict": local_to_reference(source.state_dict(), video=True)}, path)
    target, _ = build_model(compose_train("decoder=mlp", "decoder.hidden_dims=[64]"))
    with pytest.raises(SlotsweepError) as error:
        load_model_weights(target, path)
    message = str(error.value)
    assert str(path) in message
    assert re.search(r"\d+ missing \[decoder\.mlp\.0\.bias", message)
    assert re.search(r"\d+ unexpected \[decoder\.allocator\.blocks\.0\.", message)
    assert "decoder.pos_emb: checkpoint (1, 64, 64) vs model (1, 1, 64, 64)" in message


def test_other_widths_name_the_shapes(compose_train, tmp_path: Path) -> None:
    source, _ = build_model(compose_train())
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    target, _ = build_model(compose_train("grouper.slot_dim=32"))
    shapes = r"other shapes \[decoder.allocator.blocks.0.linear1.bias: checkpoint \(256,\) vs model \(128,\)"
    with pytest.raises(SlotsweepError, match=shapes):
        load_model_weights(target, path)


def test_unreadable_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(SlotsweepError, match="does not exist"):
        read_state_dict(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SlotsweepError, match=f"ckpt={garbage} is not a readable"):
        read_state_dict(garbage)
