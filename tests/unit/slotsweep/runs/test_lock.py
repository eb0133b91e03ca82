"""run_lock.py: one holder per run dir, a refusal that names the holder, set-aside under the lock."""

import subprocess
import sys
from pathlib import Path

import pytest

from slotsweep.errors import SlotsweepError
from slotsweep.runs.lock import LOCK_FILE, RunDirLock, claim_run_dir


def test_second_holder_is_refused_and_named(tmp_path: Path):
    refused = pytest.raises(SlotsweepError, match=r"being trained by pid \d+ on .*another run_dir")
    with RunDirLock(tmp_path), refused:
        RunDirLock(tmp_path).acquire()
    with RunDirLock(tmp_path):  # released: the next one gets it
        pass


def test_lock_of_a_killed_holder_is_free(tmp_path: Path):
    """A holder killed by SIGKILL leaves the file, not the lock."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from slotsweep.runs.lock import RunDirLock; import time; "
            f"RunDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SlotsweepError, match=f"pid {holder.pid}"):
        RunDirLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK_FILE).is_file()
    with RunDirLock(tmp_path):
        pass


def test_set_aside_moves_the_old_run_and_locks_a_fresh_dir(tmp_path: Path):
    run = tmp_path / "seed0"
    run.mkdir()
    (run / "results.json").write_text("{}")
    lock = claim_run_dir(run, set_aside=True, rank=0)
    assert sorted(p.name for p in (tmp_path / "seed0.replaced1").iterdir()) == [LOCK_FILE, "results.json"]
    assert [p.name for p in run.iterdir()] == [LOCK_FILE]
    with pytest.raises(SlotsweepError):
        claim_run_dir(run, set_aside=True, rank=0)  # a twin cannot move a held dir away
    assert (run / LOCK_FILE).is_file() and not (tmp_path / "seed0.replaced2").exists()
    lock.release()
    assert claim_run_dir(run, set_aside=False, rank=1) is None  # DDP ranks > 0 share rank 0's claim
