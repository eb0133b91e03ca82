"""docs/extending.md followed from tests/ alone: parts and YAMLs outside src/, trained by src/train.py.

tests/integration/extension/my_parts.py holds a new grouper, loss and datamodule; their YAMLs are in
tests/integration/extension/conf/, put on Hydra's search path with `hydra.searchpath`. The same
datamodule (it has masks in train batches) trains the box-conditioned slot initializer.
"""

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
EXTENSION = Path(__file__).resolve().parent / "extension"


def train(cli, *overrides: str) -> dict:
    """src/train.py with the extension folder importable and its conf/ on Hydra's search path."""
    env = {**cli.env, "PYTHONPATH": os.pathsep.join([str(EXTENSION), cli.env.get("PYTHONPATH", "")])}
    command = cli.command("train.py", f"hydra.searchpath=[file://{EXTENSION / 'conf'}]", *overrides)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = cli.runs_dir.glob("*/seed0/results.json")
    return json.loads(path.read_text())


def test_new_grouper_loss_and_datamodule_train(cli):
    results = train(cli, "grouper=soft_kmeans", "loss=featrec_entropy", "dataset=blobs", "logger=csv")
    assert results["status"] == "completed" and results["step"] == 4
    config = results["config"]
    assert config["grouper"]["_target_"] == "my_parts.SoftKMeansGrouper"
    assert config["dataset"]["_target_"] == "my_parts.BlobsDataModule"
    assert 0 <= results["metrics"]["val/video_fg_ari"] <= 1
    with (Path(results["run_dir"]) / "logs" / "version_0" / "metrics.csv").open() as f:
        entropy = [float(row["train/entropy"]) for row in csv.DictReader(f) if row.get("train/entropy")]
    assert len(entropy) == 4 and all(math.isfinite(v) and v > 0 for v in entropy)  # logged each step
    state = torch.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert "model.grouper.step.weight" in state["state_dict"]  # the new grouper's own weights
    assert state["state_dict"]["model.decoder.output_transform.weight"].shape[0] == 192  # featrec only


def test_box_conditioned_initializer_trains(cli):
    results = train(cli, "+grouper/initializer=mask_boxes", "dataset=blobs")
    assert results["status"] == "completed" and results["step"] == 4
    assert 0 <= results["metrics"]["val/video_fg_ari"] <= 1
    state = torch.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert "model.grouper.initializer.encode_box.0.weight" in state["state_dict"]
