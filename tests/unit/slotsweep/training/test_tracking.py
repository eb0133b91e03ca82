"""Loggers and W&B in tracking.py: offline rule, run kwargs, every logger option, media, stale runs.

W&B runs here are real offline runs written under tmp_path (no network, no API key).
"""

import io
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import wandb
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from slotsweep.runs import experiment
from slotsweep.training import tracking

CONF = Path(__file__).resolve().parents[4] / "conf"
LOGGER_OPTIONS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No API key, no WANDB_MODE, W&B's own files under tmp_path; any open run is finished after."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path
    if wandb.run is not None:
        wandb.run.finish()


@pytest.fixture
def listening_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def test_mode_explicit_and_env(wandb_env: Path, monkeypatch: pytest.MonkeyPatch):
    assert tracking.wandb_mode("disabled") == "disabled"
    with pytest.raises(
        ValueError, match=r"logger.mode=cloud is not one of \['online', 'offline', 'disabled'\]"
    ):
        tracking.wandb_mode("cloud")
    monkeypatch.setenv("WANDB_MODE", "online")  # respected as is, even without a key
    assert tracking.wandb_mode() == "online"


def test_mode_offline_without_api_key(wandb_env: Path, caplog: pytest.LogCaptureFixture):
    assert tracking.wandb_mode() == "offline"
    assert "no API key" in caplog.text and "make wandb-sync" in caplog.text


def test_mode_with_api_key_follows_reachability(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, listening_port: int, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listening_port}")
    assert tracking.wandb_mode() == "online"
    port = _closed_port()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert tracking.wandb_mode(timeout_s=1.0) == "offline"
    assert f"127.0.0.1:{port} unreachable" in caplog.text


def test_netrc_entry_is_an_api_key(wandb_env: Path, monkeypatch: pytest.MonkeyPatch, listening_port: int):
    netloc = f"127.0.0.1:{listening_port}"
    monkeypatch.setenv("WANDB_BASE_URL", f"http://{netloc}")
    (wandb_env / "netrc").write_text("machine other.host login user password abc\n")
    assert tracking.wandb_mode() == "offline"  # an entry for another host is no key for this one
    (wandb_env / "netrc").write_text(f"machine {netloc} login user password {'k' * 40}\n")
    assert tracking.wandb_mode() == "online"


def test_wandb_run_kwargs(compose_train: Callable[..., DictConfig], wandb_env: Path):
    cfg = compose_train("logger=wandb")
    exp_id = experiment.experiment_id(cfg)
    kwargs = tracking.wandb_run_kwargs(cfg, exp_id, wandb_env / "run")
    assert kwargs == {
        "project": "slotsweep",
        "entity": None,
        "name": f"{exp_id}-s0",
        "group": exp_id,
        "id": f"{exp_id}-s0",
        "resume": "allow",
        "job_type": "train",
        "tags": ["shapes"],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dir": str(wandb_env / "run" / "logs"),
        "mode": "offline",
    }
    swept = compose_train("logger=wandb", "seed=3")
    swept.sweep = "lossw"  # what a named sweep sets
    kwargs = tracking.wandb_run_kwargs(swept, exp_id, wandb_env / "run")
    assert (kwargs["id"], kwargs["job_type"], kwargs["tags"]) == (
        f"{exp_id}-s3",
        "sweep-trial",
        ["shapes", "lossw"],
    )
    assert tracking.wandb_run_kwargs(swept, exp_id, wandb_env, job_type="eval")["job_type"] == "eval"


def test_wandb_config_has_no_secrets(compose_train: Callable[..., DictConfig], wandb_env: Path):
    cfg = compose_train("logger=wandb")
    with open_dict(cfg):
        cfg.logger.api_key = "secret-value-1"
        cfg.dataset.hub_token = "secret-value-2"
    config = tracking.wandb_run_kwargs(cfg, "x-00000000", wandb_env)["config"]
    assert "secret-value" not in json.dumps(config)
    assert config["logger"]["project"] == "slotsweep" and config["dataset"]["batch_size"] == 2


def test_tags_name_the_dataset_and_encoder_options_under_hydra(wandb_env: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["logger=wandb", "encoder=dino_vits16"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a job's config, as @hydra.main passes it
    try:
        kwargs = tracking.wandb_run_kwargs(cfg, "shapes-00000000", wandb_env)
    finally:
        HydraConfig.instance().cfg = None
    assert kwargs["tags"] == ["shapes", "dino_vits16"]  # exp_name shapes and dataset shapes: one tag


@pytest.mark.parametrize("option", LOGGER_OPTIONS)
def test_every_logger_option_instantiates(
    compose_train: Callable[..., DictConfig], wandb_env: Path, option: str
):
    cfg = compose_train(f"logger={option}")
    exp_id = experiment.experiment_id(cfg)
    run_dir = wandb_env / "run"
    logger = instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, exp_id, run_dir))
    if option == "none":
        assert logger is False
    elif option == "csv":
        assert isinstance(logger, CSVLogger)
        assert Path(logger.log_dir) == run_dir / "logs" / "version_0"
    elif option == "tensorboard":
        assert isinstance(logger, TensorBoardLogger)
        assert Path(logger.log_dir) == run_dir / "logs" / "version_0"
    else:
        assert option == "wandb", f"conf/logger/{option}.yaml: add its expected logger to this test"
        assert isinstance(logger, WandbLogger) and logger._experiment is None  # the run starts lazily
        assert Path(logger.save_dir) == run_dir / "logs"
        assert logger.version == f"{exp_id}-s0" and logger._wandb_init["group"] == exp_id


