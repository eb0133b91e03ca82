"""Seed aggregation on results.json files with known metrics: hand-computed means, stds, CIs, counts."""

import csv
import io
import math
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from PIL import Image

from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.protocol import MATCHING, METRIC_VERSION, EvalProtocol
from slotsweep.results import aggregate as agg
from slotsweep.results import loaders, statistics
from slotsweep.results.plots import DPI, FIGSIZE_IN, param_figure, plot_optuna, plot_params
from slotsweep.results.published import load_published
from slotsweep.results.records import Table
from slotsweep.results.tables import format_csv, format_latex, format_markdown
from slotsweep.runs.experiment import write_results

CONF = Path(__file__).resolve().parents[4] / "conf"
PLOT_SIZE = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))
T_975_DF2 = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom (printed tables)
T_975_DF1 = 12.706204736174707
# what training stamps on results.json (slotsweep.evaluation.protocol); toy runs are 7-slot shapes runs
PROTOCOL = EvalProtocol(
    dataset="shapes",
    split="validation",
    frames="whole videos",
    mask_size=64,
    masks="decoder",
    background="channel 0 dropped",
    overlaps="none allowed",
    matching=MATCHING,
    n_slots=7,
    metric_version=METRIC_VERSION,
)


def _config(n_slots: int, seed: int, weight: float = 0.5) -> dict:
    """A results.json config: the keys aggregation reads plus some it must ignore."""
    return {
        "exp_name": "toy",
        "seed": seed,
        "grouper": {"n_slots": n_slots, "n_iters": 3},
        "loss": {"timesim": {"weight": weight}},
        "paths": {"runs_dir": "/somewhere", "data_dir": "/data"},
        "logger": {"project": "slotsweep"},
        "trainer": {"devices": seed + 1, "max_steps": 10},  # devices: a non-result key, differs per seed
    }


