"""What a run's checkpoints hold and how a model comes back from one: one file per save with
last.ckpt linking to it, the frozen encoder left out and rebuilt from its recorded source (checked
by hash), and a checkpoint that holds every tensor (an older one) needing no weights file.

Resume, eval and infer from such checkpoints: test_pause_resume.py, test_train.py, test_eval.py,
test_infer.py and test_pools.py run on them; the reference's released layout: models/test_weights.py.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from slotsweep.build import build_model, checkpoint_config
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.inference import load_checkpoint_model
from slotsweep.lean_timm import timm
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import task


def _trained(cfg: DictConfig) -> Path:
    """Train `cfg` (trainer=debug: 4 steps, a checkpoint every 2); its last.ckpt."""
    task.run(cfg)
    return experiment.run_dir(cfg, experiment.experiment_id(cfg)) / LAST_CHECKPOINT


def _encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}


def test_one_file_per_save_holding_the_trainable_state(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    cfg = compose_train()
    last = _trained(cfg)
    checkpoints = last.parent
    # steps 0, 2 and 4 were saved, each superseding the one before: one file and the link to it
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    assert os.readlink(last) == "step0000004.ckpt"  # relative: a copied run dir keeps its link
    assert [p.name for p in checkpoints.iterdir() if not p.is_symlink()] == ["step0000004.ckpt"]

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    _, module = task.build_task(cfg)
    encoder = {f"model.{k}": v for k, v in _encoder_state(module.model).items()}
    assert encoder and set(state) == set(module.state_dict()) - set(encoder)  # exactly the encoder left out
    record = checkpoint["slotsweep"]["frozen"]
    assert record["source"] == "a random init (encoder.init_seed=0)" and len(record["sha256"]) == 64

    # the same checkpoint with the encoder (as written before): larger by the encoder's bytes (to
    # the zip archive's alignment of its entries)
    full = tmp_path / "full.ckpt"
    torch.save({**checkpoint, "state_dict": {**state, **encoder}}, full)
    encoder_bytes = sum(v.numel() * v.element_size() for v in encoder.values())
    assert full.stat().st_size - last.stat().st_size == pytest.approx(encoder_bytes, rel=0.01)


def test_a_checkpoint_holding_every_tensor_needs_no_weights_file(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    """An older checkpoint (the encoder inside, no record) rebuilds its model without reading the
    encoder's source, even where that file is gone; it gives the model the new format gives."""
    last = _trained(compose_train())
    model, _ = load_checkpoint_model(last)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint["slotsweep"].pop("frozen")
    checkpoint["slotsweep"]["config"]["encoder"].update(weights="/moved/away.safetensors", pretrained=True)
    encoder = {f"model.{k}": v for k, v in _encoder_state(model).items()}
    older = tmp_path / "older.ckpt"
    torch.save({**checkpoint, "state_dict": {**checkpoint["state_dict"], **encoder}}, older)

    cfg = checkpoint_config(older)
    assert cfg.encoder.weights is None and cfg.encoder.pretrained is False  # not read, not fetched
    rebuilt, _ = build_model(cfg, ckpt=older)
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in rebuilt.state_dict().items())


def _tiny_vit_file(path: Path, seed: int) -> Path:
    """A timm weights file of conf/encoder/tiny.yaml's architecture, seeded."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64, patch_size=8, depth=2)
    save_file(vit.state_dict(), path)
    return path


def test_a_frozen_encoder_from_a_file_that_moved_or_changed(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    """The run's encoder.weights file moved: named in one line with the override that fixes it;
    given at its new place it rebuilds the model; another file there fails the hash check."""
    weights = _tiny_vit_file(tmp_path / "vit.safetensors", seed=0)
    last = _trained(compose_train(f"encoder.weights={weights}"))
    trained, _ = load_checkpoint_model(last)
    moved = weights.rename(tmp_path / "moved.safetensors")

    with pytest.raises(SlotsweepError) as missing:
        load_checkpoint_model(last)
    assert str(missing.value) == (
        f"ckpt={last} left out its frozen encoder, which is rebuilt from encoder.weights={weights}; that "
        'file does not exist: pass where it is now, e.g. overrides=["encoder.weights=<file>"]'
    )
    model, _ = load_checkpoint_model(last, overrides=[f"encoder.weights={moved}"])
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())

    _tiny_vit_file(moved, seed=1)  # other weights under the same name
    with pytest.raises(SlotsweepError, match=f"ckpt={last} left out its frozen encoder, trained from "):
        load_checkpoint_model(last, overrides=[f"encoder.weights={moved}"])


def test_eval_with_another_frozen_encoder_is_one_error_line(compose_train: Callable[..., DictConfig], cli):
    last = _trained(compose_train())
    result = cli.run("eval.py", f"ckpt={last}", 'overrides=["encoder.init_seed=1"]', "accelerator=cpu")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(f"error: ckpt={last} left out its frozen encoder, trained from a random ")
    assert (
        "init (encoder.init_seed=0)" in errors[0]
        and "rebuilt from a random init (encoder.init_seed=1)" in errors[0]
    )
    assert not (last.parents[1] / experiment.EVAL_DIR).exists()  # nothing written
