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
    "read_reports",
    "request_stop",
    "stop_requested",
]

REPORTS_FILE = "validation.jsonl"  # one line per validation: {"step": int, "values": [float, ...]}
STOP_FILE = "stop_request"  # exists: the sweeper pruned the trial; stop at the next validation


def append_report(directory: Path, step: int, values: list[float]) -> None:
    """Append one validation's objective values; one short line, so one write() per line."""
    line = json.dumps({"step": step, "values": values}) + "\n"
    with (Path(directory) / REPORTS_FILE).open("a") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())  # other nodes read it: do not leave it in this node's page cache


def read_reports(directory: Path) -> dict[int, list[float]]:
    """{step: objective values} of the run so far; a step validated again (after a resume) keeps
    its last values, and a line still being written is left for the next read."""
    path = Path(directory) / REPORTS_FILE
    if not path.is_file():
        return {}
    reports: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        reports[int(entry["step"])] = [float(v) for v in entry["values"]]
    return reports


def request_stop(directory: Path, reason: str) -> None:
    (Path(directory) / STOP_FILE).write_text(reason + "\n")


def stop_requested(directory: Path) -> bool:
    return (Path(directory) / STOP_FILE).is_file()


def clear_stop_request(directory: Path) -> None:
    """Done with a stop request (the run stopped, or a new run of the config starts): a later run of
    the same config trains on."""
    (Path(directory) / STOP_FILE).unlink(missing_ok=True)
