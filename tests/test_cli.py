"""The console scripts run the same modules as `python -m` (checked without installing)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(function: str, *args: str) -> subprocess.CompletedProcess:
    command = f"from dlresearch import cli; cli.{function}()"
    return subprocess.run(
        [sys.executable, "-c", command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_experiment_names_the_experiments() -> None:
    result = run_script("experiment", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("error: dlresearch-experiment NAME [flags]: NAME='nope'")
    assert "activations, all, batchnorm, initialization, optimizers, residual" in result.stderr


def test_experiment_runs_the_named_script() -> None:
    # The script's own flag parser answers: the preset is checked before any work.
    result = run_script("experiment", "batchnorm", "--preset=nope", "--workdir=/nonexistent")
    assert result.returncode == 2 and "--preset" in result.stderr and "nope" in result.stderr


def test_train_runs_main() -> None:
    result = run_script("train", "--config=configs/default.py")
    assert result.returncode == 2 and "workdir" in result.stderr
