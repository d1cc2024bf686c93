"""Interruptions, divergence and bad input never lose work (run as a user would: subprocesses)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_config

from dlresearch import checkpoint, train
from dlresearch.metrics import atomic_write_text, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
# A default-config run long enough to be interrupted at chosen points.
RUN_FLAGS = (
    "--config=configs/default.py",
    "--config.parallel.mode=single",
    "--config.train.steps=3000",
    "--config.train.steps_per_call=25",
    "--config.train.log_every_steps=25",
    "--config.eval.every_steps=500",
    "--config.checkpoint.every_steps=500",
)


def _main(workdir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "dlresearch.main", f"--workdir={workdir}", *flags]


def _env() -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def _run(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _main(workdir, *flags), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )


def _last_step(workdir: Path) -> int:
    records = read_jsonl(workdir / "metrics.jsonl")
    return records[-1]["step"] if records else 0


def _log_of(workdir: Path) -> Path:
    """Where the run started by `_start_and_wait` in `workdir` logs (beside it, not inside)."""
    return workdir.with_name(workdir.name + ".log")


def _start_and_wait(workdir: Path, step: int) -> subprocess.Popen:
    """Start a run and return once its metrics reach `step` (it keeps running)."""
    with _log_of(workdir).open("a") as log:
        proc = subprocess.Popen(
            _main(workdir, *RUN_FLAGS),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 240
    while _last_step(workdir) < step:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.01)
    return proc


def _comparable(workdir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "examples_per_sec"}
        for r in read_jsonl(workdir / "metrics.jsonl")
    ]


def _final_params(workdir: Path) -> dict:
    config = small_config()  # only shapes matter for the restore template
    config.model.width = 128
    config.train.batch_size = 64
    ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=2)
    params = jax.device_get(train.Trainer(config).restore(ckpt).state.params)
    ckpt.close()
    return params


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    assert _run(workdir, *RUN_FLAGS).returncode == 0
    # Complete files, so that comparisons with it can fail: every step logged, every evaluation.
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == list(range(25, 3001, 25))
    assert [r["step"] for r in records if "test/loss" in r] == list(range(500, 3001, 500))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2500", "3000"]
    return workdir


def test_sigkill_at_several_points_then_resume_is_the_same_run(
    tmp_path: Path, uninterrupted: Path
) -> None:
    # Early (before the first checkpoint), mid-epoch, and right after a checkpoint save started.
    for step in (25, 1250, 2000):
        proc = _start_and_wait(tmp_path, step)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _last_step(tmp_path) < 3000, "the run finished before the kill"
    result = _run(tmp_path, *RUN_FLAGS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _comparable(tmp_path) == _comparable(uninterrupted)
    jax.tree.map(
        np.testing.assert_array_equal, _final_params(tmp_path), _final_params(uninterrupted)
    )


def test_sigterm_saves_a_checkpoint_and_exits_128_plus_the_signal(
    tmp_path: Path, uninterrupted: Path
) -> None:
    # The loop reads the signal flag once per chunk boundary and forces the save of that step, so
    # wherever SIGTERM lands the last logged step is on disk (each point of the loop is tested
    # deterministically in-process in test_guards.py).
    proc = _start_and_wait(tmp_path, 750)
    proc.send_signal(signal.SIGTERM)
    # 128 + 15, as a shell reports a killed process, so a loop over runs stops too.
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = _last_step(tmp_path)
    assert stopped_at < 3000
    # The run's log says which step the signal reached and which checkpoint it saved.
    log = _log_of(tmp_path).read_text()[-3000:]
    assert str(stopped_at) in os.listdir(tmp_path / "checkpoints"), log
    assert _run(tmp_path, *RUN_FLAGS).returncode == 0
    assert _comparable(tmp_path) == _comparable(uninterrupted)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, uninterrupted: Path
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    for path in (tmp_path / "checkpoints" / "3000").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    result = _run(tmp_path, *RUN_FLAGS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoint at step 3000" in result.stderr and "unreadable" in result.stderr
    # Set aside, not deleted: the log names where it went.
    (moved,) = (tmp_path / "checkpoints_damaged").iterdir()
    assert moved.name.startswith("3000-") and str(moved) in result.stderr
    assert _comparable(tmp_path) == _comparable(uninterrupted)


def test_no_readable_checkpoint_is_an_error_naming_the_directory(
    tmp_path: Path, uninterrupted: Path
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    for path in (tmp_path / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    result = _run(tmp_path, *RUN_FLAGS)
    assert result.returncode == 2
    assert f"no readable checkpoint in {tmp_path / 'checkpoints'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_divergence_is_recorded_and_stops_the_run(tmp_path: Path) -> None:
    result = _run(tmp_path, *RUN_FLAGS, "--config.optim.name=sgd", "--config.optim.lr=1e9")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    records = read_jsonl(tmp_path / "metrics.jsonl")
    diverged = [r for r in records if r.get("diverged")]
    assert len(diverged) == 1 and diverged[0]["step"] < 25
    assert records[-1]["step"] < 3000  # stopped


def test_halt_on_nan_false_keeps_going(tmp_path: Path) -> None:
    flags = ("--config.optim.name=sgd", "--config.optim.lr=1e9", "--config.halt_on_nan=False")
    result = _run(tmp_path, *RUN_FLAGS, *flags, "--config.train.steps=100")
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == 100
    assert any(r.get("train/loss") == "nan" for r in records)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--config.model.nosuch=1",), "nosuch"),
        (("--config.train.steps=many",), "train.steps"),
        (
            ("--config.model.activation=relu6",),
            "model.activation='relu6' is not known; allowed values:",
        ),
        (
            ("--config.parallel.mode=shard_map", "--config.train.batch_size=30"),
            "not divisible by the 4 devices",
        ),
        (("--config.data.name=mnist", "--config.data.dir=/nonexistent"), "/nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, flags: tuple, message: str
) -> None:
    env = {**_env(), "JAX_NUM_CPU_DEVICES": "4"}
    result = subprocess.run(
        _main(tmp_path / "run", "--config=configs/default.py", *flags),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_atomic_write_leaves_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    atomic_write_text(path, "old")

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"


def test_same_config_twice_gives_identical_metrics_files(
    tmp_path: Path, uninterrupted: Path
) -> None:
    assert _run(tmp_path, *RUN_FLAGS).returncode == 0
    assert _comparable(tmp_path) == _comparable(uninterrupted)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (uninterrupted / "config.json").read_text()
    )
