"""docs/extending.md, run: its recipes come out of the page into a project outside src/.

Every fenced block of the page whose first line is a path comment (`# my_parts/losses.py`) is
written to that path in a tmp project: a package `my_parts/` on PYTHONPATH and a `conf/` folder on
Hydra's search path. One sweep of the page's own sweep recipe (one trial, one seed) trains every
recipe together through src/train.py. Each mistake the page lists (its `error:` lines, in page
order) is made in a copy of the project and refused with exactly that line: in-process through
the build the CLI uses, and the first one through src/train.py itself (exit 2, nothing written).
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from slotsweep.errors import SlotsweepError
from slotsweep.training.task import build_task

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "extending.md"
# The recipes together: one config that uses each of them.
RECIPES = [
    "grouper=soft_kmeans",
    "+grouper/initializer=embedding",
    "decoder=linear_broadcast",
    "loss=featrec_entropy",
    "dataset=blobs",
    "+metrics=used_slots",
]


def page_blocks() -> list[str]:
    """The text of every fenced code block of the page."""
    return re.findall(r"^```[a-z]*\n(.*?)^```$", DOC.read_text(), flags=re.M | re.S)


def recipe_files() -> dict[str, str]:
    """{path: text} of the blocks that open with a path comment (after a `# @package` line)."""
    files = {}
    for block in page_blocks():
        lines = block.splitlines()
        first = lines[1] if lines[0].startswith("# @package") else lines[0]
        match = re.fullmatch(r"# ((?:my_parts|conf)/[\w/]+\.(?:py|yaml))", first)
        if match:
            files[match.group(1)] = block
    return files


def promised_lines() -> list[str]:
    """The page's `error:` lines, in page order."""
    return [line for block in page_blocks() for line in block.splitlines() if line.startswith("error: ")]


def without_method(source: str, name: str) -> str:
    """The source with method `name` (a 4-space indented def, to the next def or the class's end) cut."""
    cut = re.sub(rf"\n    def {name}\(.*?(?=\n    def |\n    @|\n\n\n|\Z)", "", source, count=1, flags=re.S)
    assert cut != source, name
    return cut


def without_line(source: str, line: str) -> str:
    assert f"{line}\n" in source, line
    return source.replace(f"{line}\n", "", 1)


