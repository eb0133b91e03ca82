"""A checkpoint whose unpickling would run code is refused everywhere slotsweep reads one, and the
code never runs: resume, load_weights=, encoder.weights=, eval and infer."""

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from slotsweep.build import build_model
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.inference import run_inference
from slotsweep.models.encoder import ViTEncoder
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import scoring, task

CONF = Path(__file__).resolve().parents[2] / "conf"
REFUSED = "needs arbitrary unpickling, which can run code from the file"


def _compose(name: str, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _assert_refused(error: pytest.ExceptionInfo, key: str, path: Path, marker: Path) -> None:
    assert f"{key}={path} {REFUSED}" in str(error.value) and "allow_pickle=true" in str(error.value)
    assert not marker.exists(), "the payload ran"


def test_resume_refuses(compose_train: Callable[..., DictConfig], pickle_bomb) -> None:
    cfg = compose_train()
    last = experiment.run_dir(cfg, experiment.experiment_id(cfg)) / LAST_CHECKPOINT
    last.parent.mkdir(parents=True)
    last.write_bytes(pickle_bomb.path.read_bytes())
    with pytest.raises(SlotsweepError) as error:
        task.run(cfg)
    _assert_refused(error, "checkpoint", last, pickle_bomb.marker)
    assert experiment.read_results(last.parent.parent)["status"] == "failed"


def test_load_weights_and_encoder_weights_refuse(compose_train, pickle_bomb) -> None:
    with pytest.raises(SlotsweepError) as error:
        build_model(compose_train(f"load_weights={pickle_bomb.path}"))
    _assert_refused(error, "load_weights", pickle_bomb.path, pickle_bomb.marker)
    with pytest.raises(SlotsweepError) as error:
        ViTEncoder("vit_tiny_patch16_224", img_size=32, weights=str(pickle_bomb.path))
    _assert_refused(error, "encoder.weights", pickle_bomb.path, pickle_bomb.marker)


def test_eval_and_infer_refuse(compose_train, pickle_bomb, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    OmegaConf.save(compose_train(), config)
    with pytest.raises(SlotsweepError) as error:
        scoring.evaluate(_compose("eval", f"ckpt={pickle_bomb.path}", f"config={config}"))
    _assert_refused(error, "ckpt", pickle_bomb.path, pickle_bomb.marker)
    video = tmp_path / "frames"  # never read: the checkpoint is refused first
    with pytest.raises(SlotsweepError) as error:
        run_inference(_compose("infer", f"ckpt={pickle_bomb.path}", f"config={config}", f"video={video}"))
    _assert_refused(error, "ckpt", pickle_bomb.path, pickle_bomb.marker)


def test_cli_says_one_line_and_allow_pickle_opts_in(cli, pickle_bomb, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / LAST_CHECKPOINT).write_bytes(pickle_bomb.path.read_bytes())
    result = cli.run("train.py", f"run_dir={run_dir}", "logger=none")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and REFUSED in errors[0] and "allow_pickle=true" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not pickle_bomb.marker.exists()
