"""Run identity in experiment.py: exp_id, the run dir layout, results.json written atomically.

(The logger and W&B parts are in tracking.py, tested in test_tracking.py.)
"""

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from slotsweep.runs import experiment

CONF = Path(__file__).resolve().parents[4] / "conf"

# Overrides that must not change the experiment id: they change where or how a run is logged or
# executed, not what it computes.
NOT_RESULT_RELEVANT = [
    "seed=1",
    "seed=123",
    "paths.runs_dir=/elsewhere/runs",
    "paths.data_dir=/elsewhere/data",
    "logger=none",
    "logger=wandb",
    "dataset.num_workers=3",
    "trainer.log_every_n_steps=7",
    "checkpoint_every_n_steps=3",
    "force=true",
    "+sweep=seeds",  # the sweep a run belongs to (a group that sets `sweep` and hydra keys)
    "run_dir=/somewhere/else",
    "objective=[val/video_mbo]",
    "visualize={n_clips:2,gif:true}",
]

# Overrides that change what a run computes, so they must change the id.
RESULT_RELEVANT = [
    "grouper.n_slots=3",
    "grouper.slot_dim=32",
    "loss.timesim.weight=0.5",
    "loss=dinosaur",
    "optim.base_lr=0.001",
    "trainer.max_steps=5",
    "dataset.batch_size=4",
    "dataset.n_train_clips=9",
    "encoder.block=1",
    "exp_name=other",
    "trainer.devices=2",  # through the total batch, and so the learning rate
    "trainer.num_nodes=2",
    "cache=true",  # cached features are float16
]


def test_exp_id_format_and_stable(compose_train: Callable[..., DictConfig]):
    first = experiment.experiment_id(compose_train())
    second = experiment.experiment_id(compose_train())
    assert re.fullmatch(r"shapes-[0-9a-f]{8}", first), first
    assert first == second


def test_exp_id_starts_with_exp_name(compose_train: Callable[..., DictConfig]):
    assert re.fullmatch(r"my_run-[0-9a-f]{8}", experiment.experiment_id(compose_train("exp_name=my_run")))


@pytest.mark.parametrize("override", NOT_RESULT_RELEVANT)
def test_exp_id_unchanged_by(compose_train: Callable[..., DictConfig], override: str):
    base = experiment.experiment_id(compose_train())
    assert experiment.experiment_id(compose_train(override)) == base


@pytest.mark.parametrize("override", RESULT_RELEVANT)
def test_exp_id_changed_by(compose_train: Callable[..., DictConfig], override: str):
    base = experiment.experiment_id(compose_train())
    assert experiment.experiment_id(compose_train(override)) != base


def test_device_count_enters_only_as_the_total_batch(compose_train: Callable[..., DictConfig]):
    two_devices = compose_train("trainer.devices=2")
    assert experiment.total_batch_size(two_devices) == 2 * two_devices.dataset.batch_size
    same_total = [compose_train("trainer.num_nodes=2"), compose_train("trainer.devices=[0,1]")]
    assert {experiment.experiment_id(cfg) for cfg in same_total} == {experiment.experiment_id(two_devices)}


def test_cache_location_is_not_identity(compose_train: Callable[..., DictConfig], tmp_path: Path):
    cached = experiment.experiment_id(compose_train("cache=true"))
    assert (
        experiment.experiment_id(compose_train("cache=true", f"paths.features_dir={tmp_path / 'f'}"))
        == cached
    )


@pytest.mark.parametrize(
    ("dataset", "location"),
    [
        ("video_folder", "dataset.root=/scratch/videos"),
        ("movi_c", "dataset.data_dir=/scratch/data"),
        ("ytvis", "dataset.convert_command=other help"),
        ("coco", "dataset.data_dir=/scratch/data"),
    ],
)
def test_dataset_declared_locations_are_not_identity(
    compose_train: Callable[..., DictConfig], dataset: str, location: str
):
    """Each dataset YAML declares its location keys (`_non_result_keys_`); nothing lists them here."""
    base = experiment.experiment_id(compose_train(f"dataset={dataset}", debug=False))
    assert experiment.experiment_id(compose_train(f"dataset={dataset}", location, debug=False)) == base
    other = compose_train(f"dataset={dataset}", "dataset.batch_size=3", debug=False)
    assert experiment.experiment_id(other) != base


