"""load_file: tensors and safetensors load; a file whose unpickling runs code is refused, unless allowed."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from slotsweep.errors import SlotsweepError
from slotsweep.runs.safe_load import load_file


def test_refuses_code_in_a_pickle_and_names_the_flag(pickle_bomb) -> None:
    with pytest.raises(SlotsweepError) as raised:
        load_file(pickle_bomb.path, "load_weights")
    message = str(raised.value)
    assert f"load_weights={pickle_bomb.path}" in message and "allow_pickle=true" in message
    assert "\n" not in message
    assert not pickle_bomb.marker.exists()


def test_allow_pickle_runs_it(pickle_bomb) -> None:
    """The opt-in really unpickles: the payload the refusal test guards against is live."""
    assert load_file(pickle_bomb.path, "ckpt", allow_pickle=True)["state_dict"]["w"].shape == (1,)
    assert pickle_bomb.marker.is_dir()


def test_plain_and_safetensors_files_load(tmp_path: Path) -> None:
    state = {"w": torch.arange(3.0)}
    torch.save({"state_dict": state, "step": 4, "name": "x"}, tmp_path / "plain.ckpt")
    save_file(state, tmp_path / "w.safetensors")
    assert torch.equal(load_file(tmp_path / "plain.ckpt", "ckpt")["state_dict"]["w"], state["w"])
    assert torch.equal(load_file(tmp_path / "w.safetensors", "ckpt")["w"], state["w"])


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(SlotsweepError, match="ckpt=.*missing.ckpt does not exist"):
        load_file(tmp_path / "missing.ckpt", "ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SlotsweepError, match=f"ckpt={garbage} is not a readable torch checkpoint"):
        load_file(garbage, "ckpt")
