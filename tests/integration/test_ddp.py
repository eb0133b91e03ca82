"""trainer=ddp_cpu: two processes (gloo) train one run; only rank 0 writes its files, and the final
validation (2 processes) scores every clip once, as src/eval.py (1 process) scores the checkpoint.

One 2-process run per dataset, shared by the tests of this module (each costs a DDP start-up).
"""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from tests.integration.conftest import CLI

from real_formats import write_movi_shards

DDP_CPU = [  # trainer=debug's shrinking on the ddp_cpu preset, whole validation sets
    "trainer=ddp_cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "checkpoint_every_n_steps=2",
    "dataset.batch_size=2",
    "dataset.val_batch_size=2",
    "dataset.num_workers=0",
]
# 5 clips: rank 0 scores clips 0, 2, 4 in two batches, rank 1 clips 1, 3 in one; a padding sampler
# would score 6 (clip 0 twice), and uneven batch counts would hang a per-batch sync.
N_SHAPES_VAL = 5
SHAPES = ["dataset.n_train_clips=8", f"dataset.n_val_clips={N_SHAPES_VAL}", "dataset.n_frames=4"]
SHAPES += ["dataset.train_clip_frames=3"]
# 3 MOVi videos in one validation shard: rank 1 gets no shard at all, and must not hang.
N_MOVI_VAL = 3
MOVI = [
    "dataset=movi_c",
    "encoder.img_size=32",
    "dataset.mask_size=16",
    "dataset.train_shards='movi_c/movi_c-train-{000000..000001}.tar'",
    "dataset.val_shards='movi_c/movi_c-validation-000000.tar'",
    "dataset.shuffle_size=4",
]


@dataclasses.dataclass(frozen=True)
class DdpRun:
    cli: CLI
    output: str
    run_dir: Path
    results: dict
    wandb_home: Path  # WANDB_DIR and W&B's other dirs (empty for a run without W&B)


def _train(cli: CLI, *args: str, wandb_home: Path) -> DdpRun:
    wandb_dirs = {f"WANDB_{name}": str(wandb_home) for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR")}
    env = cli.env | wandb_dirs | {"WANDB_MODE": "offline"}
    result = dataclasses.replace(cli, train_args=[]).run("train.py", *DDP_CPU, *args, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    results_files = list(cli.runs_dir.glob("**/results.json"))
    assert len(results_files) == 1, results_files  # one writer
    results = json.loads(results_files[0].read_text())
    return DdpRun(cli, output, results_files[0].parent, results, wandb_home)


def _evaluate(run: DdpRun, *args: str) -> dict[str, float]:
    """The run's last checkpoint scored by src/eval.py in one process."""
    ckpt = run.run_dir / "checkpoints" / "last.ckpt"
    result = run.cli.run("eval.py", f"ckpt={ckpt}", "accelerator=cpu", *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (record,) = (run.run_dir / "eval").glob("last-*.json")
    return json.loads(record.read_text())["metrics"]


def _assert_same_metrics(two: dict[str, float], one: dict[str, float]) -> None:
    assert set(two) == set(one) and "val/video_fg_ari" in two and "val/loss" in two
    for key, value in two.items():
        assert math.isclose(value, one[key], rel_tol=1e-5, abs_tol=1e-6), (key, value, one[key])


@pytest.fixture(scope="module")
def shapes_run(module_cli: CLI, tmp_path_factory: pytest.TempPathFactory) -> DdpRun:
    """A 2-process shapes run logged to an offline W&B run."""
    return _train(module_cli, *SHAPES, "logger=wandb", wandb_home=tmp_path_factory.mktemp("wandb"))


@pytest.fixture(scope="module")
def movi_run(tmp_path_factory: pytest.TempPathFactory) -> DdpRun:
    """A 2-process run on reference-format MOVi shards."""
    root = tmp_path_factory.mktemp("shards")
    write_movi_shards(root, "movi_c", n_train=4, n_val=N_MOVI_VAL, per_shard=N_MOVI_VAL, n_frames=8, size=24)
    cli = CLI(runs_dir=tmp_path_factory.mktemp("runs"), data_dir=root, train_args=[])
    return _train(cli, *MOVI, "logger=csv", wandb_home=tmp_path_factory.mktemp("wandb"))


def test_two_processes_write_one_run(shapes_run: DdpRun) -> None:
    results = shapes_run.results
    assert results["status"] == "completed" and results["step"] == 2
    assert results["config"]["trainer"]["devices"] == 2
    assert (shapes_run.run_dir / "config.yaml").is_file()
    assert shapes_run.output.count("results: ") == 1  # rank 1 says nothing of its own
    assert "sync_dist=True" not in shapes_run.output  # validation values are reduced across ranks
    offline = [
        *shapes_run.run_dir.glob("logs/wandb/offline-run-*"),
        *shapes_run.wandb_home.rglob("offline-run-*"),
    ]
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb")), offline  # rank 1 logs nothing


# On MOVi shards in make test-all only (CI time): the shard reader's DDP split, on top of shapes_run
@pytest.mark.parametrize("run", ["shapes_run", pytest.param("movi_run", marks=pytest.mark.heavy)])
def test_the_final_validation_scores_each_clip_once_as_one_process_does(run: str, request) -> None:
    ddp = request.getfixturevalue(run)
    n_clips = N_SHAPES_VAL if run == "shapes_run" else N_MOVI_VAL
    two = ddp.results["metrics"]
    assert two["val/n_clips"] == n_clips  # no clip padded in twice, none left out
    one = _evaluate(ddp, "dataset.val_batch_size=3")  # another batching, too
    assert one["val/n_clips"] == n_clips
    _assert_same_metrics(two, one)
