"""Two processes of one run on 127.0.0.1 (2 CPU devices each): a signal to one stops both at the
same step, and processes that do not run the same config are refused before any work."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from processes import finish, start_processes

from dlresearch.metrics import read_jsonl


def _start(workdir: Path, *process_1_flags: str, steps: int = 30) -> list[subprocess.Popen]:
    """Both processes of a run of configs/default.py (`process_1_flags` on process 1 only)."""
    return start_processes(
        workdir, lambda i: process_1_flags if i == 1 else (), steps=steps, every=100
    )


def _test_loss(workdir: Path) -> float:
    return [r for r in read_jsonl(workdir / "metrics.jsonl") if "test/loss" in r][-1]["test/loss"]


STEPS = 1000  # long enough to signal mid-run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    procs = _start(workdir, steps=STEPS)
    errors = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], errors
    return workdir


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_one_process_stops_both_at_one_step_and_the_resumed_run_is_the_same(
    tmp_path: Path, uninterrupted: Path, sig: int
) -> None:
    steps = STEPS
    procs = _start(tmp_path / "run", steps=steps)
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not (metrics.exists() and read_jsonl(metrics)) and procs[1].poll() is None:
        time.sleep(0.05)
    procs[1].send_signal(sig)
    errors = finish(procs)
    assert [p.returncode for p in procs] == [128 + sig] * 2, errors
    stops = [re.findall(rf"stopped by signal {sig} at step (\d+)", e) for e in errors]
    assert stops[0] == stops[1] and len(stops[0]) == 1, errors
    step = int(stops[0][0])
    assert step < steps and str(step) in os.listdir(tmp_path / "run" / "checkpoints")

    procs = _start(tmp_path / "run", steps=steps)
    resumed = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], resumed
    assert _test_loss(tmp_path / "run") == _test_loss(uninterrupted)


@pytest.mark.parametrize(
    ("flags", "fields"),
    [
        (("--config.optim.lr=0.1",), ["optim.lr: 0.001 -> 0.1"]),
        (("--config.train.steps=20",), ["train.steps: 30 -> 20"]),
        (
            ("--config.model.width=64", "--config.data.dir=elsewhere"),
            ["model.width: 128 -> 64"],
        ),
    ],
    ids=["lr", "steps", "width-and-a-data-dir"],
)
def test_processes_with_different_configs_exit_2_on_both_naming_the_fields(
    tmp_path: Path, flags: tuple[str, ...], fields: list[str]
) -> None:
    procs = _start(tmp_path / "run", *flags)
    errors = finish(procs, timeout=180)
    assert [p.returncode for p in procs] == [2, 2], errors
    for error in errors:
        lines = [line for line in error.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "Traceback" not in error, error
        assert re.findall(r"process 1 ([\w.]+: [^;]+)", lines[0]) == fields, lines[0]
    assert not (tmp_path / "run").exists()
