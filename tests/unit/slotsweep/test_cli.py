"""report_errors: bad input (raised directly or wrapped by Hydra's instantiate) is one line, exit 2;
so is an override of a key that moved."""

from collections.abc import Callable

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import DictConfig

from slotsweep.cli import expand_shorthands, report_errors, user_message
from slotsweep.errors import SlotsweepError


def _raising(error: BaseException):
    @report_errors
    def task() -> None:
        raise error

    return task


def _wrapped(error: SlotsweepError, levels: int) -> BaseException:
    """`error` as Hydra's instantiate re-raises it, once per nesting level of `_target_` nodes."""
    for _ in range(levels):
        try:
            raise InstantiationException(f"Error in call to target ...:\n{error!r}\nfull_key: x") from error
        except InstantiationException as wrapped:
            error = wrapped
    return error


@pytest.mark.parametrize("levels", [0, 1, 2])
def test_user_error_is_one_line_and_exit_2(levels: int, capsys: pytest.CaptureFixture):
    task = _raising(_wrapped(SlotsweepError("grouper.n_slots=0 must be >= 1"), levels))
    with pytest.raises(SystemExit) as exit_:
        task()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: grouper.n_slots=0 must be >= 1\n"


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ZeroDivisionError("a bug"), KeyboardInterrupt()])
def test_other_errors_propagate(error: BaseException, capsys: pytest.CaptureFixture):
    with pytest.raises(type(error)):
        _raising(error)()
    assert capsys.readouterr().err == ""


def test_result_passes_through():
    assert report_errors(lambda x: x + 1)(2) == 3


@pytest.mark.parametrize(
    ("override", "expanded"),
    [
        ("encoder.cache=true", ["cache=true"]),
        ("+encoder.cache=True", ["cache=true"]),
        ("encoder.cache=false", ["cache=false"]),
        ("encoder.cache=null", ["cache=false"]),
        ("encoder.cache=/scratch/f", ["cache=true", "paths.features_dir=/scratch/f"]),
    ],
)
def test_encoder_cache_shorthand_is_written_out(override, expanded):
    assert expand_shorthands(["trainer=debug", override, "seed=1"]) == ["trainer=debug", *expanded, "seed=1"]


def test_encoder_cache_shorthand_refuses_a_sweep_in_one_line(capsys):
    for override in ("encoder.cache=true,false", "~encoder.cache"):
        with pytest.raises(SystemExit) as exit_info:
            expand_shorthands(["trainer=debug", override])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {override}: encoder.cache takes one value") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.max_step=5",
            "trainer.max_step: no such key; did you mean trainer.max_steps or trainer.max_epochs?",
        ),
        ("grouper.n_slot=3", "grouper.n_slot: no such key; did you mean grouper.n_slots?"),
        ("seedz=1", "seedz: no such key; did you mean seed or sweep?"),
        (
            "optim.zzz=1",
            "optim.zzz: no such key; optim has base_lr, betas, decay_steps, eps, reference_batch_size, "
            "warmup_steps, weight_decay",
        ),
    ],
)
def test_unknown_key_names_the_closest_existing_ones(
    compose_train: Callable[..., DictConfig], override: str, message: str
):
    """Not Hydra's advice to add the key with `+`: a typo is likelier than a new key."""
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(override)
    assert user_message(error.value) == message
