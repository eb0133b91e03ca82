"""ASHA's decisions on plain numbers: rungs, seeds per rung, which paused trial goes on."""

import math

import pytest

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.promotion import RungResult, Rungs, next_promotion, seed_noise


def test_rungs_are_eta_apart_and_end_at_max_steps():
    assert Rungs(min_steps=100, eta=3, max_steps=1000).steps == [100, 300, 900, 1000]
    assert Rungs(min_steps=250, eta=2, max_steps=1000).steps == [250, 500, 1000]
    assert Rungs(min_steps=1000, eta=3, max_steps=1000).steps == [1000]


def test_seeds_grow_as_a_trial_is_promoted_and_the_last_rung_runs_all():
    rungs = Rungs(min_steps=100, eta=3, max_steps=900, n_seeds=4)  # rungs 100, 300, 900
    assert [rungs.seeds_at(k) for k in range(3)] == [1, 2, 4]
    same = Rungs(min_steps=100, eta=3, max_steps=900, n_seeds=4, seeds_as_fidelity=False)
    assert [same.seeds_at(k) for k in range(3)] == [4, 4, 4]


@pytest.mark.parametrize(
    ("min_steps", "eta", "key"), [(0, 3, "min_steps"), (2000, 3, "min_steps"), (10, 1, "reduction")]
)
def test_bad_rungs_name_the_key(min_steps: int, eta: int, key: str):
    with pytest.raises(SlotsweepError, match=f"hydra.sweeper.pruner.{key}"):
        Rungs(min_steps=min_steps, eta=eta, max_steps=1000)


def _at(rung: int, values: dict[int, tuple[float, ...]], paused: set[int]) -> list[RungResult]:
    return [RungResult(trial, rung, v, trial in paused) for trial, v in values.items()]


def test_the_best_paused_trial_of_the_top_third_is_promoted():
    values = {0: (0.5,), 1: (0.9,), 2: (0.7,), 3: (0.1,), 4: (0.2,), 5: (0.3,)}
    # 6 trials reached rung 0: the top 2 (trials 1 and 2) may go on; trial 1 already did
    results = {0: _at(0, values, paused={0, 2, 3, 4, 5})}
    promoted = next_promotion(results, eta=3, maximize=True)
    assert (promoted.trial, promoted.rung, promoted.rank, promoted.behind) == (2, 0, 2, 0.0)
    assert str(promoted) == "0.7 at rung 0, 2 of 6 (the rung keeps 2)"
    results = {0: _at(0, values, paused={0, 3, 4, 5})}  # both top trials went on: wait for more
    assert next_promotion(results, eta=3, maximize=True) is None
    assert next_promotion(results, eta=3, maximize=False).trial == 3  # minimise: 0.1


def test_too_few_trials_at_a_rung_promote_none_until_the_sweep_is_finishing():
    results = {0: _at(0, {0: (0.9,), 1: (0.1,)}, paused={0, 1})}
    assert next_promotion(results, eta=3, maximize=True) is None
    # no new trial will come: the best of the two goes on, so that a trial reaches the last rung
    assert next_promotion(results, eta=3, maximize=True, finishing=True).trial == 0


def test_higher_rungs_are_promoted_first():
    low = _at(0, {0: (0.9,), 1: (0.8,), 2: (0.7,), 3: (0.1,), 4: (0.1,), 5: (0.1,)}, paused={0, 3, 4, 5})
    high = _at(1, {1: (0.6, 0.7), 2: (0.5, 0.4), 6: (0.1, 0.2)}, paused={1, 2})
    assert next_promotion({0: low, 1: high}, eta=3, maximize=True).trial == 1


def test_a_gap_within_the_seed_noise_does_not_cut_a_trial():
    # eta=6 keeps the top 1 of 6 (trial 0); trial 1 is 0.02 behind it on each of its 2 seeds' mean
    quiet = {0: (0.60, 0.62), 1: (0.59, 0.59), 2: (0.2, 0.2), 3: (0.1, 0.1), 4: (0.1, 0.1), 5: (0.1, 0.1)}
    noisy = {**quiet, 4: (0.0, 0.2), 5: (0.2, 0.0)}  # trials 4 and 5: seeds that disagree by 0.2
    assert next_promotion({0: _at(0, quiet, paused={1, 2, 3, 4, 5})}, eta=6, maximize=True) is None
    promoted = next_promotion({0: _at(0, noisy, paused={1, 2, 3, 4, 5})}, eta=6, maximize=True)
    assert (promoted.trial, promoted.rank, promoted.reached, promoted.kept) == (1, 2, 6, 1)
    assert promoted.behind == pytest.approx(0.02) and promoted.allowance > 0.02
    assert "0.02 behind the rung's top 1, within the seed noise" in str(promoted)  # why, in the log
    # without the allowance the plain top 1/eta decides
    results = {0: _at(0, noisy, paused={1, 2, 3, 4, 5})}
    assert next_promotion(results, eta=6, maximize=True, noise_allowance=False) is None


def test_the_noise_is_the_rungs_own():
    # the values (and their seed spread) grow with the steps: rung 1's spread must not let rung 0's
    # laggard through
    low = _at(0, {0: (0.02, 0.02), 1: (0.01, 0.01), 2: (0.0, 0.0)}, paused={1, 2})
    high = _at(1, {0: (0.3, 0.9), 3: (0.9, 0.3)}, paused={3})
    assert next_promotion({0: low, 1: high}, eta=3, maximize=True, finishing=False) is None


def test_seed_noise_leaves_out_what_a_seed_does_to_every_trial():
    # seed 1 adds 0.5 to every trial alike: a paired difference does not see it
    shifted = [RungResult(t, 0, (v, v + 0.5), False) for t, v in enumerate((0.1, 0.3, 0.2))]
    assert seed_noise(shifted) == pytest.approx(0.0, abs=1e-12)
    # trial x seed interaction: residuals of a two-way fit, (I - 1)(J - 1) = 2 degrees of freedom
    values = [(1.0, 2.0), (2.0, 2.0), (3.0, 5.0)]
    results = [RungResult(t, 0, v, False) for t, v in enumerate(values)]
    # trial means 1.5, 2, 4; seed effects -0.5, +0.5: residuals 0, +-0.5, +-0.5 (squares sum to 1)
    assert seed_noise(results) == pytest.approx(math.sqrt(1.0 / 2))


def test_seed_noise_with_one_trial_of_several_seeds_is_its_plain_std():
    results = [RungResult(0, 1, (1.0, 3.0), False), RungResult(1, 0, (1.0,), False)]
    assert seed_noise(results) == pytest.approx(math.sqrt(2.0))
    assert seed_noise(results[1:]) is None
    assert seed_noise([RungResult(0, 1, (1.0, math.nan), False)]) is None
