"""`train.py --help` and a run that logs to csv import neither W&B nor Optuna (python -X importtime)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _importtime(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-X", "importtime", "src/train.py", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def _imported(stderr: str, package: str) -> bool:
    """Whether `python -X importtime` output shows `package` loaded: its submodules are listed. (A
    refused `import wandb`, as lean_timm makes timm's, is listed too, but alone.)"""
    return re.search(rf"\|\s+{re.escape(package)}\.", stderr) is not None


def test_help_imports_no_heavy_library(cli) -> None:
    result = _importtime(cli.env, "--help")
    assert result.returncode == 0 and "Powered by Hydra" in result.stdout, result.stderr[-2000:]
    for module in ("wandb", "optuna", "torch", "lightning"):
        assert not _imported(result.stderr, module), f"train.py --help imports {module}"


def test_csv_run_imports_neither_wandb_nor_optuna(cli, two_step_overrides: list[str]) -> None:
    result = _importtime(cli.env, *two_step_overrides, "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _imported(result.stderr, "lightning") and _imported(result.stderr, "timm")  # it did train
    for module in ("wandb", "optuna"):
        assert not _imported(result.stderr, module), f"a csv run imports {module}"
