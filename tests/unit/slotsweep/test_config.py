"""The top-level schema (typos fail at compose time) and check_config (checks across groups)."""

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from slotsweep.config import check_config
from slotsweep.errors import SlotsweepError


def test_default_config_passes(compose_train: Callable[..., DictConfig]):
    cfg = compose_train(debug=False)
    check_config(cfg)
    assert cfg.seed == 0 and cfg.exp_name == "shapes"
    assert cfg.force is False and cfg.run_dir is None and cfg.load_weights is None


@pytest.mark.parametrize(
    "override",
    [
        "grouper.n_slot=3",  # misspelled key of a group
        "seedd=1",  # misspelled top-level key
        "trainer.max_step=3",
        "encoder=nope",  # unknown group option
    ],
)
def test_typos_fail_at_compose_time(compose_train: Callable[..., DictConfig], override: str):
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException, match=key.split(".")[-1]):
        compose_train(override)


@pytest.mark.parametrize(
    "override", ["seed=abc", "checkpoint_every_n_steps=often", "force=maybe", "val_pictures.n_clips=two"]
)
def test_schema_types_checked_at_compose_time(compose_train: Callable[..., DictConfig], override: str):
    with pytest.raises(ConfigCompositionException):
        compose_train(override)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.timesim.weight=-1"], "loss.timesim.weight=-1"),
        (["loss.featrec.weight=-0.5"], "loss.featrec.weight=-0.5"),
        (["loss.timesim.weight=nan"], "loss.timesim.weight=nan"),
        (["loss.timesim.weight=0", "loss.featrec.weight=0"], "all loss weights are 0"),
        (["load_weights=/nonexistent.ckpt"], "load_weights=/nonexistent.ckpt does not exist"),
        (["encoder.weights=/nonexistent.safetensors"], "encoder.weights=/nonexistent.safetensors does not"),
        (["checkpoint_every_n_steps=0"], "checkpoint_every_n_steps=0 must be >= 1"),
        (["objective=[]"], "objective=.* must name at least one metric"),
        (["val_pictures.every=0"], r"val_pictures=\{'n_clips': 2, 'every': 0\}: .* every >= 1"),
        (["val_pictures.n_clips=-1"], r"val_pictures=\{'n_clips': -1, 'every': 1\}: n_clips must be >= 0"),
        # a value of the wrong type: the key, the value as typed and what the constructor takes
        (["optim.base_lr=fast"], r"optim.base_lr=fast: expected a number \(float\)$"),
        (["grouper.n_slots=1.5"], r"grouper.n_slots=1.5: expected an integer \(int\)$"),
        (["trainer.max_steps=abc"], r"trainer.max_steps=abc: expected an integer \(int\)$"),
        (["dataset.batch_size=true"], r"dataset.batch_size=true: expected an integer \(int\)$"),
        (["loss.timesim.temperature=warm"], r"loss.timesim.temperature=warm: expected a number"),
    ],
)
def test_check_config_rejects(compose_train: Callable[..., DictConfig], overrides: list[str], message: str):
    cfg = compose_train(*overrides)
    with pytest.raises(SlotsweepError, match=message) as error:
        check_config(cfg)
    assert "\n" not in str(error.value)  # one line: the CLI prints it as is
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("overrides", [["grouper.n_slots=1"], ["val_pictures.n_clips=0"]])  # no pictures
def test_check_config_accepts(compose_train: Callable[..., DictConfig], overrides: list[str]):
    check_config(compose_train(*overrides))


def test_check_config_accepts_existing_load_weights(compose_train: Callable[..., DictConfig], tmp_path: Path):
    ckpt = tmp_path / "weights.ckpt"
    ckpt.write_bytes(b"")  # existence is checked here; the contents when the model loads them
    check_config(compose_train(f"load_weights={ckpt}"))