def test_a_declared_key_of_any_dataset_leaves_exp_id(compose_train: Callable[..., DictConfig]):
    """The mechanism is the declaration, not a list of known datasets: declaring a key drops it."""
    declared = "dataset._non_result_keys_=[data_dir,n_train_clips]"
    base = experiment.experiment_id(compose_train(declared))
    assert experiment.experiment_id(compose_train(declared, "dataset.n_train_clips=9")) == base
    assert "_non_result_keys_" not in experiment.identity(compose_train(declared))["dataset"]


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("dataset._non_result_keys_=[data_dir,nope]", r"names \['nope'\], which dataset has no key"),
        ("dataset._non_result_keys_=data_dir", r"must be a list of the dataset's key names"),
    ],
)
def test_a_bad_declaration_is_refused(
    compose_train: Callable[..., DictConfig], declaration: str, message: str
):
    with pytest.raises(experiment.SlotsweepError, match=message):
        experiment.experiment_id(compose_train(declaration))


def test_encoder_weights_enter_by_content(compose_train: Callable[..., DictConfig], tmp_path: Path):
    """A weights file is hashed: the same bytes at two paths are one experiment, other bytes are
    another, and any file differs from the random init (the bug: all three shared one id)."""
    (tmp_path / "a").mkdir()
    paths = [tmp_path / "a" / "w.pth", tmp_path / "w_copy.pth", tmp_path / "other.pth"]
    paths[0].write_bytes(b"weights" * 1000)
    paths[1].write_bytes(b"weights" * 1000)
    paths[2].write_bytes(b"weights" * 999 + b"Weights")
    ids = [experiment.experiment_id(compose_train(f"encoder.weights={p}")) for p in paths]
    assert ids[0] == ids[1] != ids[2]
    assert experiment.experiment_id(compose_train()) not in ids


def test_hub_weights_enter_by_their_pretrained_identity(compose_train: Callable[..., DictConfig]):
    """Hub weights are named by timm's architecture.tag and source (no download needed)."""
    tree = experiment.identity(compose_train("encoder=dino_vits16"))
    assert tree["encoder"]["weights_identity"].startswith("timm:vit_small_patch16_224.dino:")
    untagged = compose_train("encoder=dino_vits16", "encoder.model_name=vit_small_patch16_224")
    assert experiment.experiment_id(untagged) != experiment.experiment_id(
        compose_train("encoder=dino_vits16")
    )
    assert experiment.identity(compose_train())["encoder"]["weights_identity"] is None  # seeded random init


def test_run_dir_of_another_config_is_refused(compose_train: Callable[..., DictConfig], tmp_path: Path):
    here = f"run_dir={tmp_path}"
    owner = compose_train("decoder=slot_mixer", "grouper.n_slots=5", here)
    experiment.write_identity(experiment.locate(owner), owner.seed)
    same = compose_train("decoder=slot_mixer", "grouper.n_slots=5", "logger=none", here)
    experiment.locate(same)  # no raise: the same experiment
    other = compose_train("decoder=mlp", "grouper.n_slots=5", "seed=3", here)
    with pytest.raises(experiment.SlotsweepError) as refused:
        experiment.locate(other)
    message = str(refused.value)
    assert "decoder: SlotMixerDecoder -> MLPDecoder" in message and "seed: 0 -> 3" in message
    assert "force=true" in message and "grouper" not in message
    experiment.locate(compose_train("decoder=mlp", "force=true", here))  # force sets it aside later


