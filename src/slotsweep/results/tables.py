"""The aggregation table as Markdown (printed), CSV (full precision) and LaTeX (booktabs).

Cells are mean ± sample std over a group's completed seeds, with the Student-t 95% CI beside them;
the best group per column is bold where its CI clears the runner-up's. Every format opens with the
protocol of each column set, and published rows say so. See slotsweep.results.statistics.
"""

from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slotsweep.results.records import Group, Table

__all__ = ["format_csv", "format_latex", "format_markdown"]


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _cells(group: Group, metric: str) -> tuple[str, str]:
    stat = group.stats[metric]
    if stat.n == 0:
        return "n/a", "n/a"
    mean_std = _fmt(stat.mean) if stat.n == 1 else f"{_fmt(stat.mean)} ± {_fmt(stat.std)}"
    if group.published is None and stat.n != len(group.seeds):
        mean_std += f" (n={stat.n})"
    ci = "n/a" if stat.n < 2 else f"[{_fmt(stat.ci_low)}, {_fmt(stat.ci_high)}]"
    return mean_std, ci


def _missing_text(group: Group) -> str:
    parts = [
        str(seed) if why == "absent" else f"{seed} ({why})" for seed, why in sorted(group.missing.items())
    ]
    return ", ".join(parts) or "-"


def _n(group: Group) -> str:
    return "published" if group.published is not None else str(len(group.seeds))


def format_markdown(table: Table) -> str:
    header = ["group", *table.keys, "n", "missing seeds"]
    for metric in table.metrics:
        header += [f"{metric} (mean ± std)", f"{metric} 95% CI"]
    lines = [f"{line}  " for line in table.protocols] + [""] if table.protocols else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in table.groups:
        row = [group.label, *(str(group.params[k]) for k in table.keys), _n(group), _missing_text(group)]
        for metric in table.metrics:
            mean_std, ci = _cells(group, metric)
            if table.best.get(metric) == group.label:
                mean_std = f"**{mean_std}**"
            row += [mean_std, ci]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "n: completed seeds, averaged. Bold: best group per column, only where its 95% CI does not "
        "overlap the runner-up's. Failed or absent seeds are listed under missing seeds, never "
        "averaged in. Published rows: the paper's number, under the same protocol."
    )
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def format_csv(table: Table) -> str:
    """Full precision, one row per group: for spreadsheets and scripts."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["group", *table.keys, "n", "seeds", "missing_seeds"]
    for metric in table.metrics:
        header += [f"{metric} {part}" for part in ("n", "mean", "std", "ci95_low", "ci95_high", "best")]
    writer.writerow([*header, "protocols"])
    for group in table.groups:
        row = [group.label, *(group.params[k] for k in table.keys), _n(group)]
        row += [" ".join(map(str, group.seeds)), _missing_text(group)]
        for metric in table.metrics:
            s = group.stats[metric]
            row += [s.n, s.mean, s.std, s.ci_low, s.ci_high, table.best.get(metric) == group.label]
        writer.writerow([*row, " | ".join(table.protocols)])
    return out.getvalue()


def _tex(text: Any) -> str:
    escapes = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
    escapes |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(escapes.get(char, char) for char in str(text))


def format_latex(table: Table) -> str:
    """A booktabs tabular: mean ± std (best in bold) and the 95% CI per metric."""
    n_cols = 2 + len(table.keys) + 2 * len(table.metrics)
    header = ["group", *table.keys, "n"]
    for metric in table.metrics:
        header += [metric, "95\\% CI"]
    lines = [
        "% \\usepackage{booktabs}; written by src/aggregate.py",
        *(f"% {line}" for line in table.protocols),
        "\\begin{tabular}{" + "l" * (1 + len(table.keys)) + "r" * (n_cols - 1 - len(table.keys)) + "}",
        "\\toprule",
        " & ".join(_tex(h) if h != "95\\% CI" else h for h in header) + " \\\\",
        "\\midrule",
    ]
    for group in table.groups:
        row = [_tex(group.label), *(_tex(group.params[k]) for k in table.keys), _n(group)]
        for metric in table.metrics:
            s = group.stats[metric]
            if s.n == 0:
                row += ["n/a", "n/a"]
                continue
            cell = _fmt(s.mean) if s.n == 1 else f"{_fmt(s.mean)} \\pm {_fmt(s.std)}"
            if table.best.get(metric) == group.label:
                cell = f"\\mathbf{{{cell}}}"
            row += [f"${cell}$", "n/a" if s.n < 2 else f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"]
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
