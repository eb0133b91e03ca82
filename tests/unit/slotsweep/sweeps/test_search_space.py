"""Hydra sweep syntax to Optuna distributions, and parameter values back to overrides."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.search_space import override_string, parse_search_space


@pytest.mark.parametrize(
    ("argument", "distribution", "listed"),
    [
        ("a=interval(0.1, 2)", FloatDistribution(0.1, 2.0), None),
        ("a=tag(log, interval(0.01, 1))", FloatDistribution(0.01, 1.0, log=True), None),
        ("a=tag(int, interval(1, 9))", IntDistribution(1, 9), None),
        ("a=tag(int, log, interval(1, 64))", IntDistribution(1, 64, log=True), None),
        ("a=range(3, 12)", IntDistribution(3, 11), list(range(3, 12))),  # stop excluded, as in Hydra
        ("a=range(2, 11, 4)", IntDistribution(2, 10, step=4), [2, 6, 10]),
        ("a=range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5), [0.5, 1.0, 1.5]),
        ("a=choice(4, 7)", CategoricalDistribution([4, 7]), [4, 7]),
        ("a=4,7,11", CategoricalDistribution([4, 7, 11]), [4, 7, 11]),
        ("encoder=choice(dino_vits16, 'a b')", CategoricalDistribution(["dino_vits16", "a b"]), None),
    ],
)
def test_each_sweep_syntax_gives_its_distribution(argument, distribution, listed):
    space = parse_search_space([argument])
    key = argument.split("=")[0]
    assert space.distributions == {key: distribution}
    assert space.fixed == []
    if listed is not None:
        assert space.listed[key] == listed


def test_plain_overrides_are_fixed_and_later_arguments_win():
    space = parse_search_space(
        ["a=interval(0, 1)", "trainer=debug", "b=choice(1, 2)", "+extra=3", "a=5", "b=range(1, 4)"]
    )
    assert space.fixed == ["trainer=debug", "+extra=3", "a=5"]
    assert space.distributions == {"b": IntDistribution(1, 3)}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("a=tag(loog, interval(0, 1))", "unknown tag ['loog']"),
        ("a=tag(log, choice(1, 2))", "tags apply to interval() and range()"),
        ("a=choice([1, 2], [3])", "choices must be numbers, strings or bools"),
        ("a=interval(2, 1)", "a=interval(2, 1)"),  # Optuna's low > high check, with the key
        ("a=tag(log, interval(0, 1))", "a=tag(log, interval(0, 1))"),  # log of 0
        ("a=range(5, 5)", "the range is empty"),
    ],
)
def test_bad_sweeps_name_the_override(argument, message):
    with pytest.raises(
        SlotsweepError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse_search_space([argument])


def test_grid_needs_listed_values():
    space = parse_search_space(["n=range(3, 6)", "m=choice(a, b)"])
    assert space.grid() == {"n": [3, 4, 5], "m": ["a", "b"]}
    with pytest.raises(SlotsweepError, match=r"sampler=grid needs listed values, but \['w'\]"):
        parse_search_space(["n=range(3, 6)", "w=interval(0, 1)"]).grid()


@pytest.mark.parametrize(
    "value", [0.1, 1e-05, 3, True, None, "dino_vits16", "a b", "x=y", "1.5", "true", "null"]
)
def test_override_strings_parse_back_to_the_value(value):
    (override,) = OverridesParser.create().parse_overrides([override_string("key", value)])
    assert override.value() == value
