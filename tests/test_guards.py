"""Nothing lost, no traceback: the workdir lock, config validation, signals at every point of the
loop, damaged or unreadable checkpoints, a full disk, and damaged metrics files."""

import contextlib
import dataclasses
import errno
import hashlib
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import small_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlresearch import checkpoint, main, models, optim, train
from dlresearch import config as config_lib
from dlresearch import workdir as workdir_lib
from dlresearch.errors import ConfigError, Interrupted
from dlresearch.metrics import MetricWriter, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` (names and contents), or {} when `path` does not exist."""
    if not path.exists():
        return {}
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    } | {str(d.relative_to(path)) + "/": "" for d in path.rglob("*") if d.is_dir()}


def _comparable(workdir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "examples_per_sec"}
        for r in read_jsonl(workdir / "metrics.jsonl")
    ]


def _restored(workdir: Path, config=None) -> checkpoint.Restored:
    config = config or small_config()
    with checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=2) as ckpt:
        return jax.device_get(train.Trainer(config).restore(ckpt))


def _restore(workdir: Path, config=None) -> train.TrainState:
    return _restored(workdir, config).state


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _assert_same_run(workdir: Path, reference: Path) -> None:
    assert _comparable(workdir) == _comparable(reference)
    jax.tree.map(
        np.testing.assert_array_equal, _restore(workdir).params, _restore(reference).params
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = train.run(small_config(), str(workdir))
    assert result.step == 40 and not result.stopped_early
    # Complete files: every logged step, both evaluations, both checkpoints, no lock left behind.
    records = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in records if "test/loss" in r] == [20, 40]
    assert _steps(workdir) == [20, 40]
    assert not (workdir / workdir_lib.LOCK_FILE).exists()
    return workdir


# -- one run per workdir ---------------------------------------------------------------------------
def test_a_locked_workdir_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with workdir_lib.lock(str(tmp_path)):
        host = socket.gethostname()
        holder = rf"in use by pid {os.getpid()} on {host} since 20"
        with pytest.raises(ConfigError, match=holder), workdir_lib.lock(str(tmp_path)):
            pass
    with workdir_lib.lock(str(tmp_path)):  # released: free again
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_dead_holders_lock_does_not_block(tmp_path: Path) -> None:
    code = "import sys, time; from dlresearch import workdir\nwith workdir.lock(sys.argv[1]):\n"
    code += "    print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "held\n"
    with pytest.raises(ConfigError, match=f"pid {proc.pid} "), workdir_lib.lock(str(tmp_path)):
        pass
    proc.kill()
    proc.wait()
    with workdir_lib.lock(str(tmp_path)):  # the OS released it; the stale file is reused
        pass


def test_run_on_a_locked_workdir_is_one_line_exit_2_and_changes_nothing(
    tmp_path: Path, uninterrupted: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.copytree(uninterrupted, tmp_path / "run")
    with workdir_lib.lock(str(tmp_path / "run")):
        before = _tree_digest(tmp_path / "run")
        with pytest.raises(SystemExit) as exit_:
            main.run_or_fail(small_config(), str(tmp_path / "run"))
        assert _tree_digest(tmp_path / "run") == before
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'run'} is in use by pid ")


def test_overwrite_keeps_the_lock_and_empties_the_rest(tmp_path: Path, uninterrupted: Path) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    (tmp_path / "notes.txt").write_text("old")
    train.run(small_config(**{"train.steps": 20}), str(tmp_path), overwrite=True)
    assert not (tmp_path / "notes.txt").exists()
    assert _steps(tmp_path) == [20]


# -- every field validated before anything is written ---------------------------------------------
def _outside(rule: config_lib.Rule) -> st.SearchStrategy:
    """Values of a field's type that `rule` refuses."""
    if rule.kind == "choice":
        return st.text(max_size=12).filter(lambda s: s not in rule.choices())
    if rule.kind == "int":
        return st.integers(max_value=int(rule.low) - 1)
    bad = [st.sampled_from([math.nan, math.inf, -math.inf])]
    if rule.low > -math.inf:
        below = st.floats(max_value=rule.low, allow_nan=False, allow_infinity=False)
        bad.append(below.filter(lambda x: x < rule.low or rule.low_open))
    if rule.high < math.inf:
        above = st.floats(min_value=rule.high, allow_nan=False, allow_infinity=False)
        bad.append(above.filter(lambda x: x > rule.high or rule.high_open))
    return st.one_of(bad)


def _bad_value(field: str) -> st.SearchStrategy:
    rule = config_lib.RULES[field]
    if not rule.sequence:
        return _outside(rule)
    one = _outside(dataclasses.replace(rule, sequence=False))
    good = {"int": 1, "float": 0.5, "choice": "lr"}[rule.kind]
    return st.tuples(one, st.integers(0, 2)).map(lambda t: (good,) * t[1] + (t[0],))


# Fields whose every value of their type is allowed (booleans, free text, names data.load checks
# later): nothing to draw. diagnostics.layer is drawn with the cross-field cases below.
_FREE = {
    f
    for f, r in config_lib.RULES.items()
    if r.kind in ("bool", "str") or (r.kind == "int" and r.low == -math.inf)
}


def _single_field_case(field: str) -> st.SearchStrategy:
    return _bad_value(field).map(lambda value: {field: value})


MODEL_NAMES = {
    "model.name": models.MODELS,
    "model.activation": models.ACTIVATIONS,
    "model.kernel_init": models.INITIALIZERS,
    "model.normalization": models.NORMALIZATIONS,
    "model.cnn_preset": models.CNN_PRESETS,
}

_CROSS_FIELD_CASES = st.one_of(
    st.integers(2, 50).map(
        lambda layer: {"diagnostics.every_steps": 10, "diagnostics.layer": layer}
    ),
    st.integers(-50, -3).map(
        lambda layer: {"diagnostics.every_steps": 10, "diagnostics.layer": layer}
    ),
    st.integers(32, 10**6).map(
        lambda unit: {"diagnostics.every_steps": 10, "diagnostics.unit": unit}
    ),
    st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"]).map(
        lambda name: {"optim.name": name, "sweep.momentum": (0.5, 0.9)}
    ),
    # optim.name is free text that optim.build checks: a registered name or a plug-in.
    st.text(max_size=12)
    .filter(lambda s: s not in optim.OPTIMIZERS and not s.startswith("optax.") and ":" not in s)
    .map(lambda name: {"optim.name": name}),
    st.integers(1, 4).map(lambda n: {"parallel.num_processes": n, "parallel.process_id": n}),
    # The model's names are free text in the config that models.build checks.
    st.sampled_from(sorted(MODEL_NAMES)).flatmap(
        lambda field: (
            st.text(min_size=1, max_size=12)
            .filter(lambda s, field=field: s not in MODEL_NAMES[field])
            .map(lambda s, field=field: {field: s})
        )
    ),
    st.sampled_from([{"model.name": "resnet_cifar", "model.depth": 21}]),
)
BAD_CASES = st.one_of(
    st.sampled_from(sorted(set(config_lib.RULES) - _FREE)).flatmap(_single_field_case),
    _CROSS_FIELD_CASES,
)


def _fields(section: dict, prefix: str = "") -> set[str]:
    return set().union(
        *(
            _fields(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
            for k, v in section.items()
        )
    )


def test_every_config_field_has_a_rule() -> None:
    assert set(config_lib.RULES) == _fields(config_lib.base_config().to_dict())


def _refused(overrides: dict, workdir: Path) -> str:
    """Run `overrides` through the command line's entry; its stderr, asserting exit code 2."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        main.run_or_fail(small_config(**overrides), str(workdir))
    assert exit_.value.code == 2
    return stderr.getvalue()


@pytest.fixture(scope="module")
def used(tmp_path_factory: pytest.TempPathFactory, uninterrupted: Path) -> Path:
    workdir = tmp_path_factory.mktemp("used")
    shutil.copytree(uninterrupted, workdir, dirs_exist_ok=True)
    return workdir


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(overrides=BAD_CASES)
def test_bad_values_exit_2_in_one_line_and_write_nothing(
    overrides: dict, tmp_path: Path, used: Path
) -> None:
    before = _tree_digest(used)
    for workdir in (tmp_path / "fresh", used):
        stderr = _refused(overrides, workdir)
        lines = stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in stderr, stderr
        # The line names the field (a cross-field rule: one of its fields).
        assert any(field in errors[0] for field in overrides), errors[0]
    assert not (tmp_path / "fresh").exists()
    assert _tree_digest(used) == before


@pytest.mark.parametrize(
    "flags",
    [
        ("--config.train.steps=abc",),
        ("--config.sweep.lr=0.1,abc",),
        ("--config.model.width=-5",),
        ("--config.optim.lr=nan",),
        ("--config.diagnostics.every_steps=100", "--config.diagnostics.unit=5000"),
    ],
)
def test_bad_command_lines_exit_2_in_one_line_and_write_nothing(
    tmp_path: Path, used: Path, flags: tuple[str, ...]
) -> None:
    before = _tree_digest(used)
    for workdir in (tmp_path / "fresh", used):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlresearch.main",
                "--config=configs/default.py",
                f"--workdir={workdir}",
                *flags,
            ],
            cwd=ROOT,
            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert [line[:7] for line in result.stderr.splitlines()] == ["error: "], result.stderr
    assert not (tmp_path / "fresh").exists()
    assert _tree_digest(used) == before


# -- signals at every point of the loop ------------------------------------------------------------
def _signal_on(monkeypatch: pytest.MonkeyPatch, owner: type, method: str, call: int, sig: int):
    """Make the `call`-th call of `owner.method` raise `sig` in this process, then proceed."""
    original = getattr(owner, method)
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, method, patched)


POINTS = {
    "train-chunk": (train.Trainer, "train_chunk", 2),
    "metric-write": (MetricWriter, "write", 3),
    "evaluation": (train.Trainer, "evaluate", 1),
    "checkpoint-save": (checkpoint.Checkpointer, "save", 1),
    "flush": (MetricWriter, "flush", 2),
    "before-the-loop": (checkpoint.Checkpointer, "restore_latest", 1),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_signal_anywhere_stops_with_a_checkpoint_and_resumes_exactly(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch, point: str, sig: int
) -> None:
    with monkeypatch.context() as patch:
        _signal_on(patch, *POINTS[point], sig)
        with pytest.raises(Interrupted) as stop:
            train.run(small_config(), str(tmp_path))
    assert stop.value.signum == sig and stop.value.exit_code == 128 + sig
    assert stop.value.step < 40
    # The step it stopped at is committed; before the loop nothing was trained or saved.
    if point == "before-the-loop":
        assert stop.value.step == 0 and _steps(tmp_path) == []
    else:
        assert stop.value.step in _steps(tmp_path)
        assert int(_restore(tmp_path).step[0]) == stop.value.step
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]  # nothing half-written
    train.run(small_config(), str(tmp_path))
    _assert_same_run(tmp_path, uninterrupted)


def test_a_second_signal_during_the_final_save_waits_for_it(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        _signal_on(patch, train.Trainer, "train_chunk", 1, signal.SIGTERM)
        _signal_on(patch, checkpoint.Checkpointer, "save", 1, signal.SIGINT)
        with pytest.raises(Interrupted) as stop:
            train.run(small_config(), str(tmp_path))
    assert stop.value.step == 10 and stop.value.signum == signal.SIGTERM
    assert int(_restore(tmp_path).step[0]) == 10
    train.run(small_config(), str(tmp_path))
    _assert_same_run(tmp_path, uninterrupted)


# -- the stop latency: chunks cut by measured time ---------------------------------------------------
def test_a_stop_inside_a_log_interval_keeps_the_unlogged_steps_and_resumes_exactly(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any measured step is too slow for this bound: once a chunk was timed (the first, its
    # compilation left out), chunks are single steps, so the 13th chunk ends at step 22, inside
    # the 20-30 log interval.
    with monkeypatch.context() as patch:
        patch.setattr(train, "STOP_WITHIN_SECONDS", 1e-9)
        _signal_on(patch, train.Trainer, "train_chunk", 13, signal.SIGTERM)
        with pytest.raises(Interrupted) as stop:
            train.run(small_config(), str(tmp_path))
    assert stop.value.step == 22 and _steps(tmp_path) == [20, 22]
    # Resumed with the default bound (10-step chunks again): the log line at 30 is the mean over
    # steps 21-30, two of them from the checkpoint.
    train.run(small_config(), str(tmp_path))
    _assert_same_run(tmp_path, uninterrupted)


@settings(deadline=None, max_examples=300, derandomize=True)
@given(
    seconds_per_step=st.floats(1e-6, 30.0),
    steps_per_call=st.integers(1, 1000),
    data=st.data(),
)
def test_chunks_cut_by_measured_time_fit_the_stop_bound(
    seconds_per_step: float, steps_per_call: int, data: st.DataObject
) -> None:
    remaining = data.draw(st.integers(1, steps_per_call))
    max_chunk = train._max_chunk(seconds_per_step, steps_per_call)
    pieces = []
    while sum(pieces) < remaining:
        pieces.append(train._chunk_length(remaining - sum(pieces), max_chunk))
    assert sum(pieces) == remaining
    # Every piece fits the bound, unless a single step does not.
    slowest = max(pieces) * seconds_per_step
    assert slowest <= train.STOP_WITHIN_SECONDS or max(pieces) == 1
    # And cut no shorter than need be: pieces of a quarter of the bound at least.
    if max_chunk is not None:
        assert min(pieces) >= min(max_chunk, remaining)
        assert 4 * max_chunk * seconds_per_step > train.STOP_WITHIN_SECONDS


def test_a_checkpoint_without_unlogged_metrics_restores(
    tmp_path: Path, uninterrupted: Path
) -> None:
    # As written before the unlogged metrics were saved with it: the state item only.
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    for step in _steps(tmp_path):
        shutil.rmtree(tmp_path / "checkpoints" / str(step) / "unlogged")
    state, unlogged = _restored(tmp_path)
    assert int(state.step[0]) == 40 and unlogged == {}
    jax.tree.map(np.testing.assert_array_equal, state.params, _restore(uninterrupted).params)


# -- checkpoints: damaged, unreadable, another structure, a full disk --------------------------------
def test_a_damaged_checkpoint_is_moved_aside_not_deleted(
    tmp_path: Path, uninterrupted: Path
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    for path in (tmp_path / "checkpoints" / "40").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    train.run(small_config(), str(tmp_path))
    (moved,) = (tmp_path / "checkpoints_damaged").iterdir()
    assert moved.name.startswith("40-")
    assert {p.read_bytes() for p in moved.rglob("*") if p.is_file()} == {b"garbage"}
    _assert_same_run(tmp_path, uninterrupted)


def test_another_state_structure_names_the_leaves_and_touches_nothing(
    tmp_path: Path, uninterrupted: Path
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    before = _tree_digest(tmp_path)
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"params\.hidden_0\.kernel float32\[1, 64, 32\] instead of float32\[1, 64, 16\]",
    ):
        _restore(tmp_path, small_config(**{"model.width": 16}))
    assert _tree_digest(tmp_path) == before


def test_an_io_error_is_retried_then_reported_touching_nothing(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    before = _tree_digest(tmp_path)
    attempts = []

    def failing(*args, **kwargs):
        attempts.append(1)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)
    with pytest.raises(checkpoint.CheckpointError, match=r"failed 3 times .*Input/output error"):
        _restore(tmp_path)
    assert len(attempts) == checkpoint.READ_ATTEMPTS
    assert _tree_digest(tmp_path) == before


# What a full disk raises from a checkpoint save: the file system's error, or TensorStore's
# through Orbax (a ValueError whose first line names the reason).
FULL_DISK = {
    "OSError": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "TensorStore": ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/40/state/d/1f": '
        "No space left on device\n[source locations='tensorstore/kvstore/file/file_key_value_store.cc']"
    ),
}


@pytest.mark.parametrize("raised", list(FULL_DISK))
def test_a_full_disk_stops_the_run_keeping_the_previous_checkpoint(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch, capsys, raised: str
) -> None:
    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 40:
            raise FULL_DISK[raised]
        return original(self, step, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ocp.CheckpointManager, "save", save)
        with pytest.raises(SystemExit) as exit_:
            main.run_or_fail(small_config(), str(tmp_path))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: saving the checkpoint of step 40 in ") and err.count("\n") == 1
    assert "No space left on device); the checkpoint of step 20 is intact" in err
    assert int(_restore(tmp_path).step[0]) == 20
    train.run(small_config(), str(tmp_path))
    _assert_same_run(tmp_path, uninterrupted)


# -- a workdir the file system refuses -------------------------------------------------------------
def _refuse_on_acquire(monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory without write permission (as root, which may write anywhere, simulated)."""

    def acquire(path: str) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(workdir_lib, "_acquire", acquire)


def _disk_full_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def pwrite(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(workdir_lib.os, "pwrite", pwrite)


REFUSED_WORKDIRS = {  # name -> (workdir under tmp_path, set-up, the reason in the error line)
    "a-file": ("afile", None, "File exists"),
    "a-300-character-name": ("x" * 300, None, "File name too long"),
    "read-only": ("run", _refuse_on_acquire, "Permission denied"),
    "disk-full-at-start": ("run", _disk_full_at_start, "No space left on device"),
}


@pytest.mark.parametrize("case", list(REFUSED_WORKDIRS))
def test_a_workdir_the_file_system_refuses_is_one_line_exit_2_leaving_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, case: str
) -> None:
    name, setup, reason = REFUSED_WORKDIRS[case]
    (tmp_path / "afile").write_text("a file")
    if setup:
        setup(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main.run_or_fail(small_config(), str(tmp_path / name))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use the workdir {tmp_path / name} ({reason}")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "a file"


def test_a_workdir_name_a_checkpoint_cannot_hold_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(train.Trainer, "train_chunk", no_training)
    workdir = os.fsdecode(os.fsencode(tmp_path) + b"/run\xff")
    with pytest.raises(SystemExit) as exit_:
        main.run_or_fail(small_config(), workdir)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: workdir b'") and "run\\xff' is not UTF-8 text" in err
    assert list(tmp_path.iterdir()) == []


# -- metrics.jsonl ---------------------------------------------------------------------------------
def test_a_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ConfigError, match=r"line 2 is not JSON .*the 1 lines after it are intact"):
        read_jsonl(path)
    with pytest.raises(ConfigError):
        MetricWriter(str(tmp_path), tensorboard=False, resume_step=3)
    assert path.read_text() == '{"step": 1}\n{"st\n{"step": 3}\n'  # nothing dropped
