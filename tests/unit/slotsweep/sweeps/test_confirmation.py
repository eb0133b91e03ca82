"""Ranking of confirmed trials over all their seeds, with the paired test (scipy's ttest_rel)."""

import optuna
import pytest
from scipy.stats import ttest_rel

from slotsweep.sweeps import confirmation


def study_with(per_trial: list[dict[int, float]], search_seeds: list[int]) -> optuna.Study:
    """A maximising study whose trial i ran search_seeds, then was confirmed on the other seeds."""
    study = optuna.create_study(direction="maximize")
    for number, values in enumerate(per_trial):
        trial = study.ask()
        for seed in search_seeds:
            trial.set_user_attr(f"seed{seed}", values[seed])
        study.tell(trial, sum(values[s] for s in search_seeds) / len(search_seeds))
        extra = {str(s): v for s, v in values.items() if s not in search_seeds}
        study.set_user_attr(f"confirm_values_{number}", extra)
    return study


def test_the_winner_that_beats_the_runner_up_on_every_seed_is_said_to_beat_it():
    a = {0: 0.50, 1: 0.52, 2: 0.51, 3: 0.53}
    b = {0: 0.40, 1: 0.43, 2: 0.41, 3: 0.42}
    study = study_with([b, a], search_seeds=[0])

    result = confirmation.rank(study, confirmation.top_trials(study, 2), [0], None)

    assert [row["trial"] for row in result["ranking"]] == [1, 0]
    assert result["ranking"][0]["seeds"] == a and result["ranking"][0]["mean"] == pytest.approx(0.515)
    (test,) = result["paired_tests"]
    assert test["shared_seeds"] == [0, 1, 2, 3]
    assert test["p_value"] == pytest.approx(ttest_rel(list(a.values()), list(b.values())).pvalue)
    assert "trial 1 beats the runner-up, trial 0, beyond seed noise" in result["verdict"]


def test_a_winner_by_seed_luck_is_called_tied():
    a = {0: 0.60, 1: 0.40, 2: 0.55, 3: 0.45}  # best on the search seed, noisy elsewhere
    b = {0: 0.50, 1: 0.52, 2: 0.47, 3: 0.49}
    study = study_with([a, b], search_seeds=[0])

    result = confirmation.rank(study, confirmation.top_trials(study, 2), [0], None)

    assert "is NOT better than the runner-up" in result["verdict"]
    assert result["paired_tests"][0]["p_value"] > 0.05