def replaced(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


# Each mistake of the page, in its order: the file it is made in and how.
MISTAKES: list[tuple[str, Callable[[str], str]]] = [
    (
        "my_parts/losses.py",
        lambda s: replaced(s, "class MaskEntropyLoss(nn.Module):", "class MaskEntropyLoss:"),
    ),
    ("my_parts/losses.py", lambda s: without_method(s, "check_clip")),
    ("my_parts/losses.py", lambda s: without_line(s, "        self.weight = weight")),
    (
        "my_parts/grouper.py",
        lambda s: replaced(s, "class SoftKMeansGrouper(nn.Module):", "class SoftKMeansGrouper:"),
    ),
    ("my_parts/grouper.py", lambda s: without_method(s, "group")),
    ("my_parts/grouper.py", lambda s: without_line(s, "        self.slot_dim = slot_dim")),
    (
        "my_parts/initializer.py",
        lambda s: replaced(s, "class EmbeddingInit(nn.Module):", "class EmbeddingInit:"),
    ),
    ("my_parts/initializer.py", lambda s: without_method(s, "forward")),
    ("my_parts/initializer.py", lambda s: without_line(s, "        self.n_slots = check_n_slots(n_slots)")),
    (
        "my_parts/decoder.py",
        lambda s: replaced(s, "class LinearBroadcastDecoder(nn.Module):", "class LinearBroadcastDecoder:"),
    ),
    ("my_parts/decoder.py", lambda s: without_method(s, "forward")),
    (
        "my_parts/data.py",
        lambda s: replaced(s, "class BlobsDataModule(L.LightningDataModule):", "class BlobsDataModule:"),
    ),
    ("my_parts/data.py", lambda s: without_method(s, "val_dataloader")),
    ("my_parts/data.py", lambda s: without_line(s, "        self.mask_size = frame_size")),
    (
        "my_parts/metrics.py",
        lambda s: replaced(s, "class UsedSlots(Metric):", "class UsedSlots(torch.nn.Module):"),
    ),
    ("my_parts/metrics.py", lambda s: without_method(s, "compute")),
]


def write_project(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def mistaken_project(root: Path, k: int) -> Path:
    path, make = MISTAKES[k]
    files = recipe_files()
    return write_project(root, {**files, path: make(files[path])})


def train_command(cli, project: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """src/train.py with `project` importable and its conf/ on Hydra's search path (and this
    checkout's library: a sweep's jobs import it too)."""
    paths = [str(project), str(REPO / "src"), cli.env.get("PYTHONPATH", "")]
    env = {**cli.env, "PYTHONPATH": os.pathsep.join(paths)}
    searchpath = f"hydra.searchpath=[file://{project / 'conf'}]"
    return [sys.executable, str(REPO / "src" / "train.py"), *args, *cli.train_args, searchpath], env


def test_the_page_lists_one_line_per_mistake_and_has_every_recipe():
    assert len(promised_lines()) == len(MISTAKES)
    kinds = {path.split("/")[1] for path in recipe_files() if path.startswith("conf/")}
    assert kinds == {"loss", "grouper", "decoder", "dataset", "metrics", "sweep"}  # + the initializer
    assert "conf/grouper/initializer/embedding.yaml" in recipe_files()


def test_every_recipe_trains_together_in_the_pages_sweep(cli, tmp_path: Path):
    project = write_project(tmp_path / "my_project", recipe_files())
    command, env = train_command(
        cli,
        project,
        "-m",  # first: Hydra's flags precede the overrides
        "+sweep=my_parts",
        *RECIPES,
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.seeds=[0]",
        "hydra/launcher=local",
        "logger=csv",
    )
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = cli.runs_dir.glob("*/seed0/results.json")
    results = json.loads(path.read_text())
    assert (
        results["status"] == "completed" and results["step"] == 4 and results["config"]["sweep"] == "my_parts"
    )
    assert results["config"]["grouper"]["temperature"] in (0.05, 0.1, 0.2)  # a value of the search space
    assert results["protocol"]["dataset"] == "blobs"  # the datamodule's declared facts
    assert results["protocol"]["mask_size"] == results["config"]["encoder"]["img_size"]
    metrics = results["metrics"]
    assert -1 <= metrics["val/video_fg_ari"] <= 1  # ARI is chance-adjusted: below 0 is possible
    assert 1 <= metrics["val/used_slots"] <= 5  # the page's metric, of 5 slots
    with (Path(results["run_dir"]) / "logs" / "version_0" / "metrics.csv").open() as f:
        entropy = [float(row["train/entropy"]) for row in csv.DictReader(f) if row.get("train/entropy")]
    assert len(entropy) == 4 and all(math.isfinite(v) and v > 0 for v in entropy)  # the page's loss
    state = torch.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    weights = state["state_dict"]
    assert "model.grouper.step.weight" in weights  # the page's grouper
    assert weights["model.grouper.initializer.embeddings"].shape == (5, 64)  # its initializer
    assert weights["model.decoder.linear.weight"].shape[0] == 192 + 1  # featrec's channels + alpha


@pytest.mark.parametrize("k", range(len(MISTAKES)))
def test_each_mistake_gives_the_line_the_page_promises(
    compose_train: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int
):
    """Through build_task, what src/train.py builds after its config checks: the refusal comes
    before the encoder, and writes nothing."""
    project = mistaken_project(tmp_path / "project", k)
    monkeypatch.syspath_prepend(str(project))
    for name in [m for m in sys.modules if m == "my_parts" or m.startswith("my_parts.")]:
        monkeypatch.delitem(sys.modules, name)
    cfg = compose_train(f"hydra.searchpath=[file://{project / 'conf'}]", *RECIPES)
    with pytest.raises(SlotsweepError) as refused:
        build_task(cfg)
    assert f"error: {refused.value}" == promised_lines()[k]
    assert not Path(cfg.paths.runs_dir).exists()


def test_a_mistake_through_the_cli_is_one_line_exit_2_and_nothing_written(cli, tmp_path: Path):
    project = mistaken_project(tmp_path / "project", 0)  # a loss without its base class
    command, env = train_command(cli, project, *RECIPES)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == promised_lines()[0]
    assert not cli.runs_dir.exists()
