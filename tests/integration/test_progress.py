"""Progress output: plain lines without carriage returns into a file, a max_steps bar on a terminal."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
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
