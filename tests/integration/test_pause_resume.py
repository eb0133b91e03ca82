"""A run paused at a step and resumed later equals the run trained without a pause, bit for bit."""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.runs.trial_files import read_reports
from slotsweep.training import task

# 8 clips in batches of 2: 4 steps an epoch. The pause at 6 falls inside the second epoch and
# between two validations (every 4 steps), so the resume has to restore the data stream mid-epoch
# and the pause's own validation must not shift the training draws.
STEPS = ["trainer.max_steps=10", "trainer.val_check_interval=4", "checkpoint_every_n_steps=4"]


def _train(compose: Callable[..., DictConfig], runs_dir: Path, *overrides: str) -> Path:
    cfg = compose(*STEPS, *overrides)
    with open_dict(cfg):
        cfg.paths.runs_dir = str(runs_dir)
    task.run(cfg)
    return experiment.locate(cfg)[1]


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=False)


def test_paused_then_promoted_run_equals_the_uninterrupted_run(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    whole = _train(compose_train, tmp_path / "whole")
    paused = _train(compose_train, tmp_path / "cut", "pause_at_step=6")
    results = json.loads((paused / "results.json").read_text())
    assert results["status"] == "paused" and results["step"] == 6
    assert max(read_reports(paused)) == 6  # the pause step is validated: a rung's value
    assert _final(paused)["global_step"] == 6
    again = _train(compose_train, tmp_path / "cut", "pause_at_step=6")  # a promotion's twin job
    assert again == paused and json.loads((paused / "results.json").read_text()) == results

    resumed = _train(compose_train, tmp_path / "cut", "pause_at_step=null")
    assert resumed == paused  # pause_at_step is not part of the experiment id
    results = json.loads((resumed / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 10
    assert results["segments"] == [
        {"from_step": 0, "to_step": 6, "started": "new", "ended": "paused"},
        {"from_step": 6, "to_step": 10, "started": "promoted", "ended": "completed"},
    ]
    assert results["steps"] == 10  # trained once each, not counted again on resume
    expected = json.loads((whole / "results.json").read_text())
    assert results["metrics"] == expected["metrics"]  # equal, not close
    a, b = _final(whole), _final(resumed)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    moments = (a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"])
    assert moments[0].keys() == moments[1].keys()
    for left, right in zip(moments[0].values(), moments[1].values(), strict=True):
        assert all(torch.equal(left[k], right[k]) for k in left)
    # the validations both runs made report the same values (the pause added one at step 6)
    cut_reports = read_reports(resumed)
    assert {s: v for s, v in cut_reports.items() if s != 6} == read_reports(whole)
