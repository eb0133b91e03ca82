"""The sweep replay (benchmarks/bench_sweeps_replay.py) on the committed curve pools, a few draws.

What `make bench` prints must come from the committed curves in seconds; these check that it runs
on every pool, that its baselines are what they claim, and that a missing pool is one error line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPLAY = REPO / "benchmarks" / "bench_sweeps_replay.py"
POOLS = sorted((REPO / "benchmarks" / "results").glob("sweeps_curves*.json"))


def test_every_committed_pool_replays_and_the_full_sweep_is_its_own_target():
    assert POOLS, "no recorded curve pool is committed in benchmarks/results/"
    run = subprocess.run(
        [sys.executable, str(REPLAY), "--draws", "3", "--json"], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert {row["pool"] for row in rows} == {path.name for path in POOLS}
    for pool in POOLS:
        by_policy = {row["policy"]: row for row in rows if row["pool"] == pool.name}
        assert len(by_policy) >= 10
        full = by_policy["none (full sweep)"]
        assert (full["fraction"], full["p_within"], full["regret"]) == (1.0, 1.0, 0.0)
        for name, row in by_policy.items():
            assert row["fraction"] > 0.0, name
            assert 0.0 <= row["p_within_mean_std"] <= row["p_within"] <= 1.0, name
        # 3 of 12 configurations, every seed to the end: a quarter of the sweep, give or take the
        # configurations' different costs per step
        assert 0.2 < by_policy["random 3 trained fully"]["fraction"] < 0.3


def test_a_missing_pool_is_one_error_line(tmp_path: Path):
    missing = tmp_path / "sweeps_curves_none.json"
    run = subprocess.run(
        [sys.executable, str(REPLAY), "--curves", str(missing)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: no recorded pool at {missing}: record one first with benchmarks/record_sweep_curves.py, "
        "or give --curves <file>"
    ]
    assert not list(tmp_path.iterdir())
