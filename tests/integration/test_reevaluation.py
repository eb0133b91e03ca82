"""Protocol stamps end to end, and src/eval.py runs=<dir> re-scoring a whole runs dir.

Real tiny training runs (2 steps, one validation batch), real checkpoints, real offline W&B.
"""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from test_wandb_offline import offline_env, read_offline_run  # noqa: F401  (offline_env: a fixture)

from slotsweep.results import aggregate as agg
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import scoring, task

CONF = Path(__file__).resolve().parents[2] / "conf"
TWO_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]


def _eval_config(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=["accelerator=cpu", "limit_batches=1", *overrides])


def _eval_files(runs_dir: Path) -> set[Path]:
    return set(runs_dir.rglob("eval/*.json"))


def test_results_eval_json_and_wandb_hold_the_same_protocol(
    compose_train: Callable[..., DictConfig],
    offline_env: Path,  # noqa: F811
):
    cfg = compose_train("logger=wandb", *TWO_STEPS)
    task.run(cfg)
    run_dir = experiment.run_dir(cfg, experiment.experiment_id(cfg))
    stamp = experiment.read_results(run_dir)["protocol"]
    assert stamp["dataset"] == "shapes" and stamp["n_slots"] == cfg.grouper.n_slots
    assert stamp["split"] == "validation (first 1 batches of 2)"  # limit_val_batches=1 is stamped

    (record,) = scoring.evaluate(_eval_config(f"ckpt={run_dir / LAST_CHECKPOINT}"))
    (path,) = _eval_files(run_dir)
    assert json.loads(path.read_text()) == record and record["protocol"] == stamp

    logged = read_offline_run(run_dir)
    assert logged["config"]["protocol"] == stamp
    assert logged["summary"]["protocol"] == stamp


def test_reevaluating_a_runs_dir_scores_each_run_once_per_protocol(
    compose_train: Callable[..., DictConfig], capsys: pytest.CaptureFixture
):
    for n_slots in (3, 4):  # 2 configs x 2 seeds
        for seed in (0, 1):
            task.run(compose_train(f"grouper.n_slots={n_slots}", f"seed={seed}", *TWO_STEPS))
    runs_dir = Path(compose_train().paths.runs_dir)

    assert len(scoring.evaluate(_eval_config(f"runs={runs_dir}"))) == 4
    decoder = _eval_files(runs_dir)
    assert len(decoder) == 4 and len({p.parent.parent for p in decoder}) == 4  # one per run
    assert scoring.evaluate(_eval_config(f"runs={runs_dir}")) == []  # already scored
    assert "re-scored 0 checkpoint(s) of 4 completed run(s)" in capsys.readouterr().out
    grouping = scoring.evaluate(_eval_config(f"runs={runs_dir}", "masks=grouping"))
    assert len(grouping) == 4 and len(_eval_files(runs_dir)) == 8
    assert {r["protocol"]["masks"] for r in grouping} == {"grouping"}

    capsys.readouterr()
    assert agg.main([str(runs_dir), "--metrics", "val/video_fg_ari"]) == 0
    printed = capsys.readouterr().out
    # the protocol of the training validations comes first, each run scored with its own slots
    assert printed.startswith(
        "protocol: shapes validation (first 1 batches of 2), whole videos, 64 px masks, decoder masks, "
    )
    assert ", as-trained slots, metric v" in printed.splitlines()[0]
    header = next(line for line in printed.splitlines() if line.startswith("| group"))
    # the training validation and the two re-scorings stay in separate columns
    assert "val/video_fg_ari (mean ± std)" in header
    assert "val/video_fg_ari [re-scored] (mean ± std)" in header
    assert "val/video_fg_ari [masks=grouping] (mean ± std)" in header
    assert "[masks=grouping]: shapes validation (first 1 batches of 2), whole videos" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| shapes-")]
    assert len(rows) == 2 and all(line.count("n/a") == 0 for line in rows)  # 2 seeds in each cell
