"""`python src/aggregate.py SOURCE [--by k1,k2] [--metrics m1,m2] [--best] [--mix-protocols] [--out DIR]`.

Loads the runs (loaders.py), summarises them over seeds (statistics.py), adds the published rows
of the same protocol (published.py), prints the Markdown table and writes table.md/.csv/.tex
(tables.py) and PNG plots (plots.py); see docs/wandb.md and the README's "Reporting results".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

from slotsweep.cli import report_errors
from slotsweep.metric_names import AGGREGATE_KEYS
from slotsweep.results.loaders import load_local, load_wandb
from slotsweep.results.plots import plot_curves, plot_optuna, plot_params
from slotsweep.results.published import BASELINES_DIR, load_published
from slotsweep.results.statistics import aggregate
from slotsweep.results.tables import format_csv, format_latex, format_markdown

__all__ = ["main"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aggregate.py", description="Mean ± std over seeds of each experiment, as tables and plots."
    )
    parser.add_argument("source", help="runs dir, Hydra multirun dir, or wandb:<entity>/<project>")
    parser.add_argument("--by", help="group by these config keys (comma-separated) instead of exp_id")
    parser.add_argument("--metrics", default=",".join(AGGREGATE_KEYS), help="comma-separated metric keys")
    parser.add_argument(
        "--best", action="store_true", help="each run's best validation value, not its final one"
    )
    parser.add_argument(
        "--mix-protocols",
        action="store_true",
        help="allow metrics measured under different protocols in one column (listed above the table)",
    )
    parser.add_argument(
        "--baselines",
        type=Path,
        default=BASELINES_DIR,
        help="dir of published-baseline YAML files (default: conf/baselines)",
    )
    parser.add_argument(
        "--out", type=Path, help="output dir (default: <source>/aggregate or ./aggregate/<project>)"
    )
    return parser.parse_args(argv)


@report_errors
def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # files only: cluster login nodes have no display
    args = _parse_args(argv)
    if args.source.startswith("wandb:"):
        project = args.source.removeprefix("wandb:")
        runs, planned = load_wandb(project), []
        out = args.out or Path("aggregate") / project.replace("/", "_")
    else:
        source = Path(args.source)
        runs, planned = load_local(source)
        out = args.out or source / "aggregate"
    by = [k for k in args.by.split(",") if k] if args.by else None
    metrics = [m for m in args.metrics.split(",") if m]
    table = aggregate(
        runs,
        metrics,
        by=by,
        planned_seeds=planned,
        use_best=args.best,
        mix_protocols=args.mix_protocols,
        published=load_published(args.baselines),
    )
    (out / "plots").mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(table)
    (out / "table.md").write_text(markdown)
    (out / "table.csv").write_text(format_csv(table))
    (out / "table.tex").write_text(format_latex(table))
    print(markdown)
    for note in table.notes:
        if note.startswith("warning:"):
            print(note, file=sys.stderr)
    plots = plot_params(table, out / "plots")
    if not args.source.startswith("wandb:"):
        plots += plot_optuna(Path(args.source), out / "plots")
        plots += plot_curves(Path(args.source), out / "plots")
    print(f"wrote {out}/table.md, table.csv, table.tex and {len(plots)} plots in {out}/plots")
    return 0
