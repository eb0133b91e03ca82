"""Sweeps through Hydra with the local launcher: the Optuna sweeper's loop, and named sweeps.

The sweeper's logic (seeds per trial, resume, failures, grid, multi-objective, storages) runs on a
toy task whose value is a known function of its config, so each trial's value can be checked
exactly; the named sweeps and the seed grid run the real training task on tiny data.
"""

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from tests.integration.conftest import ASHA_TWO_RUNGS

import slotsweep.config  # noqa: F401  (registers the train schema)
from slotsweep.sweeps.local_shares import share
from slotsweep.sweeps.optuna_sweeper import parse_search_space

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
TRAIN_MULTIRUN = [sys.executable, str(REPO / "src" / "train.py"), "-m"]
HANG_GUARD_S = 1800  # only stops a hung sweep from blocking CI; no test asserts a duration

# value = (x - 0.3)^2 + y + seed / 100, plus 1 / pause_at_step when paused (an asha rung: a value
# that improves with training); x < 0 raises; y == 3 returns NaN. With objective=[a, b] the task
# returns (value, -value). It sleeps sleep_s first, and writes when it ran, and the GPUs
# and cores its job slot was given, to times_dir.
TOY_TASK = """
import json
import math
import os
import time
from pathlib import Path

import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="toy")
def main(cfg):
    start = time.time()
    time.sleep(cfg.sleep_s)
    if cfg.times_dir is not None:
        times = {"start": start, "end": time.time(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
        times["pause_at_step"] = cfg.pause_at_step
        times["cpus"] = os.environ.get("SLOTSWEEP_JOB_CPUS")
        (Path(cfg.times_dir) / f"{cfg.x}-{cfg.seed}.json").write_text(json.dumps(times))
        with (Path(cfg.times_dir) / "ran.jsonl").open("a") as ran:  # every job, in the order they end
            ran.write(json.dumps({"x": cfg.x, "seed": cfg.seed, "pause_at_step": cfg.pause_at_step}) + "\\n")
    if cfg.x < 0:
        raise ValueError(f"x={cfg.x} must be >= 0")
    if cfg.y == 3:
        return math.nan
    value = (cfg.x - 0.3) ** 2 + cfg.y + cfg.seed / 100
    value += 0 if cfg.pause_at_step is None else 1 / cfg.pause_at_step
    return value if len(cfg.objective) == 1 else (value, -value)

main()
"""
TOY_CONFIG = f"""
x: 0.5
y: 1
seed: 0
sleep_s: 0
times_dir: null
objective: [value]
pause_at_step: null
trainer:
  max_steps: 8
hydra:
  searchpath: [file://{CONF}]  # slotsweep's hydra/sweeper/optuna and hydra/launcher/local
  job:
    chdir: false
"""


def toy_value(x: float, y: int, seed: int, pause_at_step: int | None = None) -> float:
    return (x - 0.3) ** 2 + y + seed / 100 + (0 if pause_at_step is None else 1 / pause_at_step)


@pytest.fixture
def toy(tmp_path: Path):
    """toy(*overrides, sweep_dir) -> CompletedProcess of an Optuna sweep of the toy task;
    toy(..., log=<file>) starts it in the background instead (output into the file) -> Popen."""
    (tmp_path / "toy.py").write_text(TOY_TASK)
    (tmp_path / "toy.yaml").write_text(TOY_CONFIG)

    def sweep(
        *overrides: str, sweep_dir: Path = tmp_path / "sweep", log: Path | None = None
    ) -> subprocess.CompletedProcess | subprocess.Popen:
        command = [
            sys.executable,
            str(tmp_path / "toy.py"),
            "-m",
            "hydra/sweeper=optuna",
            "hydra/launcher=local",
            f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.direction=minimize",
            "hydra.sweeper.poll_s=0.2",
            *overrides,
        ]
        if log is not None:
            with log.open("w") as out:
                return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        return subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)

    return sweep