def test_exp_id_independent_of_key_order(compose_train: Callable[..., DictConfig]):
    cfg = compose_train()
    shuffled = DictConfig({key: cfg[key] for key in reversed(list(cfg.keys()))})
    assert experiment.experiment_id(shuffled) == experiment.experiment_id(cfg)


def test_run_dir_layout(compose_train: Callable[..., DictConfig], tmp_path: Path):
    cfg = compose_train("seed=0")
    exp_id = experiment.experiment_id(cfg)
    assert experiment.run_dir(cfg, exp_id) == Path(cfg.paths.runs_dir) / exp_id / "seed0"
    cfg1 = compose_train("seed=1")
    assert experiment.experiment_id(cfg1) == exp_id  # seeds of one experiment share its directory...
    assert (
        experiment.run_dir(cfg1, exp_id) == Path(cfg.paths.runs_dir) / exp_id / "seed1"
    )  # ...not a seed dir


def test_run_dir_explicit(compose_train: Callable[..., DictConfig], tmp_path: Path):
    cfg = compose_train(f"run_dir={tmp_path / 'mine'}")
    assert experiment.run_dir(cfg, experiment.experiment_id(cfg)) == tmp_path / "mine"


def test_runs_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SLOTSWEEP_RUNS_DIR", str(tmp_path / "env-runs"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["seed=2"])
    exp_id = experiment.experiment_id(cfg)
    assert experiment.run_dir(cfg, exp_id) == tmp_path / "env-runs" / exp_id / "seed2"
    monkeypatch.setenv("SLOTSWEEP_RUNS_DIR", str(tmp_path / "other-runs"))
    assert experiment.experiment_id(cfg) == exp_id  # where runs live is not part of the identity


def _results(**extra) -> dict:
    return {
        "exp_id": "shapes-0123abcd",
        "exp_name": "shapes",
        "seed": 0,
        "status": "completed",
        "step": 4,
        "max_steps": 4,
        "wall_time_s": 1.5,
        "metrics": {"val/video_fg_ari": 0.5, "val/video_mbo": 0.25},
        "best_metrics": {"val/video_fg_ari": 0.5},
        "error": None,
        "config": {"grouper": {"n_slots": 7}},
        "run_dir": "/runs/shapes-0123abcd/seed0",
        **extra,
    }


def test_results_roundtrip(tmp_path: Path):
    assert experiment.read_results(tmp_path) is None
    path = experiment.write_results(tmp_path, _results())
    assert path == tmp_path / experiment.RESULTS_FILE
    assert experiment.read_results(tmp_path) == _results()
    experiment.write_results(tmp_path, _results(status="failed", error="boom"))
    assert experiment.read_results(tmp_path)["status"] == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [experiment.RESULTS_FILE]  # no temporary left


def test_results_failed_write_keeps_previous_file(tmp_path: Path):
    experiment.write_results(tmp_path, _results())
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular"):
        experiment.write_results(tmp_path, _results(metrics=circular))
    assert experiment.read_results(tmp_path) == _results()
    assert sorted(p.name for p in tmp_path.iterdir()) == [experiment.RESULTS_FILE]


def test_results_reader_never_sees_half_a_file(tmp_path: Path):
    """A reader polling while results.json is rewritten always parses a whole file."""
    big = {f"val/metric{i}": float(i) for i in range(20_000)}  # ~0.6 MB: a plain write would tear
    versions = [_results(step=step, metrics=big) for step in range(30)]
    experiment.write_results(tmp_path, versions[0])
    done = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(json.loads((tmp_path / experiment.RESULTS_FILE).read_text())["step"])
            except json.JSONDecodeError as error:
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for results in versions[1:]:
            experiment.write_results(tmp_path, results)
    finally:
        done.set()
        reader.join()
    assert not errors, f"reader saw a partial results.json: {errors[0]}"
    assert seen and seen == sorted(seen)
    assert experiment.read_results(tmp_path)["step"] == 29