def _write(
    runs_dir: Path, exp_id: str, seed: int, ari: float | None, mbo: float | None, n_slots: int, **extra
) -> Path:
    directory = runs_dir / exp_id / f"seed{seed}"
    directory.mkdir(parents=True)
    status = extra.pop("status", "completed")
    protocol = extra.pop("protocol", replace(PROTOCOL, n_slots=n_slots))  # scored as trained
    metrics = {} if status == "failed" else {"val/video_fg_ari": ari, "val/video_mbo": mbo}
    best = {k: v + 0.01 for k, v in metrics.items()}
    config = _config(n_slots, seed, **extra)
    results = {
        "exp_id": exp_id,
        "exp_name": "toy",
        "seed": seed,
        "status": status,
        "step": 10,
        "max_steps": 10,
        "wall_time_s": 1.0,
        "metrics": metrics,
        "best_metrics": best,
        "error": "NonFiniteLossError: training loss is nan at step 7" if status == "failed" else None,
        "config": config,
        "run_dir": str(directory),
        "protocol": protocol.as_dict(),
    }
    write_results(directory, results)
    return directory


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Three experiments, seeds 0-2: A complete, B with seed 2 failed, C without seed 2."""
    runs = tmp_path / "runs"
    for seed, ari, mbo in [(0, 0.5, 0.30), (1, 0.6, 0.32), (2, 0.7, 0.34)]:
        _write(runs, "toy-aaaa0001", seed, ari, mbo, n_slots=5)
    _write(runs, "toy-bbbb0002", 0, 0.4, 0.40, n_slots=7)
    _write(runs, "toy-bbbb0002", 1, 0.2, 0.50, n_slots=7)
    _write(runs, "toy-bbbb0002", 2, None, None, n_slots=7, status="failed")
    _write(runs, "toy-cccc0003", 0, 0.1, 0.20, n_slots=11)
    _write(runs, "toy-cccc0003", 1, 0.3, 0.20, n_slots=11)
    return runs


def _table(runs_dir: Path, **kwargs) -> Table:
    runs, planned = loaders.load_local(runs_dir)
    return statistics.aggregate(runs, planned_seeds=planned, **kwargs)


def test_seed_stat_hand_computed():
    stat = statistics.seed_stat([0.5, 0.6, 0.7])
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.6, abs=1e-12)
    assert stat.std == pytest.approx(0.1, abs=1e-12)  # sample std: sqrt(0.02 / 2)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (stat.ci_low, stat.ci_high) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-9)
    one = statistics.seed_stat([0.25])
    assert (one.n, one.mean) == (1, 0.25) and math.isnan(one.std) and math.isnan(one.ci_low)
    assert statistics.seed_stat([]).n == 0 and math.isnan(statistics.seed_stat([]).mean)


def test_groups_by_exp_id_with_exact_stats(runs_dir: Path):
    table = _table(runs_dir)
    by_label = {g.label: g for g in table.groups}
    assert list(by_label) == ["toy-aaaa0001", "toy-bbbb0002", "toy-cccc0003"]  # sorted by n_slots 5, 7, 11
    assert table.keys == ["grouper.n_slots"]  # seed, paths, logger, trainer.devices left out
    a, b, c = by_label.values()
    assert [g.params["grouper.n_slots"] for g in (a, b, c)] == [5, 7, 11]

    assert a.seeds == [0, 1, 2] and a.missing == {}
    assert a.stats["val/video_fg_ari"].mean == pytest.approx(0.6, abs=1e-12)
    assert a.stats["val/video_fg_ari"].std == pytest.approx(0.1, abs=1e-12)
    assert a.stats["val/video_mbo"].mean == pytest.approx(0.32, abs=1e-12)
    assert a.stats["val/video_mbo"].std == pytest.approx(0.02, abs=1e-12)

    # B: the failed seed is missing, not averaged in: mean of 0.4 and 0.2 only.
    assert b.seeds == [0, 1] and b.missing == {2: "failed"}
    ari = b.stats["val/video_fg_ari"]
    assert (ari.n, ari.mean, ari.std) == (2, pytest.approx(0.3), pytest.approx(math.sqrt(0.02)))
    half = T_975_DF1 * math.sqrt(0.02) / math.sqrt(2)
    assert (ari.ci_low, ari.ci_high) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-9)

    # C never ran seed 2: reported against the seeds the other groups have.
    assert c.seeds == [0, 1] and c.missing == {2: "absent"}
    assert c.stats["val/video_mbo"].std == pytest.approx(0.0, abs=1e-12)

    # A leads FG-ARI and B leads mBO, but with 2-3 seeds their 95% CIs overlap the runner-up's
    assert table.best == {}
    assert "val/video_fg_ari: toy-aaaa0001 and toy-bbbb0002 tied within noise" in "\n".join(table.notes)
    assert "val/video_mbo: toy-bbbb0002 and toy-aaaa0001 tied within noise" in "\n".join(table.notes)
    assert any("toy-bbbb0002 seed 2: failed: NonFiniteLossError" in note for note in table.notes)


def test_best_values_and_by_keys(runs_dir: Path):
    table = _table(runs_dir, use_best=True)
    assert table.groups[0].stats["val/video_fg_ari"].mean == pytest.approx(0.61, abs=1e-12)

    by = _table(runs_dir, by=["loss.timesim.weight"])  # every group has weight 0.5: one group of 7 runs
    assert [g.label for g in by.groups] == ["loss.timesim.weight=0.5"]
    group = by.groups[0]
    assert len(group.seeds) == 7 and group.missing == {2: "failed"}
    assert group.stats["val/video_fg_ari"].mean == pytest.approx(
        (0.5 + 0.6 + 0.7 + 0.4 + 0.2 + 0.1 + 0.3) / 7
    )
    (warning,) = [note for note in by.notes if note.startswith("warning:")]
    assert warning == (
        "warning: --by loss.timesim.weight: group loss.timesim.weight=0.5 pools runs that also "
        "differ in grouper.n_slots (11, 5, 7)"
    )

    with pytest.raises(SlotsweepError, match=r"--by grouper\.n_slot: .*close keys: \['grouper\.n_slots'"):
        _table(runs_dir, by=["grouper.n_slot"])
    with pytest.raises(SlotsweepError, match=r"--metrics val/video_ari: no run has it"):
        _table(runs_dir, metrics=["val/video_ari"])


def test_nan_metric_and_set_aside_seed_are_left_out_with_a_note(tmp_path: Path):
    runs = tmp_path / "runs"
    _write(runs, "toy-aaaa0001", 0, 0.5, 0.3, n_slots=5)
    _write(runs, "toy-aaaa0001", 1, math.nan, 0.5, n_slots=5)
    aside = runs / "toy-aaaa0001" / "seed0.replaced1"  # as force=true sets a finished run aside
    _write(runs / "copies", "toy-aaaa0001", 0, 0.9, 0.9, n_slots=5).rename(aside)
    table = _table(runs)
    stats = table.groups[0].stats
    assert stats["val/video_fg_ari"].n == 1 and stats["val/video_fg_ari"].mean == 0.5
    assert stats["val/video_mbo"].n == 2 and stats["val/video_mbo"].mean == pytest.approx(0.4)
    assert any("seed 1: val/video_fg_ari is nan, left out" in note for note in table.notes)
    (note,) = [note for note in table.notes if note.startswith("toy-aaaa0001 seed 0: ")]
    assert f"{aside / 'results.json'}, left out" in note


def test_tables(runs_dir: Path):
    table = _table(runs_dir)
    markdown = format_markdown(table)
    lines = markdown.splitlines()
    assert lines[0] == f"protocol: {replace(PROTOCOL, n_slots='as-trained').describe()}  "  # line break
    assert lines[2].startswith(
        "| group | grouper.n_slots | n | missing seeds | val/video_fg_ari (mean ± std)"
    )
    assert "| toy-aaaa0001 | 5 | 3 | - | 0.600 ± 0.100 |" in markdown
    assert "| toy-bbbb0002 | 7 | 2 | 2 (failed) | 0.300 ± 0.141 |" in markdown
    assert "| toy-cccc0003 | 11 | 2 | 2 | 0.200 ± 0.141 |" in markdown
    assert "**" not in markdown  # leaders within noise of the runner-up are not bolded
    assert "- val/video_mbo: toy-bbbb0002 and toy-aaaa0001 tied within noise" in markdown
    assert "- toy-bbbb0002 seed 2: failed: NonFiniteLossError: training loss is nan at step 7" in markdown

    rows = list(csv.DictReader(io.StringIO(format_csv(table))))
    assert [r["group"] for r in rows] == ["toy-aaaa0001", "toy-bbbb0002", "toy-cccc0003"]
    assert float(rows[0]["val/video_fg_ari mean"]) == pytest.approx(0.6, abs=1e-15)
    assert float(rows[1]["val/video_fg_ari std"]) == pytest.approx(math.sqrt(0.02), abs=1e-15)
    assert rows[1]["n"] == "2" and rows[1]["seeds"] == "0 1" and rows[1]["missing_seeds"] == "2 (failed)"
    assert [r["val/video_mbo best"] for r in rows] == ["False", "False", "False"]

    latex = format_latex(table)
    assert "\\begin{tabular}{llrrrrr}" in latex and latex.rstrip().endswith("\\end{tabular}")
    assert "group & grouper.n\\_slots & n & val/video\\_fg\\_ari & 95\\% CI" in latex
    assert "toy-aaaa0001 & 5 & 3 & $0.600 \\pm 0.100$ & [0.352, 0.848]" in latex


def test_plots_are_pngs_of_the_expected_size(runs_dir: Path, tmp_path: Path):
    out = tmp_path / "plots"
    out.mkdir()
    paths = plot_params(_table(runs_dir), out)
    assert sorted(p.name for p in paths) == [
        "val-video_fg_ari__grouper.n_slots.png",
        "val-video_mbo__grouper.n_slots.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == PLOT_SIZE


def test_a_continuous_search_is_one_scatter_with_short_labels(tmp_path: Path):
    """Trials of an Optuna search differ in every swept key: one unlabelled cloud of points, not a
    one-point line per trial with a 16-digit legend; a grid keeps its lines, labelled shortly."""
    runs = tmp_path / "runs"
    for i, (n_slots, weight) in enumerate([(5, 0.123456789012), (6, 0.71828182846), (8, 0.31415926535)]):
        for seed in (0, 1):
            _write(runs, f"toy-trial{i}", seed, 0.2 * i + 0.01 * seed, 0.3, n_slots=n_slots, weight=weight)
    table = _table(runs)
    assert table.keys == ["grouper.n_slots", "loss.timesim.weight"]
    figure = param_figure(table.groups, "loss.timesim.weight", ["grouper.n_slots"], "val/video_fg_ari")
    (ax,) = figure.axes
    (series,) = ax.containers  # one errorbar series holding all trials
    points = series.lines[0]
    assert len(points.get_xdata()) == 3 and points.get_linestyle() == "None" and ax.get_legend() is None

    grid = tmp_path / "grid"
    for n_slots in (5, 7):
        for weight in (0.1234567, 0.5):
            _write(grid, f"toy-{n_slots}-{weight}", 0, n_slots * weight, 0.3, n_slots=n_slots, weight=weight)
    table = _table(grid)
    figure = param_figure(table.groups, "grouper.n_slots", ["loss.timesim.weight"], "val/video_fg_ari")
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "loss.timesim.weight=0.123",
        "loss.timesim.weight=0.5",
    ]
    assert [series.lines[0].get_linestyle() for series in ax.containers] == ["-", "-"]  # a line per weight


def _optuna_study(storage, n_trials: int, params: tuple[str, ...]) -> None:
    study = optuna.create_study(study_name="lossw", storage=storage, direction="maximize")
    for i in range(n_trials):
        trial = study.ask()
        values = [trial.suggest_float(p, 0.0, 1.0) for p in params]
        study.tell(trial, sum(values) + 0.1 * i)


def test_optuna_history_and_importances(tmp_path: Path, capsys: pytest.CaptureFixture):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _optuna_study(f"sqlite:///{sweep / 'optuna.db'}", n_trials=4, params=("loss.weight", "lr"))
    out = tmp_path / "plots"
    out.mkdir()
    paths = plot_optuna(sweep, out)
    assert sorted(p.name for p in paths) == [
        "optuna_lossw_history_objective-0.png",
        "optuna_lossw_importances_objective-0.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == PLOT_SIZE

    journal = tmp_path / "journal"
    journal.mkdir()
    backend = optuna.storages.journal.JournalFileBackend(str(journal / "optuna_journal.log"))
    _optuna_study(optuna.storages.JournalStorage(backend), n_trials=1, params=("lr",))
    paths = plot_optuna(journal, out)
    assert [p.name for p in paths] == ["optuna_lossw_history_objective-0.png"]
    assert "no importances (1 completed trials, need 2)" in capsys.readouterr().out


GRID_SWEEP = {  # python src/train.py -m seed=0,1,2,3 grouper.n_slots=5,7 trainer=debug
    "sweep": {"dir": "${paths.runs_dir}/multirun/${now:%Y-%m-%d_%H-%M-%S}"},
    "overrides": {"task": ["seed=0,1,2,3", "grouper.n_slots=5,7", "trainer=debug"]},
    "sweeper": {"params": None},
}
OPTUNA_SWEEP = {  # the Optuna sweeper: 4 seeds per trial, n_slots and a weight searched
    "sweep": {"dir": "${paths.runs_dir}/sweeps/${sweep}/${exp_name}"},
    "overrides": {"task": ["trainer=debug"]},
    "sweeper": {
        "seeds": [0, 1, 2, 3],
        "params": {"grouper.n_slots": "choice(5, 7)", "loss.timesim.weight": "tag(log, interval(0.01, 1))"},
    },
}


@pytest.mark.parametrize(("hydra", "sweep_dir"), [(GRID_SWEEP, "multirun/t"), (OPTUNA_SWEEP, "sweeps/s/toy")])
def test_sweep_dir_selects_the_sweeps_runs_and_planned_seeds(runs_dir: Path, hydra: dict, sweep_dir: str):
    """multirun.yaml, as Hydra writes it in the sweep dir, says which configs and seeds the sweep ran.

    Its paths.runs_dir (/somewhere, from the sweeping shell) is not where the runs are now.
    """
    sweep = runs_dir / sweep_dir
    sweep.mkdir(parents=True)
    config = _config(n_slots=5, seed=0) | {"sweep": "s"}
    config["hydra"] = hydra | {"runtime": {"choices": {"grouper": "slot_attention", "trainer": "debug"}}}
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    runs, planned = loaders.load_local(sweep)
    assert planned == [0, 1, 2, 3]
    assert sorted({run.exp_id for run in runs}) == ["toy-aaaa0001", "toy-bbbb0002"]  # not n_slots=11
    table = statistics.aggregate(runs, planned_seeds=planned)
    assert table.groups[0].missing == {3: "absent"}
    assert table.groups[1].missing == {2: "failed", 3: "absent"}


def test_cli_writes_tables_and_plots(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "agg"
    assert agg.main([str(runs_dir), "--out", str(out), "--metrics", "val/video_fg_ari"]) == 0
    printed = capsys.readouterr().out
    assert "| toy-aaaa0001 | 5 | 3 | - | 0.600 ± 0.100 |" in printed
    assert (out / "table.md").read_text() in printed
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "table.tex", "plots"}
    assert [p.name for p in (out / "plots").iterdir()] == ["val-video_fg_ari__grouper.n_slots.png"]

    with pytest.raises(SystemExit) as exit_info:
        agg.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "nowhere is not a directory; pass a runs dir" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        agg.main([str(empty)])
    assert exit_info.value.code == 2
    assert f"no readable results.json below {empty}" in capsys.readouterr().err


def test_named_optuna_sweep_from_the_real_config(tmp_path: Path):
    """sweeps/loss_weights.yaml composed as the sweeper saves it: its seeds are planned, its searched
    loss weights may take any value, and a run with another n_slots is not part of it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=["+sweep=loss_weights"], return_hydra_config=True)
    runs = tmp_path / "runs"
    sweep = runs / "sweeps" / "loss_weights" / "shapes"
    sweep.mkdir(parents=True)
    OmegaConf.save(config, sweep / "multirun.yaml")
    with open_dict(config):
        del config["hydra"]
    for exp_id, weight, n_slots in [("shapes-a", 0.02, 7), ("shapes-b", 0.5, 7), ("shapes-c", 0.5, 3)]:
        for seed in (0, 1):
            task = OmegaConf.merge(config, {"seed": seed, "grouper": {"n_slots": n_slots}})
            task.loss.timesim.weight = weight
            directory = runs / exp_id / f"seed{seed}"
            directory.mkdir(parents=True)
            results = {"exp_id": exp_id, "seed": seed, "status": "completed", "error": None}
            results |= {"metrics": {"val/video_fg_ari": 0.5, "val/video_mbo": 0.3}, "best_metrics": {}}
            write_results(directory, results | {"config": OmegaConf.to_container(task, resolve=True)})
    found, planned = loaders.load_local(sweep)
    assert planned == [0, 1, 2]  # hydra.sweeper.seeds
    assert sorted({run.exp_id for run in found}) == ["shapes-a", "shapes-b"]
    table = statistics.aggregate(found, planned_seeds=planned)
    assert table.keys == ["loss.timesim.weight"]
    assert [group.missing for group in table.groups] == [{2: "absent"}, {2: "absent"}]


