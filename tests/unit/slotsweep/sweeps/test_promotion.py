"""ASHA's decisions on plain numbers: rungs, seeds per rung, which paused trial goes on."""

import math

import pytest

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.promotion import RungResult, Rungs, next_promotion, pooled_seed_std


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
    assert next_promotion(results, eta=3, maximize=True, seed_std=None).trial == 2
    results = {0: _at(0, values, paused={0, 3, 4, 5})}  # both top trials went on: wait for more
    assert next_promotion(results, eta=3, maximize=True, seed_std=None) is None
    assert next_promotion(results, eta=3, maximize=False, seed_std=None).trial == 3  # minimise: 0.1


def test_too_few_trials_at_a_rung_promote_none_until_the_sweep_is_finishing():
    results = {0: _at(0, {0: (0.9,), 1: (0.1,)}, paused={0, 1})}
    assert next_promotion(results, eta=3, maximize=True, seed_std=None) is None
    # no new trial will come: the best of the two goes on, so that a trial reaches the last rung
    assert next_promotion(results, eta=3, maximize=True, seed_std=None, finishing=True).trial == 0


def test_higher_rungs_are_promoted_first():
    low = _at(0, {0: (0.9,), 1: (0.8,), 2: (0.7,), 3: (0.1,), 4: (0.1,), 5: (0.1,)}, paused={0, 3, 4, 5})
    high = _at(1, {1: (0.6, 0.7), 2: (0.5, 0.4), 6: (0.1, 0.2)}, paused={1, 2})
    assert next_promotion({0: low, 1: high}, eta=3, maximize=True, seed_std=None).trial == 1


def test_a_gap_within_the_seed_noise_does_not_cut_a_trial():
    values = {0: (0.60,), 1: (0.58,), 2: (0.20,), 3: (0.10,), 4: (0.10,), 5: (0.10,)}
    results = {0: _at(0, values, paused={1, 2, 3, 4, 5})}  # trial 0 (the top 2 is 0 only... of 6: 2)
    # top 2 are trials 0 and 1; make it top 1 with eta=6 so trial 1 is outside by 0.02
    assert next_promotion(results, eta=6, maximize=True, seed_std=None) is None
    # one seed's std 0.05: the difference of two one-seed values has std 0.07 > 0.02
    assert next_promotion(results, eta=6, maximize=True, seed_std=0.05).trial == 1
    assert next_promotion(results, eta=6, maximize=True, seed_std=0.01) is None  # 0.014 < 0.02


def test_pooled_seed_std_uses_the_trials_with_several_seeds():
    results = [
        RungResult(0, 0, (1.0,), False),
        RungResult(1, 1, (1.0, 3.0), False),
        RungResult(2, 1, (2.0, 2.0, 5.0), False),
    ]
    # variances 2 (1 dof) and 3 (2 dof): pooled (2 + 6) / 3
    assert pooled_seed_std(results) == pytest.approx(math.sqrt(8 / 3))
    assert pooled_seed_std(results[:1]) is None
