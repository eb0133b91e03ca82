"""Bad input and faults through every entry point: exit 2, one `error:` line naming the key or
path, no traceback, and every file that was in the runs and data dirs byte-for-byte unchanged.

Each case is one real subprocess (src/train.py single and -m, eval.py, infer.py, aggregate.py,
convert.py, the Optuna sweeper, the SLURM launcher). The world they run against is made once: a
completed two-step run, a second run dir, damaged files beside them.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from tests.integration.conftest import CLI


@dataclass(frozen=True)
class World:
    """What the cases point at. `completed`: a finished run dir; `bad`: damaged inputs (not in the
    runs or data dirs, so the hash check covers only what the cases must not touch)."""

    cli: "CLI"
    completed: Path
    bad: Path


@pytest.fixture(scope="module")
def world(module_cli: "CLI", tmp_path_factory: pytest.TempPathFactory) -> World:
    cli = module_cli
    trained = cli.run("train.py")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (completed,) = [p.parent for p in cli.runs_dir.glob("*/seed0/results.json")]
    bad = tmp_path_factory.mktemp("bad")
    (bad / "truncated.pth").write_bytes((completed / "checkpoints" / "last.ckpt").read_bytes()[:4000])
    (bad / "not_a_file").write_text("a file where a directory is expected")
    (bad / "empty").mkdir()
    (bad / NO_TORCH / "torch").mkdir(parents=True)  # a torch that cannot be imported
    (bad / NO_TORCH / "torch" / "__init__.py").write_text(f"raise ImportError({TORCH_IMPORTED!r})\n")
    for name, text in [("ytvis_cut", '{"videos": [{"id": 1, "file_na'), ("ytvis_novideos", '{"x": []}')]:
        (bad / name).mkdir()
        (bad / name / "instances.json").write_text(text)
    (bad / "runs_one_unreadable").mkdir()
    shutil.copytree(completed, bad / "runs_one_unreadable" / "good" / "seed0")
    (bad / "runs_one_unreadable" / "cut" / "seed0").mkdir(parents=True)
    (bad / "runs_one_unreadable" / "cut" / "seed0" / "results.json").write_text('{"exp_id": "x", "se')
    return World(cli=cli, completed=completed, bad=bad)


def _hashes(*roots: Path) -> dict[Path, str]:
    return {
        path: hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


NO_TORCH = "no_torch"
TORCH_IMPORTED = "torch was imported before the refusal"

OWN_CONFIG = "train.py, without the tiny-data overrides"  # another dataset has other keys
MULTIRUN = "train.py -m"

# (id, script, args from the world, words the error line must contain). Training cases get the
# two-step overrides first, as a user's own config would come first.
Args = Callable[[World], list[str]]
CASES: list[tuple[str, str, Args, list[str]]] = [
    # --- config values, found before torch is imported -------------------------------------
    ("n_slots=0", "train.py", lambda w: ["grouper.n_slots=0"], ["grouper.n_slots=0"]),
    ("n_slots not a number", "train.py", lambda w: ["grouper.n_slots=abc"], ["grouper.n_slots=abc"]),
    ("negative loss weight", "train.py", lambda w: ["loss.timesim.weight=-1"], ["loss.timesim.weight=-1"]),
    (
        "all loss weights 0",
        "train.py",
        lambda w: ["loss.timesim.weight=0", "loss.featrec.weight=0"],
        ["loss weights are 0"],
    ),
    (
        "offset not shorter than the clip",
        "train.py",
        lambda w: ["loss.timesim.offset=3"],
        ["loss.timesim.offset=3", "train_clip_frames=3"],
    ),
    (
        "missing load_weights",
        "train.py",
        lambda w: ["load_weights=/no/such.ckpt"],
        ["load_weights=/no/such.ckpt"],
    ),
    (
        "missing encoder weights",
        "train.py",
        lambda w: ["encoder.weights=/no/such.safetensors"],
        ["encoder.weights=/no/such.safetensors"],
    ),
    (
        "checkpoint every 0 steps",
        "train.py",
        lambda w: ["checkpoint_every_n_steps=0"],
        ["checkpoint_every_n_steps=0"],
    ),
    ("no objective", "train.py", lambda w: ["objective=[]"], ["objective=[]"]),
    ("pause before the first step", "train.py", lambda w: ["pause_at_step=0"], ["pause_at_step=0"]),
    (
        "a stream entered before its start",
        "train.py",
        lambda w: ["stream_start_step=-2"],
        ["stream_start_step=-2"],
    ),
    (
        "a pool dir that is no pool's",
        "train.py",
        lambda w: [f"pool_dir={w.completed}"],
        ["pool_dir=", "pool_size"],
    ),
    (
        "run_dir of another config",
        "train.py",
        lambda w: [f"run_dir={w.completed}", "decoder=mlp"],
        ["decoder: SlotMixerDecoder -> MLPDecoder", "force=true"],
    ),
    (
        "run_dir of another seed",
        "train.py",
        lambda w: [f"run_dir={w.completed}", "seed=5"],
        ["seed: 0 -> 5", "run_dir="],
    ),
    (
        "runs dir under a file",
        "train.py",
        lambda w: [f"paths.runs_dir={w.bad / 'not_a_file' / 'runs'}"],
        ["not_a_file", "paths.runs_dir"],
    ),
    # --- composition (Hydra) -----------------------------------------------------------------
    ("unknown option", "train.py", lambda w: ["encoder=nope"], ["encoder/nope", "dino_vits8"]),
    ("unknown key", "train.py", lambda w: ["grouper.n_slot=3"], ["grouper.n_slot:", "grouper.n_slots?"]),
    (
        "unknown key, closest",
        "train.py",
        lambda w: ["trainer.max_step=5"],
        ["did you mean trainer.max_steps"],
    ),
    ("value of the wrong type", "train.py", lambda w: ["seed=abc"], ["seed", "abc"]),
    (
        "wrong type in a group",
        "train.py",
        lambda w: ["optim.base_lr=fast"],
        ["optim.base_lr=fast", "a number"],
    ),
    # --- found by a constructor or a library, before the run dir is made ----------------------
    ("negative max_steps", "train.py", lambda w: ["trainer.max_steps=-5"], ["max_steps", "-5"]),
    ("negative lr", "train.py", lambda w: ["optim.base_lr=-1"], ["optim.base_lr=-1"]),
    (
        "warmup after decay",
        "train.py",
        lambda w: ["optim.warmup_steps=10", "optim.decay_steps=5"],
        ["optim.warmup_steps=10", "optim.decay_steps=5"],
    ),
    ("unknown trainer argument", "train.py", lambda w: ["+trainer.max_stepz=3"], ["trainer", "max_stepz"]),
    ("encoder block out of range", "train.py", lambda w: ["encoder.block=99"], ["encoder.block=99"]),
    (
        "unknown timm model",
        "train.py",
        lambda w: ["encoder.model_name=vit_nope"],
        ["encoder.model_name=vit_nope"],
    ),
    (
        "truncated encoder weights",
        "train.py",
        lambda w: [f"encoder.weights={w.bad / 'truncated.pth'}"],
        ["encoder.weights=", "truncated.pth", "cannot be loaded"],
    ),
    (
        "load_weights of another architecture",
        "train.py",
        lambda w: [f"load_weights={w.completed / 'checkpoints' / 'last.ckpt'}", "grouper.slot_dim=16"],
        ["does not fit this model", "last.ckpt"],
    ),
    ("missing dataset", OWN_CONFIG, lambda w: ["dataset=movi_c"], ["movi_c"]),
    # --- faults ------------------------------------------------------------------------------
    (
        "NaN loss at step 1",
        "train.py",
        lambda w: ["optim.base_lr=1e30", "optim.warmup_steps=0", "trainer.gradient_clip_val=null", "seed=9"],
        ["training loss is nan at step 1", "optim.base_lr"],
    ),
    # --- multirun: the sweep itself cannot start ---------------------------------------------
    (
        "bad sweeper storage URL",
        MULTIRUN,
        lambda w: ["+sweep=loss_weights", "hydra.sweeper.storage=nosuchdb://x/y"],
        ["hydra.sweeper.storage"],
    ),
    (
        "asha: first rung past the end",
        MULTIRUN,
        lambda w: [
            "+sweep=loss_weights",
            "hydra/sweeper/pruner=asha",
            "hydra.sweeper.pruner.min_fraction=1.5",
        ],
        ["hydra.sweeper.pruner.min_fraction=1.5", "(0, 1]"],
    ),
    (
        "asha: reduction factor 1",
        MULTIRUN,
        lambda w: [
            "+sweep=loss_weights",
            "hydra/sweeper/pruner=asha",
            "hydra.sweeper.pruner.reduction_factor=1",
        ],
        ["hydra.sweeper.pruner.reduction_factor=1", ">= 2"],
    ),
    (
        "every grid job fails",
        MULTIRUN,
        lambda w: ["grouper.n_slots=0,-1"],
        ["grouper.n_slots="],
    ),
    # --- eval.py, infer.py ---------------------------------------------------------------------
    ("eval: missing ckpt", "eval.py", lambda w: ["ckpt=/no/such.ckpt"], ["ckpt=/no/such.ckpt"]),
    (
        "eval: missing config",
        "eval.py",
        lambda w: [f"ckpt={w.completed / 'checkpoints' / 'last.ckpt'}", "config=/no/config.yaml"],
        ["config=/no/config.yaml"],
    ),
    ("eval: ckpt not given", "eval.py", lambda w: [], ["ckpt"]),
    (
        "eval: truncated ckpt",
        "eval.py",
        lambda w: [f"ckpt={w.bad / 'truncated.pth'}", f"config={w.completed / 'config.yaml'}"],
        ["truncated.pth"],
    ),
    (
        "infer: missing video",
        "infer.py",
        lambda w: [f"ckpt={w.completed / 'checkpoints' / 'last.ckpt'}", "video=/no/such.mp4"],
        ["video=/no/such.mp4"],
    ),
    (
        "infer: missing ckpt",
        "infer.py",
        lambda w: ["ckpt=/no/such.ckpt", f"video={w.bad}"],
        ["ckpt=/no/such.ckpt"],
    ),
    (
        "infer: n_slots=0",
        "infer.py",
        lambda w: [f"ckpt={w.completed / 'checkpoints' / 'last.ckpt'}", f"video={w.bad}", "n_slots=0"],
        ["n_slots=0"],
    ),
    # --- aggregate.py, convert.py ---------------------------------------------------------------
    ("aggregate: no such dir", "aggregate.py", lambda w: ["/no/such/runs"], ["/no/such/runs"]),
    ("aggregate: empty dir", "aggregate.py", lambda w: [str(w.bad / "empty")], ["empty", "results.json"]),
    (
        "aggregate: unknown metric",
        "aggregate.py",
        lambda w: [str(w.cli.runs_dir), "--metrics", "val/nope"],
        ["--metrics val/nope"],
    ),
    (
        "aggregate: unknown --by key",
        "aggregate.py",
        lambda w: [str(w.cli.runs_dir), "--by", "nope.key"],
        ["--by nope.key"],
    ),
    (
        "convert: instances.json cut short",
        "convert.py",
        lambda w: ["ytvis", "--src", str(w.bad / "ytvis_cut"), "--out", str(w.bad / "out")],
        ["ytvis_cut/instances.json", "not valid JSON"],
    ),
    (
        "convert: instances.json without videos",
        "convert.py",
        lambda w: ["ytvis", "--src", str(w.bad / "ytvis_novideos"), "--out", str(w.bad / "out")],
        ["ytvis_novideos/instances.json", "videos"],
    ),
    (
        "convert: missing shards",
        "convert.py",
        lambda w: [
            "videos",
            "--layout",
            "movi",
            "--out",
            str(w.bad / "out"),
            "--val-shards",
            "/no/x-{000000..000001}.tar",
        ],
        ["/no/x-{000000..000001}.tar"],
    ),
]


# Refusals that need no data and no model: they come before torch is imported (these cases run
# with a `torch` that fails on import, and print how long the refusal took).
BEFORE_TORCH = {
    "missing load_weights",
    "missing encoder weights",
    "missing dataset",
    "unknown option",
    "unknown key",
    "unknown key, closest",
    "value of the wrong type",
    "eval: missing ckpt",
    "eval: missing config",
    "infer: missing video",
    "infer: missing ckpt",
}


def _run(world: World, script: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    if script == MULTIRUN:  # Hydra takes -m before the overrides
        return replace(world.cli, train_args=[]).run("train.py", "-m", *world.cli.train_args, *args, env=env)
    if script == OWN_CONFIG:
        return replace(world.cli, train_args=["trainer=debug"]).run("train.py", *args, env=env)
    return world.cli.run(script, *args, env=env)


@pytest.mark.parametrize(("name", "script", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(
    world: World, name: str, script: str, args: Args, expected: list[str]
):
    before = _hashes(world.cli.runs_dir, world.cli.data_dir)
    env = None
    if name in BEFORE_TORCH:
        path = os.pathsep.join(p for p in (str(world.bad / NO_TORCH), os.environ.get("PYTHONPATH")) if p)
        env = {**world.cli.env, "PYTHONPATH": path}
    start = time.perf_counter()
    result = _run(world, script, args(world), env)
    print(f"{name}: refused in {time.perf_counter() - start:.1f} s")  # the test log's timing, not a limit
    assert TORCH_IMPORTED not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert len(errors) == 1, result.stderr[-3000:]
    assert all(word in errors[0] for word in expected), errors[0]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    after = _hashes(world.cli.runs_dir, world.cli.data_dir)
    assert {p: h for p, h in after.items() if p in before} == before  # pre-existing files as they were


def test_no_slurm_is_one_line(world: World):
    """hydra/launcher=slurm_gpu on a machine without SLURM (srun not on PATH): submitit's error."""
    before = _hashes(world.cli.runs_dir, world.cli.data_dir)
    env = {**world.cli.env, "PATH": str(world.bad / "empty")}
    multirun = replace(world.cli, train_args=[])
    result = multirun.run(
        "train.py", "-m", *world.cli.train_args, "hydra/launcher=slurm_gpu", "seed=0,1", env=env
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "hydra/launcher" in errors[0] and "srun" in errors[0]
    assert "Traceback" not in result.stderr
    assert {p: h for p, h in _hashes(world.cli.runs_dir, world.cli.data_dir).items() if p in before} == before


def test_aggregate_skips_an_unreadable_results_file(world: World):
    """One damaged results.json is reported and skipped; the other runs are aggregated."""
    source = world.bad / "runs_one_unreadable"
    result = world.cli.run("aggregate.py", str(source), "--out", str(world.bad / "aggregated"))
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1 and "cut/seed0/results.json" in warnings[0], result.stderr
    exp_id = json.loads((world.completed / "results.json").read_text())["exp_id"]
    assert exp_id in result.stdout  # the readable run is in the table


def test_debug_shows_the_traceback(world: World):
    """SLOTSWEEP_DEBUG=1: the developer gets the traceback of the same bad input."""
    env = {**world.cli.env, "SLOTSWEEP_DEBUG": "1"}
    result = world.cli.run("train.py", "optim.base_lr=-1", env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "optim.base_lr=-1 must be > 0" in result.stderr