def load_study(sweep_dir: Path, name: str = "sweep") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def read_yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def check_ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, (
        f"sweep failed (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )


def test_each_trial_runs_every_seed_and_reports_their_mean(toy, tmp_path: Path):
    args = (
        "x=interval(0, 1)",
        "y=choice(1, 2)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0,1,2]",
        "hydra.sweeper.sampler.seed=0",
    )
    check_ok(toy(*args))

    study = load_study(tmp_path / "sweep")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for trial in study.trials:
        per_seed = [toy_value(trial.params["x"], trial.params["y"], seed) for seed in (0, 1, 2)]
        assert trial.value == pytest.approx(sum(per_seed) / 3)
        assert [trial.user_attrs[f"seed{k}"] for k in (0, 1, 2)] == pytest.approx(per_seed)
        assert trial.user_attrs["std"] == pytest.approx(0.01)  # sample std of +0, +0.01, +0.02
        assert trial.user_attrs["overrides"] == [f"x={trial.params['x']}", f"y={trial.params['y']}"]
    results = read_yaml(tmp_path / "sweep" / "optimization_results.yaml")
    best = min(study.trials, key=lambda t: t.value)
    assert results["best_trial"] == best.number
    assert results["best_params"] == best.params
    assert results["best_value"] == pytest.approx(best.value)
    assert results["n_complete"] == 4 and results["n_failed"] == 0

    again = toy(*args)  # the study is complete: a relaunch launches nothing and reports again

    check_ok(again)
    assert "Launching" not in again.stdout + again.stderr
    assert f"optuna-dashboard sqlite:///{tmp_path / 'sweep' / 'optuna.db'}" in again.stdout + again.stderr
    assert len(load_study(tmp_path / "sweep").trials) == 4


def test_relaunch_adopts_a_trial_left_running_and_ends_with_n_trials(toy, tmp_path: Path):
    args = ("x=interval(0, 1)", "y=choice(1, 2)", "hydra.sweeper.seeds=[0,1]")
    check_ok(toy(*args, "hydra.sweeper.n_trials=2"))
    study = load_study(tmp_path / "sweep")
    # A sweeper killed between asking a trial and submitting its jobs leaves it RUNNING, jobless.
    cut_off = study.ask(
        {
            "x": optuna.distributions.FloatDistribution(0, 1),
            "y": optuna.distributions.CategoricalDistribution([1, 2]),
        }
    )

    run = toy(*args, "hydra.sweeper.n_trials=4")

    check_ok(run)
    trials = load_study(tmp_path / "sweep").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    adopted = trials[cut_off.number]
    assert f"Trial {cut_off.number} was left running by a previous sweeper" in run.stderr + run.stdout
    per_seed = [toy_value(cut_off.params["x"], cut_off.params["y"], seed) for seed in (0, 1)]
    assert adopted.params == cut_off.params and adopted.value == pytest.approx(sum(per_seed) / 2)
    assert [job["seed"] for job in adopted.user_attrs["jobs"]] == [0, 1]


def _kill_when(sweeper: subprocess.Popen, log: Path, sweep_dir: Path, ready: Callable[[optuna.Study], bool]):
    """SIGKILL the sweeper (no clean-up of any kind, like a lost login session) once its study is
    `ready`; returns the study as the killed sweeper left it."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        assert sweeper.poll() is None, f"the sweeper ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never ready:\n{log.read_text()[-3000:]}"
        if (sweep_dir / "optuna.db").is_file():
            try:
                if ready(load_study(sweep_dir)):
                    break
            except (KeyError, sqlalchemy.exc.OperationalError):  # not created yet, or locked
                pass
        time.sleep(0.2)
    sweeper.kill()
    sweeper.wait()
    return load_study(sweep_dir)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    return True


def _relaunch_adopts(
    run: subprocess.CompletedProcess, sweep_dir: Path, left: dict[int, str], what: str
) -> list[str]:
    """The relaunch succeeded, said it adopted each left job ({trial: job id}; `what` after "Trial
    N" names whose jobs they are) and those jobs ran to their result; the ids of all jobs that did."""
    check_ok(run)
    for number, job_id in left.items():
        assert (
            f"Trial {number}{what} was left running by a previous sweeper: adopting job(s) ['{job_id}']"
            in run.stdout + run.stderr
        )
    ran = sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert set(left.values()) <= set(ran)
    return ran


def _enqueued_toy_study(tmp_path: Path, trials: list[tuple[float, float]]) -> tuple[Path, Path]:
    """(sweep dir, times dir): the toy's study with trials (x, sleep_s) enqueued, asked in order."""
    sweep_dir, times_dir = tmp_path / "sweep", tmp_path / "times"
    sweep_dir.mkdir()
    times_dir.mkdir()
    study = optuna.create_study(study_name="sweep", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    for x, sleep_s in trials:
        study.enqueue_trial({"x": x, "sleep_s": sleep_s})
    return sweep_dir, times_dir


def test_sweeper_killed_while_local_jobs_run_adopts_them_by_pid_and_starts_no_twin(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # trial 0 outlives the sweeper's relaunch
    sweep_dir, times_dir = _enqueued_toy_study(tmp_path, [(0.1, 16), (0.2, 5), (0.3, 0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "gpu-a,gpu-b")
    args = (
        "x=interval(0, 1)",
        "sleep_s=choice(0, 5, 16)",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        f"times_dir={times_dir}",
    )
    first = tmp_path / "first.log"
    study = _kill_when(
        toy(*args, log=first), first, sweep_dir, lambda s: sum("jobs" in t.user_attrs for t in s.trials) == 2
    )
    left = {t.number: t.user_attrs["jobs"][0]["job_id"] for t in study.trials if "jobs" in t.user_attrs}
    assert all(_alive(pid) for pid in left.values())  # the killed sweeper's jobs run on

    ran = _relaunch_adopts(toy(*args), sweep_dir, left, "")

    trials = load_study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # exactly n_trials, none lost
    for trial in trials:
        assert trial.value == pytest.approx(toy_value(trial.params["x"], 1, 0))
    assert len(ran) == 3  # one job per trial: the adopted, no twin
    # The relaunched sweeper read the adopted jobs' slots: its new job did not take the GPU of
    # trial 0, which still ran, but the one trial 1 freed.
    times = {x: json.loads((times_dir / f"{x}-0.json").read_text()) for x in (0.1, 0.2, 0.3)}
    assert times[0.3]["start"] < times[0.1]["end"]
    assert [times[x]["gpus"] for x in (0.1, 0.2, 0.3)] == ["gpu-a", "gpu-b", "gpu-b"]


def test_sweeper_killed_while_confirming_adopts_the_confirmation_jobs(toy, tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    args = (
        "x=interval(0, 1)",
        "sleep_s=6",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.confirm.top_k=2",
        "hydra.sweeper.confirm.seeds=[1]",
    )
    first = tmp_path / "first.log"
    study = _kill_when(
        toy(*args, log=first),
        first,
        sweep_dir,
        lambda s: {"confirm_jobs_0", "confirm_jobs_1"} <= set(s.user_attrs),
    )
    confirming = {n: study.user_attrs[f"confirm_jobs_{n}"][0]["job_id"] for n in (0, 1)}
    assert all(_alive(pid) for pid in confirming.values())

    ran = _relaunch_adopts(toy(*args), sweep_dir, confirming, "'s confirmation")

    trials = load_study(sweep_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert len(ran) == 4  # 2 search + 2 confirmation jobs, no twin
    ranking = read_yaml(sweep_dir / "optimization_results.yaml")["confirmation"]["ranking"]
    assert sorted(row["trial"] for row in ranking) == [0, 1]
    for row in ranking:
        x = trials[row["trial"]].params["x"]
        assert row["seeds"] == {seed: pytest.approx(toy_value(x, 1, seed)) for seed in (0, 1)}


def test_the_next_trial_starts_when_one_ends_not_when_the_batch_ends_in_the_freed_slot(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # asked in this order: one long, two short
    sweep_dir, times_dir = _enqueued_toy_study(tmp_path, [(0.5, 20), (0.1, 0), (0.2, 0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "gpu-a,gpu-b")  # the sweeper's GPUs, by name

    check_ok(
        toy(
            "x=interval(0, 1)",
            "sleep_s=choice(0, 20)",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=2",
            f"times_dir={times_dir}",
        )
    )

    ran = {x: json.loads((times_dir / f"{x}-0.json").read_text()) for x in (0.5, 0.1, 0.2)}
    long, short, third = ran[0.5], ran[0.1], ran[0.2]
    assert third["start"] > short["end"]  # launched once the short trial had ended ...
    assert third["start"] < long["end"]  # ... while the long one still ran: no batch barrier
    assert [t.state.name for t in load_study(sweep_dir).trials] == ["COMPLETE"] * 3
    # Two job slots: each trial in flight has its own GPU and half the cores; the third trial
    # takes the slot the short one freed, not the long one's.
    cpus = sorted(os.sched_getaffinity(0))
    expected = [",".join(map(str, share(cpus, 2, slot))) for slot in (0, 1)]
    assert (long["gpus"], long["cpus"]) == ("gpu-a", expected[0])
    assert (short["gpus"], short["cpus"]) == ("gpu-b", expected[1])
    assert (third["gpus"], third["cpus"]) == ("gpu-b", expected[1])


def test_without_the_split_every_local_job_sees_every_gpu(toy, tmp_path: Path, monkeypatch):
    times_dir = tmp_path / "times"
    times_dir.mkdir()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "gpu-a,gpu-b")
    check_ok(
        toy(
            "x=choice(0.1, 0.2)",
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.split_local_devices=false",
            f"times_dir={times_dir}",
        )
    )
    for x in (0.1, 0.2):  # submitit's local executor alone would hide them all ("")
        ran = json.loads((times_dir / f"{x}-0.json").read_text())
        assert (ran["gpus"], ran["cpus"]) == ("gpu-a,gpu-b", None)


def test_failed_and_nan_trials_are_failed_and_the_sweep_goes_on(toy, tmp_path: Path):
    run = toy(
        "hydra/sweeper/sampler=grid",
        "x=choice(-1, 0.5)",
        "y=range(1, 4)",
        "hydra.sweeper.n_trials=100",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.max_failure_rate=0.7",
    )

    check_ok(run)
    trials = load_study(tmp_path / "sweep").trials
    assert len(trials) == 6  # n_trials is capped at the grid's 2 x 3 points, each visited once
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (x, y) for x in (-1, 0.5) for y in (1, 2, 3)
    ]
    for trial in trials:
        x, y = trial.params["x"], trial.params["y"]
        if x < 0:
            assert trial.state.name == "FAIL"
            assert trial.user_attrs["fail_reason"] == f"job: ValueError: x={x} must be >= 0"
        elif y == 3:
            assert trial.state.name == "FAIL" and trial.user_attrs["fail_reason"] == "job returned NaN"
        else:
            assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(toy_value(x, y, 0))


def test_too_many_failures_stop_the_sweep_naming_the_key(toy, tmp_path: Path):
    run = toy("x=interval(-1, -0.5)", "hydra.sweeper.n_trials=10", "hydra.sweeper.max_failure_rate=0.2")

    assert run.returncode == 2
    assert (
        "3 of 10 planned trials failed, more than hydra.sweeper.max_failure_rate=0.2"
        in run.stdout + run.stderr
    )
    assert [t.state.name for t in load_study(tmp_path / "sweep").trials] == ["FAIL"] * 3
    assert (tmp_path / "sweep" / "optimization_results.yaml").is_file()


def test_multi_objective_in_a_journal_file(toy, tmp_path: Path):
    check_ok(
        toy(
            "x=tag(log, interval(0.01, 1))",
            "y=tag(int, interval(1, 2))",
            "objective=[a,b]",
            "hydra.sweeper.direction=[minimize,maximize]",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.storage=journal",
            "hydra/sweeper/sampler=random",
        )
    )

    path = tmp_path / "sweep" / "optuna_journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="sweep", storage=storage)
    assert len(study.directions) == 2
    for trial in study.trials:
        value = toy_value(trial.params["x"], trial.params["y"], 0)
        assert trial.values == pytest.approx([value, -value])
    results = read_yaml(tmp_path / "sweep" / "optimization_results.yaml")
    assert results["storage"] == str(path)
    assert {t["number"] for t in results["best_trials"]} == {t.number for t in study.best_trials}


def test_relaunch_with_another_search_space_is_refused(toy, tmp_path: Path):
    check_ok(toy("x=interval(0, 1)", "hydra.sweeper.n_trials=1"))

    run = toy("x=interval(0, 2)", "hydra.sweeper.n_trials=2")

    assert run.returncode == 2
    assert (
        "was started with other settings (params: was {'x': 'FloatDistribution(high=1.0"
        in run.stdout + run.stderr
    )
    assert "another hydra.sweep.dir" in run.stdout + run.stderr
    assert len(load_study(tmp_path / "sweep").trials) == 1


def test_objective_and_direction_counts_must_match(toy):
    run = toy("x=interval(0, 1)", "objective=[a,b]")
    assert run.returncode == 2
    assert (
        "objective=['a', 'b'] has 2 keys but hydra.sweeper.direction=['minimize'] has 1"
        in run.stdout + run.stderr
    )


def test_a_search_space_that_does_not_compose_stops_before_any_trial(toy, tmp_path: Path):
    run = toy("x=interval(0, 1)", "z=choice(1, 2)", "hydra.sweeper.n_trials=2")

    assert run.returncode == 2
    assert "error: z=1 does not compose with the config: Could not override 'z'" in run.stdout + run.stderr
    assert not (tmp_path / "sweep" / "optuna.db").exists()


def test_a_trial_whose_values_do_not_compose_together_fails_before_launch(tmp_path: Path):
    # Each value composes alone (the check before the study), but loss=timesim has no featrec.
    command = [
        *TRAIN_MULTIRUN,
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/launcher=local",
        "loss=choice(timesim)",
        "loss.featrec.weight=choice(0.5)",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.max_failure_rate=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_S)

    check_ok(run)
    assert "Launching" not in run.stdout + run.stderr
    # the start-of-sweep forecast (sweeps/forecast.py) of the planned trial on an H100 and this CPU
    forecast = "Forecast (an estimate, not a measurement): 1 trial(s) x 1 seed(s) x 100000 steps"
    assert forecast in run.stdout + run.stderr
    assert "NVIDIA H100 SXM 80GB, bf16: " in run.stdout + run.stderr
    (trial,) = load_study(tmp_path / "sweep").trials
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"].startswith("config: Could not override 'loss.featrec.weight'")
    assert not (tmp_path / "runs").exists()


# --- named sweeps (sweeps/*.yaml) on the real training task -----------------------------------


@pytest.mark.parametrize("name", SWEEPS)
def test_named_sweep_composes_and_sweeps_existing_keys(name: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.sweep == name
    assert cfg.hydra.sweep.dir == f"{cfg.paths.runs_dir}/sweeps/{name}/{cfg.exp_name}"  # stable: resumable
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params, f"sweeps/{name}.yaml sweeps nothing"
    groups = {key: value for key, value in params.items() if key.startswith("+")}  # +method=a,b
    for key, options in groups.items():  # each option composes on top of the sweep
        for option in str(options).split(","):
            assert (CONF / key[1:] / f"{option}.yaml").is_file(), f"sweeps/{name}.yaml: no {key}={option}"
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                compose("train", overrides=[f"+sweep={name}", f"{key}={option}"])
    values = [f"{key}={value}" for key, value in params.items() if key not in groups]
    space = parse_search_space(values)
    for key in [*space.distributions, *(f.split("=")[0] for f in space.fixed)]:
        assert OmegaConf.select(cfg, key) is not None, f"sweeps/{name}.yaml sweeps {key}, not a config key"


ASHA = (  # rungs at steps 2, 4 and 8 (trainer.max_steps) with 1, 2 and 3 seeds
    "hydra/sweeper/pruner=asha",
    "hydra.sweeper.pruner.min_steps=2",
    "hydra.sweeper.pruner.reduction_factor=2",
    "hydra.sweeper.seeds=[0,1,2]",
    "hydra.sweeper.n_jobs=2",
)
ASHA_SEEDS = {0: ["0"], 1: ["0", "1"], 2: ["0", "1", "2"]}
ASHA_STEPS = {0: 2, 1: 4, 2: 8}


def _check_asha_study(trials: list, times_dir: Path) -> None:
    """What every asha sweep of the toy must show, however its jobs interleaved."""
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    by_x = {t.params["x"]: t for t in trials}
    best = by_x[0.3]
    assert best.state.name == "COMPLETE"  # the best trial is never lost: it reaches the last rung
    assert best.value == pytest.approx(sum(toy_value(0.3, 1, s) for s in (0, 1, 2)) / 3)
    worst = by_x[0.9]  # never in the better half of a rung: paused at its first rung, then pruned
    assert worst.state.name == "PRUNED" and list(worst.user_attrs["rung_values"]) == ["0"]
    assert worst.intermediate_values == {2: pytest.approx(toy_value(0.9, 1, 0, 2))}
    for trial in trials:
        rungs = trial.user_attrs["rung_values"]
        for rung, values in rungs.items():  # the seeds it gained as it was promoted, and their values
            assert list(values) == ASHA_SEEDS[int(rung)]
            step = None if int(rung) == 2 else ASHA_STEPS[int(rung)]
            x = trial.params["x"]
            assert values == {s: pytest.approx(toy_value(x, 1, int(s), step)) for s in values}
        assert trial.state.name == ("COMPLETE" if "2" in rungs else "PRUNED")
    ran = [json.loads(line) for line in (times_dir / "ran.jsonl").read_text().splitlines()]
    assert len(ran) == len({json.dumps(r, sort_keys=True) for r in ran})  # no segment ran twice
    expected = sum(len(ASHA_SEEDS[int(r)]) for t in trials for r in t.user_attrs["rung_values"])
    assert len(ran) == expected  # a job per seed per rung reached, nothing else


def test_asha_pauses_trials_at_rungs_and_promotes_the_best_with_more_seeds(toy, tmp_path: Path):
    sweep_dir, times_dir = _enqueued_toy_study(
        tmp_path, [(0.9, 0), (0.3, 0), (0.7, 0), (0.5, 0), (0.35, 0), (0.0, 0)]
    )
    run = toy(
        *ASHA,
        "x=interval(0, 1)",
        "sleep_s=choice(0, 5)",
        "hydra.sweeper.n_trials=6",
        f"times_dir={times_dir}",
    )
    check_ok(run)
    trials = load_study(sweep_dir).trials
    assert len(trials) == 6
    _check_asha_study(trials, times_dir)
    summary = read_yaml(sweep_dir / "optimization_results.yaml")
    assert summary["best_trial"] == 1


def test_sweeper_killed_with_paused_and_running_asha_trials_keeps_both(toy, tmp_path: Path):
    # trial 2's job runs 5 s: the sweeper is killed while it runs and trials 0 and 1 wait paused
    sweep_dir, times_dir = _enqueued_toy_study(tmp_path, [(0.9, 0), (0.3, 0), (0.5, 5), (0.35, 0), (0.7, 0)])
    args = (
        *ASHA,
        "hydra.sweeper.pruner.min_fraction=0.25",  # of max_steps 8: the same first rung, step 2
        "x=interval(0, 1)",
        "sleep_s=choice(0, 5)",
        "hydra.sweeper.n_trials=5",
        f"times_dir={times_dir}",
    )
    first = tmp_path / "first.log"

    def ready(study: optuna.Study) -> bool:
        paused = [t for t in study.trials if t.user_attrs.get("paused")]
        slow = [t for t in study.trials if t.params.get("x") == 0.5 and t.user_attrs.get("jobs")]
        return len(paused) >= 1 and bool(slow) and _alive(slow[0].user_attrs["jobs"][0]["job_id"])

    study = _kill_when(toy(*args, log=first), first, sweep_dir, ready)
    paused = {t.number: t.user_attrs["rung_values"] for t in study.trials if t.user_attrs.get("paused")}
    (slow,) = [t for t in study.trials if t.params.get("x") == 0.5]  # enqueued ones have no params yet
    left = {slow.number: slow.user_attrs["jobs"][0]["job_id"]}

    _relaunch_adopts(toy(*args), sweep_dir, left, "")

    trials = load_study(sweep_dir).trials
    assert len(trials) == 5
    _check_asha_study(trials, times_dir)
    for number, rung_values in paused.items():  # what the paused trials had reached is kept
        assert trials[number].user_attrs["rung_values"].items() >= rung_values.items()


@pytest.mark.slow
def test_a_tiny_budget_stops_the_search_and_the_top_two_are_confirmed_on_an_extra_seed(
    data_dir: Path, tmp_path: Path, two_step_overrides: list[str]
):
    command = [
        *TRAIN_MULTIRUN,
        "+sweep=slot_counts",
        "hydra/launcher=local",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.poll_s=0.5",
        "hydra.sweeper.budget_hours=1e-6",  # spent by the first trial that ends
        "hydra.sweeper.confirm.top_k=2",
        "hydra.sweeper.confirm.seeds=[0,1]",  # seed 0 ran in the search: only seed 1 is new
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *two_step_overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}

    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)

    check_ok(run)
    sweep_dir = tmp_path / "runs" / "sweeps" / "slot_counts" / "shapes"
    trials = load_study(sweep_dir, "slot_counts").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # the 2 in flight; 2 never launched
    summary = read_yaml(sweep_dir / "optimization_results.yaml")
    assert summary["budget"]["stopped_early"] is True
    assert summary["budget"]["spent_hours"] == pytest.approx(
        sum(t.user_attrs["device_seconds"] for t in trials) / 3600
    )
    assert "the search stopped early" in run.stdout + run.stderr
    results = {
        (r["config"]["grouper"]["n_slots"], r["seed"]): r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/seed*/results.json"))
    }
    assert len(results) == 4  # 2 trials x (search seed 0 + confirmation seed 1)
    ranking = summary["confirmation"]["ranking"]
    assert sorted(row["trial"] for row in ranking) == [0, 1]
    for row in ranking:
        n_slots = trials[row["trial"]].params["grouper.n_slots"]
        assert row["seeds"] == {
            seed: pytest.approx(results[(n_slots, seed)]["metrics"]["val/video_fg_ari"]) for seed in (0, 1)
        }
        assert all(results[(n_slots, seed)]["device_kind"] == "cpu" for seed in (0, 1))
    assert [row["mean"] for row in ranking] == sorted((row["mean"] for row in ranking), reverse=True)
    (test,) = summary["confirmation"]["paired_tests"]
    assert test["shared_seeds"] == [0, 1]
    assert summary["confirmation"]["verdict"] in run.stdout + run.stderr
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 4  # seed 0 was not re-run


@pytest.mark.slow
def test_asha_on_the_training_task_resumes_paused_runs_and_counts_their_cost_once(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    """Real training jobs: rung 0 at step 2 on seed 0, the promoted trial resumes seed 0 from its
    pause and trains seed 1 from step 0 to the last rung (step 4); the summary, curves and budget
    count each run dir's seconds once."""
    command = [
        *TRAIN_MULTIRUN,
        *ASHA_TWO_RUNGS,
        "hydra/launcher=local",
        "hydra.sweeper.poll_s=0.5",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *debug_overrides,
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}

    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)

    check_ok(run)
    sweep_dir = tmp_path / "runs" / "sweeps" / "slot_counts" / "shapes"
    trials = load_study(sweep_dir, "slot_counts").trials
    # the better of the two goes on at once; the other too only if it is within the seed noise
    assert "COMPLETE" in {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    summary = read_yaml(sweep_dir / "optimization_results.yaml")
    rows = {row["number"]: row for row in summary["trials"]}
    curves = {t["number"]: t for t in json.loads((sweep_dir / "curves.json").read_text())["trials"]}
    every_run = []
    for trial in trials:
        runs = [Path(job["run_dir"]) for job in trial.user_attrs["jobs"]]
        results = [json.loads((run / "results.json").read_text()) for run in runs]
        every_run += results
        assert trial.user_attrs["device_seconds"] == pytest.approx(sum(r["device_seconds"] for r in results))
        if trial.state.name == "PRUNED":  # paused at rung 0, one seed
            (paused,) = results
            assert paused["status"] == "paused" and paused["step"] == 2
            assert (rows[trial.number]["rung"], rows[trial.number]["seeds"]) == (0, 1)
            continue
        first, gained = sorted(results, key=lambda r: r["seed"])
        assert first["segments"] == [
            {"from_step": 0, "to_step": 2, "started": "new", "ended": "paused"},
            {"from_step": 2, "to_step": 4, "started": "promoted", "ended": "completed"},
        ]
        assert gained["segments"] == [{"from_step": 0, "to_step": 4, "started": "new", "ended": "completed"}]
        assert first["steps"] == gained["steps"] == 4  # the paused steps are not trained again
        fg_ari = [r["metrics"]["val/video_fg_ari"] for r in (first, gained)]
        assert trial.value == pytest.approx(sum(fg_ari) / 2)
        assert (rows[trial.number]["rung"], rows[trial.number]["seeds"]) == (1, 2)
        seed_curves = curves[trial.number]["seeds"]
        assert [step for step, _, _ in seed_curves["0"]] == [2, 4]  # across both segments
        assert all(cost is not None and cost > 0 for *_, cost in seed_curves["1"])
    assert summary["total"]["device_hours"] == pytest.approx(
        sum(r["device_seconds"] for r in every_run) / 3600
    )
    assert summary["unpruned_forecast"]["steps"] == 2 * 2 * 4


@pytest.mark.slow
def test_seed_grid_writes_a_run_per_seed_and_skips_finished_seeds(
    data_dir: Path, tmp_path: Path, two_step_overrides: list[str]
):
    command = [
        *TRAIN_MULTIRUN,
        "+sweep=seeds",
        "seed=0,1",
        "hydra/launcher=local",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *two_step_overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    first = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = sorted((tmp_path / "runs").glob("*/seed*/results.json"))
    assert [p.parent.name for p in results] == ["seed0", "seed1"]
    assert results[0].parent.parent == results[1].parent.parent  # one experiment id, one dir per seed
    for seed, path in enumerate(results):
        summary = json.loads(path.read_text())
        assert summary["status"] == "completed" and summary["seed"] == seed and summary["step"] == 2
        assert not math.isnan(summary["metrics"]["val/video_fg_ari"])
    assert (tmp_path / "runs" / "sweeps" / "seeds" / "shapes" / "multirun.yaml").is_file()
    written = [p.stat().st_mtime_ns for p in results]

    again = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S
    )

    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in results] == written
    log = again.stdout + again.stderr
    assert log.count("already completed (force=true re-runs it)") == 2


@pytest.mark.slow
def test_methods_sweep_trains_both_methods_into_one_table(
    data_dir: Path, tmp_path: Path, two_step_overrides: list[str]
):
    """+sweep=methods: VideoSAUR and SlotContrast on the same shapes clips, then one table under
    one protocol with a row per method (docs/methods.md)."""
    command = [
        *TRAIN_MULTIRUN,
        "+sweep=methods",
        "seed=0",
        "hydra/launcher=local",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *two_step_overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {
        json.loads(p.read_text())["config"]["exp_name"]: json.loads(p.read_text())
        for p in (tmp_path / "runs").glob("*/seed0/results.json")
    }
    assert sorted(results) == ["slotcontrast", "videosaur"]
    assert set(results["slotcontrast"]["config"]["loss"]) == {"featrec", "slotslot"}
    assert set(results["videosaur"]["config"]["loss"]) == {"featrec", "timesim"}
    assert results["slotcontrast"]["protocol"] == results["videosaur"]["protocol"]  # one protocol
    sweep_dir = tmp_path / "runs" / "sweeps" / "methods" / "shapes"
    table = subprocess.run(
        [sys.executable, str(REPO / "src" / "aggregate.py"), str(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert table.returncode == 0, table.stderr[-3000:]
    assert table.stdout.count("protocol: shapes validation") == 1  # one column set for both
    rows = [
        line for line in table.stdout.splitlines() if line.startswith(("| slotcontrast-", "| videosaur-"))
    ]
    assert len(rows) == 2, table.stdout
