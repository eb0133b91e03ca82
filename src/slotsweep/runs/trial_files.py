"""The files through which a sweeper and a training job talk, in the job's run dir.

The sweeper never opens the study's storage from a job, and a job never opens it at all: on a
shared cluster disk (NFS, Lustre) SQLite's locking is unreliable, and many jobs writing one
database would contend. Instead each job appends its validation objective to `validation.jsonl`
(written by slotsweep.training.trial_reporter.TrialReporter), the sweeper reads it and reports to the
study, and a sweeper that prunes the trial writes `stop_request`, which the job reads at its next
validation. Plain appends and a file's existence work the same on every file system.
"""

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "REPORTS_FILE",
    "STOP_FILE",
    "append_report",
    "clear_stop_request",
    "read_report_lines",
    "read_reports",
    "reported_cost",
    "request_stop",
    "stop_requested",
]

# one line per validation: {"step": int, "values": [float, ...], "device_seconds": float}, the
# last the run's cost so far (a sweep's budget counts running jobs by it)
REPORTS_FILE = "validation.jsonl"
STOP_FILE = "stop_request"  # exists: the sweeper pruned the trial; stop at the next validation


def append_report(
    directory: Path, step: int, values: list[float], device_seconds: float | None = None
) -> None:
    """Append one validation's objective values (and the run's device-seconds so far); one short
    line, so one write() per line."""
    entry: dict[str, Any] = {"step": step, "values": values}
    if device_seconds is not None:
        entry["device_seconds"] = device_seconds
    line = json.dumps(entry) + "\n"
    with (Path(directory) / REPORTS_FILE).open("a") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())  # other nodes read it: do not leave it in this node's page cache


def read_report_lines(directory: Path) -> dict[int, dict[str, Any]]:
    """{step: its report line} of the run so far; a step validated again (after a resume) keeps
    its last line, and a line still being written is left for the next read."""
    path = Path(directory) / REPORTS_FILE
    if not path.is_file():
        return {}
    reports: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        reports[int(entry["step"])] = entry
    return reports


def read_reports(directory: Path) -> dict[int, list[float]]:
    """{step: objective values} of the run so far (read_report_lines' values)."""
    return {step: [float(v) for v in entry["values"]] for step, entry in read_report_lines(directory).items()}


def reported_cost(directory: Path) -> float:
    """The device-seconds a running job reported at its last validation (0 before the first)."""
    costs = [entry.get("device_seconds") for entry in read_report_lines(directory).values()]
    return max((float(c) for c in costs if c is not None), default=0.0)


def request_stop(directory: Path, reason: str) -> None:
    (Path(directory) / STOP_FILE).write_text(reason + "\n")


def stop_requested(directory: Path) -> bool:
    return (Path(directory) / STOP_FILE).is_file()


def clear_stop_request(directory: Path) -> None:
    """Done with a stop request (the run stopped, or a new run of the config starts): a later run of
    the same config trains on."""
    (Path(directory) / STOP_FILE).unlink(missing_ok=True)