def test_two_protocols_in_one_column_are_refused_unless_mixed(tmp_path: Path, capsys: pytest.CaptureFixture):
    runs = tmp_path / "runs"
    chunks = replace(PROTOCOL, dataset="ytvis2021", frames="chunks of 6 frames", n_slots=7)
    videos = replace(chunks, frames="whole videos")
    for seed in (0, 1):
        _write(runs, "toy-aaaa0001", seed, 0.40 + seed / 100, 0.3, n_slots=7, protocol=chunks)
        _write(runs, "toy-bbbb0002", seed, 0.30 + seed / 100, 0.3, n_slots=7, weight=0.1, protocol=videos)
    with pytest.raises(SystemExit):
        agg.main([str(runs)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "error: the runs' metrics were measured under 2 protocols, which one column cannot mix "
        "(frames: 'whole videos' vs 'chunks of 6 frames'; "
    )
    assert line.endswith("or pass --mix-protocols")

    assert agg.main([str(runs), "--mix-protocols", "--out", str(tmp_path / "agg")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "protocols (mixed in one column by --mix-protocols, 2):  "
    assert printed[1].startswith("- ytvis2021 validation, whole videos, 64 px masks,")  # groups' order
    assert printed[1].endswith(": toy-bbbb0002  ") and printed[2].endswith(": toy-aaaa0001  ")
    # published rows need one protocol per column: none beside a mixed column
    assert not any("(published)" in line for line in printed)


def test_published_rows_only_beside_their_protocol(tmp_path: Path):
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "papers.yaml").write_text(
        "- {name: Chunked, source: Paper A, protocol: {dataset: ytvis2021, frames: chunks of 6 frames},"
        " metrics: {val/video_fg_ari: 0.395}}\n"
        "- {name: Whole, source: Paper B, protocol: {dataset: ytvis2021, frames: whole videos},"
        " metrics: {val/video_fg_ari: 0.289, val/video_mbo: 0.263}}\n"
        "- {name: Movi, source: Paper C, protocol: {dataset: movi_c}, metrics: {val/video_fg_ari: 0.648}}\n"
    )
    published = load_published(baselines)
    runs = tmp_path / "runs"
    videos = replace(PROTOCOL, dataset="ytvis2021", n_slots=7)
    for seed in (0, 1):
        _write(runs, "toy-aaaa0001", seed, 0.3 + seed / 100, 0.25, n_slots=7, protocol=videos)
    table = statistics.aggregate(loaders.load_local(runs)[0], published=published)
    rows = {g.label: g for g in table.groups}
    assert set(rows) == {"toy-aaaa0001", "Whole (published)"}  # not the chunked or the MOVi paper
    whole = rows["Whole (published)"]
    assert whole.published == "Paper B" and whole.stats["val/video_fg_ari"].mean == 0.289
    markdown = format_markdown(table)
    assert "| Whole (published) | published | - | 0.289 | n/a | 0.263 | n/a |" in markdown
    assert "- Whole (published): Paper B" in markdown
    # a shapes table gets none of them
    shapes = tmp_path / "shapes"
    _write(shapes, "toy-aaaa0001", 0, 0.3, 0.25, n_slots=7)
    assert [
        g.label for g in statistics.aggregate(loaders.load_local(shapes)[0], published=published).groups
    ] == ["toy-aaaa0001"]
    # the repo's own file: every entry names a source and the numbers are there
    repo = {(p.name, p.protocol.get("dataset"), p.protocol.get("frames")): p for p in load_published()}
    chunked = repo[("VideoSAUR (DINO B/16, 7 slots)", "ytvis2021", "chunks of 6 frames")]
    assert chunked.metrics == {"val/video_fg_ari": 0.395, "val/video_mbo": 0.291}
    assert all(p.source for p in repo.values()) and len(repo) == 9


def test_best_is_marked_only_when_its_interval_clears_the_runner_up(tmp_path: Path):
    runs = tmp_path / "runs"
    for seed, delta in enumerate((0.0, 0.01, 0.02)):
        _write(runs, "toy-aaaa0001", seed, 0.70 + delta, 0.30 + 10 * delta, n_slots=5)
        _write(runs, "toy-bbbb0002", seed, 0.50 + delta, 0.31 + 10 * delta, n_slots=7)
    table = _table(runs)
    assert table.best == {"val/video_fg_ari": "toy-aaaa0001"}  # [0.685, 0.735] vs [0.485, 0.535]
    assert "val/video_mbo: toy-bbbb0002 and toy-aaaa0001 tied within noise" in "\n".join(table.notes)
    assert "**0.710 ± 0.010**" in format_markdown(table)


def test_sweep_dir_leaves_out_a_run_of_the_same_config_with_an_unplanned_seed(runs_dir: Path):
    """`python src/train.py seed=7`, then `-m +sweep=seeds seed=0,1`: seed 7 is not the sweep's."""
    _write(runs_dir, "toy-aaaa0001", 7, 0.9, 0.9, n_slots=5)
    sweep = runs_dir / "sweeps" / "seeds" / "toy"
    sweep.mkdir(parents=True)
    config = _config(n_slots=5, seed=0) | {"sweep": "seeds"}
    config["hydra"] = {
        "sweep": {"dir": "${paths.runs_dir}/sweeps/${sweep}/${exp_name}"},
        "overrides": {"task": ["+sweep=seeds", "seed=0,1"]},  # the command line wins over params
        "sweeper": {"params": {"seed": "0,1,2,3,4"}},
        "runtime": {"choices": {"sweep": "seeds"}},
    }
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    runs, planned = loaders.load_local(sweep)
    assert planned == [0, 1]
    assert sorted((run.exp_id, run.seed) for run in runs) == [("toy-aaaa0001", 0), ("toy-aaaa0001", 1)]


def test_a_swept_global_group_frees_the_keys_its_options_set() -> None:
    """+method=videosaur,slotcontrast (a `_global_` group) changes loss, decoder and grouper keys:
    those keys may differ between the sweep's runs; a plain group or key is not such a group."""
    hydra = OmegaConf.create({"runtime": {"config_sources": [{"path": str(CONF), "schema": "file"}]}})
    keys = loaders._global_group_keys(hydra, "method", ["videosaur", "slotcontrast"])
    assert {"loss", "decoder", "grouper.initializer", "grouper.use_mlp", "exp_name"} <= set(keys)
    assert "dataset" not in keys and "encoder" not in keys  # the data and encoder stay shared
    presets = loaders._global_group_keys(hydra, "experiment", ["slotcontrast/movi_e"])  # + its base
    assert {"encoder", "grouper.n_slots", "grouper.use_mlp", "trainer.max_steps"} <= set(
        presets
    )  # + its base
    assert loaders._global_group_keys(hydra, "loss", ["videosaur", "slotcontrast"]) is None
    assert loaders._global_group_keys(hydra, "seed", [0, 1]) is None
