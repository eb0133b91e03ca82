"""Progress output: plain lines without carriage returns into a file, a max_steps bar on a terminal;
each library line once; a grid's last line says where its runs are."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRESS_ON = ["trainer.enable_progress_bar=true", "logger=none"]  # after debug_overrides, which turn it off


def test_file_gets_plain_lines_every_n_steps(cli, tmp_path) -> None:
    log = tmp_path / "train.log"
    process = cli.start("train.py", *PROGRESS_ON, "trainer.log_every_n_steps=2", log=log)
    assert process.wait() == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "\r" not in text
    steps = re.findall(r"^step (\d+)/4 \| [\d.]+ steps/s \| ETA [\d:?]+ \| .*train/loss=", text, re.MULTILINE)
    assert steps == ["2", "4"], text[-3000:]  # every 2 steps, the total is max_steps
    validated = re.findall(r"^validation at step (\d): .*val/video_fg_ari=", text, re.MULTILINE)
    assert validated == ["2", "4"], text[-3000:]
    assert "final validation" not in text  # step 4 validated: the result is that validation's
    step_line = re.search(r"^step 4/4 .*\| last (val/.*)$", text, re.MULTILINE)
    assert step_line, text[-3000:]  # the loss and the bar's metrics; the validation line has all
    keys = [pair.split("=")[0] for pair in step_line[1].split()]
    assert keys == ["val/loss", "val/video_fg_ari", "val/video_mbo"]


def test_terminal_gets_a_bar_over_max_steps(cli) -> None:
    controller, terminal = pty.openpty()
    # a fresh pty is 0 columns wide, and tqdm then draws an empty bar; give it a terminal's size
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 150, 0, 0))
    process = subprocess.Popen(
        cli.command("train.py", *PROGRESS_ON), cwd=REPO, env=cli.env, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    text = b"".join(chunks).decode(errors="replace")
    assert process.wait() == 0, text[-3000:]
    assert re.search(r"train: 100%\S* 4/4", text), text[-3000:]  # the bar counts steps up to max_steps
    assert not re.search(r"^step \d+/4 \|", text, re.MULTILINE)  # no plain lines on a terminal


def test_a_grid_ends_with_its_runs_and_each_library_line_comes_once(cli, tmp_path) -> None:
    """A one-job grid on a machine with SLURM installed (an `srun` on PATH), outside any SLURM job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {**cli.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    grid = replace(cli, train_args=[])  # Hydra takes -m before the overrides
    result = grid.run("train.py", "-m", *cli.train_args, "logger=none", "seed=0", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (sweep_dir,) = (cli.runs_dir / "multirun").iterdir()
    assert [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]  # no empty 0/ for the job
    aggregate = f"python src/aggregate.py {sweep_dir}"
    assert result.stdout.strip().splitlines()[-1].endswith(aggregate), result.stdout[-2000:]
    tabulated = cli.run("aggregate.py", str(sweep_dir), "--out", str(tmp_path / "table"))
    (run_dir,) = cli.runs_dir.glob("*/seed0")
    assert tabulated.returncode == 0 and run_dir.parent.name in tabulated.stdout, tabulated.stderr[-2000:]

    assert output.count("GPU available:") == 1, output[-3000:]  # not again as "INFO: GPU available"
    assert not re.search(r"^INFO: ", output, re.MULTILINE), output[-3000:]
    assert "Tip:" not in output and "litlogger" not in output and "litmodels" not in output
    assert "srun" not in output  # Lightning's SLURM hint is for runs inside an allocation
