"""report_errors: bad input (raised directly or wrapped by Hydra's instantiate) is one line, exit 2;
so is an override of a key that moved."""

import pytest
from hydra.errors import InstantiationException

from slotsweep.cli import MOVED_KEYS, refuse_moved_keys, report_errors
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


def test_a_moved_key_is_one_line_saying_where_it_went(capsys):
    refuse_moved_keys(["trainer=debug", "cache=true"])  # the new spelling passes
    for override in ("encoder.cache=true", "+encoder.cache=/scratch/f"):
        with pytest.raises(SystemExit) as exit_info:
            refuse_moved_keys(["trainer=debug", override])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (
            f"error: {override}: encoder.cache is gone; use {MOVED_KEYS['encoder.cache']}\n"
        )
