"""src/eval.py on checkpoints of short training runs: eval json, n_slots override, a checkpoint
copied away from its run dir, wrong architecture."""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from slotsweep.evaluation.protocol import EvalProtocol
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import scoring, task

CONF = Path(__file__).resolve().parents[2] / "conf"
CONTRACT_METRICS = tuple(f"val/{k}_{m}" for k in ("video", "image") for m in ("fg_ari", "mbo", "miou"))


def _train(compose_train: Callable[..., DictConfig], *overrides: str) -> Path:
    """A finished tiny run; returns its run dir."""
    cfg = compose_train(*overrides)
    task.run(cfg)
    return experiment.run_dir(cfg, experiment.experiment_id(cfg))


def test_eval_checkpoint_and_n_slots(compose_train: Callable[..., DictConfig], cli, tmp_path: Path):
    run_dir = _train(compose_train)
    ckpt = run_dir / LAST_CHECKPOINT
    trained = json.loads((run_dir / "results.json").read_text())["metrics"]

    results = json.loads((run_dir / "results.json").read_text())
    trained_protocol, limit = results["protocol"], results["config"]["trainer"]["limit_val_batches"]
    result = cli.run("eval.py", f"ckpt={ckpt}", "accelerator=cpu", f"limit_batches={limit}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (first,) = (run_dir / "eval").glob("last-*.json")
    evaluated = json.loads(first.read_text())
    # what the user came for, printed: the table of what was written, its protocol and its file
    for key, value in evaluated["metrics"].items():
        assert re.search(rf"^\| {key} \| {value:.4f} \|$", result.stdout, re.MULTILINE), result.stdout
    protocol = EvalProtocol.from_dict(evaluated["protocol"]).describe()
    assert f"n_slots=as trained: {ckpt} (eval_seed=0): {protocol}; wrote {first}" in result.stdout
    assert evaluated["ckpt"] == str(ckpt) and evaluated["n_slots"] is None and evaluated["final"]
    assert evaluated["protocol"] == trained_protocol  # same data, masks and slots as training's
    for key in CONTRACT_METRICS:
        assert 0 <= evaluated["metrics"][key] <= 1
        # same weights, data and slot-init seed as the run's final validation: the same numbers
        assert evaluated["metrics"][key] == pytest.approx(trained[key], abs=1e-5), key

    result = cli.run("eval.py", f"ckpt={ckpt}", "accelerator=cpu", "n_slots=3", f"limit_batches={limit}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (second,) = set((run_dir / "eval").glob("last-*.json")) - {first}
    assert "| value | n_slots=3 |" in result.stdout
    three = json.loads(second.read_text())
    assert three["n_slots"] == 3 and three["protocol"]["n_slots"] == 3
    # an adjusted Rand index can be below 0 (worse than chance, as 3 slots on shapes can be)
    assert all(-1 <= three["metrics"][key] <= 1 for key in CONTRACT_METRICS)
    assert three["metrics"] != evaluated["metrics"]  # 3 slots instead of 7: other masks
    assert json.loads(first.read_text()) == evaluated  # not overwritten

    # the checkpoint carries its config: copied where no config.yaml is, ckpt= alone is enough
    moved = tmp_path / "elsewhere" / "weights" / "copy.ckpt"
    moved.parent.mkdir(parents=True)
    shutil.copy(ckpt, moved)
    result = cli.run("eval.py", f"ckpt={moved}", "accelerator=cpu", f"limit_batches={limit}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (copy,) = (tmp_path / "elsewhere" / "eval").glob("copy-*.json")
    copied = json.loads(copy.read_text())
    assert copied["metrics"] == evaluated["metrics"] and copied["protocol"] == trained_protocol
    assert not copied["final"]  # not a run's last.ckpt: aggregation leaves it out


def test_eval_other_architecture_fails_in_one_line(compose_train: Callable[..., DictConfig], cli):
    narrow = _train(compose_train, "grouper.slot_dim=32")
    default = _train(compose_train)  # slot_dim 64
    assert narrow.parent != default.parent

    ckpt = narrow / LAST_CHECKPOINT
    result = cli.run("eval.py", f"ckpt={ckpt}", f"config={default / 'config.yaml'}", "accelerator=cpu")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) <= 3 and "Traceback" not in result.stderr, result.stderr
    message = lines[-1]
    assert message.startswith(f"error: checkpoint {ckpt} does not fit this model's architecture"), message
    # names the mismatched parameters, with both shapes
    assert re.search(
        r"[1-9]\d* with other shapes \[[\w.]+: checkpoint \([\d, ]+\) vs model \([\d, ]+\)", message
    )
    assert not (narrow / "eval").exists() and not (default / "eval").exists()


def test_eval_missing_checkpoint(cli, tmp_path: Path):
    missing = tmp_path / "nope.ckpt"
    result = cli.run("eval.py", f"ckpt={missing}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: ckpt={missing} does not exist")


def test_metrics_do_not_depend_on_how_the_set_is_batched(compose_train: Callable[..., DictConfig]):
    """Each clip's initial slots come from its own index, so batching (and so a DDP split) changes nothing."""
    run_dir = _train(compose_train)
    ckpt = run_dir / LAST_CHECKPOINT
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={ckpt}", "accelerator=cpu"])
    by_batch_size = {}
    for batch_size in (1, 4):  # 4: the whole tiny validation set in one batch
        cfg.overrides = [f"dataset.val_batch_size={batch_size}"]
        by_batch_size[batch_size] = scoring.evaluate(cfg)[0]["metrics"]
    for key in CONTRACT_METRICS:
        assert by_batch_size[1][key] == pytest.approx(by_batch_size[4][key], abs=1e-5), key
