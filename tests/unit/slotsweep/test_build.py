"""build.py: the parts built once, each checked as it is built, every refusal before the encoder."""

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from slotsweep.build import build_datamodule, build_losses, build_optim, build_parts
from slotsweep.errors import SlotsweepError


def build_cheap_parts(cfg: DictConfig) -> None:
    """What build_module builds before the encoder, in its order."""
    datamodule = build_datamodule(cfg.dataset)
    build_parts(cfg, datamodule.train_clip_frames)
    build_optim(cfg.optim)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grouper.n_slots=0"], "^grouper.n_slots=0 must be >= 1"),  # the initializer's constructor
        (["grouper.n_slots=-2"], "^grouper.n_slots=-2 must be >= 1"),
        (["grouper.slot_dim=0"], "^grouper.slot_dim=0 must be >= 1"),
        # the fixture's clips are dataset.train_clip_frames=3 frames long: the loss's check_clip
        (
            ["loss.timesim.offset=3"],
            r"^loss.timesim.offset=3 must be in \[1, 2\] \(dataset.train_clip_frames=3\)",
        ),
        (
            ["loss.timesim.offset=4", "dataset.train_clip_frames=4"],
            r"^loss.timesim.offset=4 must be in \[1, 3\] \(dataset.train_clip_frames=4\)",
        ),
        (["loss.timesim.offset=0"], "^loss.timesim.offset=0 must be >= 1$"),  # the loss's constructor
        (["loss=slotcontrast", "loss.slotslot.temperature=0"], "^loss.slotslot.temperature=0 must be > 0$"),
        (["optim.warmup_steps=10", "optim.decay_steps=5"], "optim.warmup_steps=10, optim.decay_steps=5"),
    ],
)
def test_bad_parts_are_refused_before_the_encoder(
    compose_train: Callable[..., DictConfig], overrides: list[str], message: str
):
    cfg = compose_train(*overrides)
    cfg.encoder.model_name = "no_such_vit"  # building the encoder would fail differently
    with pytest.raises(SlotsweepError, match=message) as error:
        build_cheap_parts(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.timesim.weight=0", "loss.timesim.offset=9"],  # a disabled loss needs no valid offset
        ["loss=dinosaur", "dataset.train_clip_frames=1"],  # no similarity loss: single frames are fine
        ["loss=timesim", "loss.timesim.offset=2"],  # offset 2 < 3 frames
    ],
)
def test_good_parts_pass(compose_train: Callable[..., DictConfig], overrides: list[str]):
    build_cheap_parts(compose_train(*overrides))


def test_a_loss_is_named_by_its_yaml_key(compose_train: Callable[..., DictConfig]):
    """The same class under another key: its errors, its log key and its weight key say that key."""
    cfg = compose_train()
    cfg.loss = {"similarity": {**cfg.loss.timesim, "temperature": -1.0}}
    with pytest.raises(SlotsweepError, match=r"^loss.similarity.temperature=-1.0 must be > 0$"):
        build_losses(cfg.loss)
    cfg.loss.similarity.temperature = 0.1
    assert list(build_losses(cfg.loss)) == ["similarity"]
    cfg.loss.similarity.weight = 0.0  # a weight-0 loss is dropped with its channels
    assert build_losses(cfg.loss) == {}
