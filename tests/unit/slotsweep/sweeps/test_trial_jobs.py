"""Intermediate values and cost of a trial from its seeds' run dirs (slotsweep.runs.trial_files)."""

from pathlib import Path

import optuna
import pytest

from slotsweep.runs import experiment
from slotsweep.runs.trial_files import append_report
from slotsweep.sweeps.trial_jobs import SeedJob, TrialJobs, spent_hours


def trial_of(tmp_path: Path, n_seeds: int) -> TrialJobs:
    jobs = []
    for seed in range(n_seeds):
        (tmp_path / f"seed{seed}").mkdir()
        jobs.append(SeedJob(seed=seed, overrides=[], run_dir=tmp_path / f"seed{seed}", state="running"))
    return TrialJobs(number=0, jobs=jobs, save=lambda attrs: None, as_values=tuple)


def test_a_step_is_reported_once_every_running_seed_reached_it_as_the_mean_of_the_seeds(tmp_path: Path):
    trial = trial_of(tmp_path, 2)
    append_report(trial.jobs[0].run_dir, 2, [0.2])
    append_report(trial.jobs[0].run_dir, 4, [0.4])
    append_report(trial.jobs[1].run_dir, 2, [0.6])

    assert trial.new_intermediate_values() == [(2, pytest.approx(0.4))]  # step 4: seed 1 not there yet

    append_report(trial.jobs[1].run_dir, 4, [0.8])
    assert trial.new_intermediate_values() == [(4, pytest.approx(0.6))]
    assert trial.new_intermediate_values() == []  # each step once


def test_seeds_that_ended_or_wait_in_the_queue_do_not_hold_a_step_back(tmp_path: Path):
    trial = trial_of(tmp_path, 3)
    append_report(trial.jobs[0].run_dir, 2, [0.3])
    append_report(trial.jobs[0].run_dir, 4, [0.5])
    append_report(trial.jobs[1].run_dir, 2, [0.1])  # then it failed
    trial.jobs[1].state, trial.jobs[1].outcome = "ended", "RuntimeError: boom"
    trial.jobs[2].state = "pending"

    assert trial.new_intermediate_values() == [(2, pytest.approx(0.2)), (4, pytest.approx(0.5))]


def test_a_step_validated_again_after_a_resume_keeps_its_last_value(tmp_path: Path):
    trial = trial_of(tmp_path, 1)
    append_report(trial.jobs[0].run_dir, 2, [0.1])
    append_report(trial.jobs[0].run_dir, 2, [0.3])
    with (trial.jobs[0].run_dir / "validation.jsonl").open("a") as file:
        file.write('{"step": 4, "val')  # a line still being written

    assert trial.new_intermediate_values() == [(2, pytest.approx(0.3))]


def test_the_budget_counts_running_jobs_at_their_last_reported_cost(tmp_path: Path):
    """An in-flight trial costs what its run dirs report so far (a resumed run dir's earlier
    sessions included, never twice); ended trials cost their recorded total."""
    study = optuna.create_study()
    ended = study.ask()
    ended.set_user_attr("device_seconds", 3600.0)  # as the sweeper records it, before telling
    study.tell(ended, 1.0)
    running = study.ask()
    trial = trial_of(tmp_path, 2)
    trial.number = running.number
    # seed 0: paused at an earlier rung (results.json 100 s), resumed and reporting 250 s so far
    experiment.write_results(trial.jobs[0].run_dir, {"status": "paused", "device_seconds": 100.0})
    append_report(trial.jobs[0].run_dir, 4, [0.1], device_seconds=250.0)
    # seed 1: a new seed, before its first validation: its cost is not known yet
    assert trial.current_seconds() == 250.0
    append_report(trial.jobs[1].run_dir, 2, [0.1], device_seconds=50.0)
    assert spent_hours(study, {running.number: trial}) == pytest.approx((3600 + 250 + 50) / 3600)
    assert spent_hours(study, {}) == pytest.approx(1.0)  # the running trial has no recorded cost yet