def _wandb_logger(compose_train: Callable[..., DictConfig], run_dir: Path, *overrides: str) -> WandbLogger:
    cfg = compose_train("logger=wandb", *overrides)
    return instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, experiment.experiment_id(cfg), run_dir))


def test_log_media_writes_images_and_gifs(compose_train: Callable[..., DictConfig], wandb_env: Path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    clip = rng.integers(0, 255, (5, 16, 24, 3), dtype=np.uint8)
    png, gif = wandb_env / "grid.png", wandb_env / "clip.gif"
    Image.fromarray(image).save(png)
    frames = [Image.fromarray(frame) for frame in clip[:2]]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    run_dir = wandb_env / "run"
    logger = _wandb_logger(compose_train, run_dir)
    assert tracking.log_media(
        logger, {"val/overlay": image, "val/clip": clip, "val/grid": png, "val/video": gif}, step=3
    )
    with pytest.raises(ValueError, match=r"'val/bad' is float32 \(4, 4, 3\); expected uint8 RGB"):
        tracking.log_media(logger, {"val/bad": np.zeros((4, 4, 3), np.float32)}, step=3)
    with pytest.raises(FileNotFoundError, match=r"'val/gone' names .*nothing\.png, which does not exist"):
        tracking.log_media(logger, {"val/gone": wandb_env / "nothing.png"}, step=3)
    tracking.finish_wandb(logger)

    (media,) = (run_dir / "logs" / "wandb").glob("offline-run-*/files/media")
    images = sorted(media.glob("images/**/*.png"))
    videos = sorted(media.glob("videos/**/*.gif"))
    assert [p.name.split("_")[0] for p in images] == ["grid", "overlay"]
    assert [p.name.split("_")[0] for p in videos] == ["clip", "video"]
    with Image.open(videos[0]) as logged:  # the (T, H, W, 3) array, as a GIF of T frames
        assert (logged.n_frames, logged.size) == (5, (24, 16))
    with Image.open(images[1]) as logged:
        assert np.array_equal(np.asarray(logged.convert("RGB")), image)


def test_log_media_is_a_no_op_for_other_loggers(wandb_env: Path):
    csv_logger = CSVLogger(save_dir=wandb_env / "csv", name=None)
    assert not tracking.log_media(csv_logger, {"val/overlay": np.zeros((4, 4, 3), np.uint8)}, step=0)
    assert not tracking.log_media(False, {"val/overlay": np.zeros((4, 4, 3), np.uint8)}, step=0)
    tracking.define_best_summaries(csv_logger)
    tracking.finish_wandb(csv_logger)
    assert not (wandb_env / "csv").exists() and wandb.run is None


def test_log_media_writes_tensorboard_image_summaries(tmp_path: Path):
    """Images at their step; a clip (array or GIF file) as its frames side by side."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    clip = rng.integers(0, 255, (3, 16, 24, 3), dtype=np.uint8)
    gif = tmp_path / "clip.gif"
    frames = [Image.fromarray(frame) for frame in clip]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    logger = TensorBoardLogger(save_dir=tmp_path / "logs", name=None, default_hp_metric=False)
    assert tracking.log_media(logger, {"val/overlay": image, "val/clip": clip}, step=3)
    assert tracking.log_media(logger, {"val/overlay": image, "val/video": gif}, step=5)
    with pytest.raises(ValueError, match=r"'val/bad' is float32"):
        tracking.log_media(logger, {"val/bad": np.zeros((4, 4, 3), np.float32)}, step=3)

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0}).Reload()
    assert sorted(events.Tags()["images"]) == ["val/clip", "val/overlay", "val/video"]
    assert [e.step for e in events.Images("val/overlay")] == [3, 5]
    overlay = events.Images("val/overlay")[0]
    assert (overlay.width, overlay.height) == (24, 16)
    (strip,) = events.Images("val/clip")
    assert (strip.width, strip.height) == (3 * 24, 16)
    decoded = np.asarray(Image.open(io.BytesIO(strip.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, np.concatenate(list(clip), axis=1))  # PNG: lossless
    (video,) = events.Images("val/video")
    assert (video.step, video.width, video.height) == (5, 3 * 24, 16)


def test_a_run_left_open_does_not_swallow_the_next(compose_train: Callable[..., DictConfig], wandb_env: Path):
    """A Hydra multirun runs its jobs in one process: each seed must get its own W&B run."""
    first = _wandb_logger(compose_train, wandb_env / "seed0")
    first.log_metrics({"train/loss": 1.0}, step=0)  # starts the run; finish_wandb is "forgotten"
    second = _wandb_logger(compose_train, wandb_env / "seed1", "seed=1")
    second.log_metrics({"train/loss": 2.0}, step=0)
    assert second.experiment.id.endswith("-s1") and first.experiment.id.endswith("-s0")
    tracking.finish_wandb(second)
    runs = sorted(p.name.rsplit("-", 1)[1] for p in wandb_env.glob("seed*/logs/wandb/offline-run-*"))
    assert runs == ["s0", "s1"]
