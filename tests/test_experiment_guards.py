"""What an experiment guarantees when things go wrong: signals, pseudo-replication, a damaged run,
another experiment's workdir; and one experiment spread over several processes (tasks)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import interrupt
from test_data import write_idx_dataset

from dlresearch import data, train
from dlresearch.ablation import runner, spec
from dlresearch.errors import ConfigError, Interrupted
from dlresearch.metrics import METRICS_FILE
from experiments import batchnorm, dropout

ROOT = Path(__file__).resolve().parents[1]
MNIST = spec.DataDirs(dir=str(ROOT.parent / "shared" / "data" / "mnist"))
# batchnorm's cheapest part on one device: tuning and evaluation runs, a few seconds each.
CLI = [
    sys.executable,
    "-m",
    "experiments.batchnorm",
    "--preset=test",
    f"--data_dir={MNIST.dir}",
    "--parts=fig1",
    "--config.parallel.mode=single",
]
OVERRIDES = {"parallel.mode": "single"}


def _experiment(workdir: Path, **kwargs) -> runner.ExperimentResult | None:
    return runner.run_experiment(
        batchnorm.EXPERIMENT,
        preset="test",
        workdir=str(workdir),
        data_dirs=MNIST,
        only=("fig1",),
        log=lambda s: None,
        **{"overrides": OVERRIDES, **kwargs},
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": (1, 1)}, "repeats seed"),
        ({"overrides": {"sweep.lr": (0.1, 0.2)}}, "sweep.lr is set by the experiment"),
        ({"overrides": {"sweep.seed": (5, 6)}}, "sweep.seed is set by the experiment"),
        ({"overrides": {"optim.lr": 0.1}}, "fig1 tune the learning rate"),
        ({"overrides": {"train.steps": 1}}, "train.steps=1 is not above"),
    ],
)
def test_pseudo_replication_and_one_point_curves_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _experiment(tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


def test_the_cli_refuses_pseudo_replication_with_one_line(tmp_path: Path) -> None:
    for flag in ("--seeds=1,1", "--config.sweep.lr=0.1,0.2"):
        result = subprocess.run(
            [*CLI, f"--workdir={tmp_path / 'w'}", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), flag
        assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--num_tasks=2"], {}, "--num_tasks and --task_index go together"),
        (["--num_tasks=2", "--task_index=2"], {}, "task_index=2 must be in 0..1"),
        # A SLURM array --array=3-4: its ids are 3 and 4, so id 5 is no task of it.
        (
            [],
            {
                "SLURM_ARRAY_TASK_COUNT": "2",
                "SLURM_ARRAY_TASK_MIN": "3",
                "SLURM_ARRAY_TASK_ID": "5",
            },
            "task_index=2 must be in 0..1",
        ),
    ],
)
def test_a_task_outside_the_experiment_is_refused(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [*CLI, f"--workdir={tmp_path / 'w'}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_another_experiment_in_the_workdir_is_refused(tmp_path: Path) -> None:
    runner.claim_workdir(str(tmp_path), "activations")
    runner.claim_workdir(str(tmp_path), "activations")  # the same experiment: shared
    with pytest.raises(ConfigError, match="holds experiment 'activations'"):
        _experiment(tmp_path)
    assert set(os.listdir(tmp_path)) == {runner.EXPERIMENT_FILE, runner.WRITER_LOCK_FILE}


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_a_share_gives_each_variant_to_exactly_one_task(count: int) -> None:
    shares = [runner.Share(i, count) for i in range(count)]
    for k in range(11):
        assert [s.trains(k) for s in shares].count(True) == 1
    assert all(any(s.trains(k) for k in range(count)) for s in shares)  # none is idle
    for index, bad in ((count, count), (-1, count), (0, 0)):
        with pytest.raises(ConfigError):
            runner.Share(index, bad)


def test_stop_on_signal_raises_interrupted_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as stopped, runner.stop_on_signal():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode, long before this ends
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_between_runs_stops_the_experiment_with_nothing_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.run has returned (its handler is gone) when the signal comes: the experiment's own
    handler stops it before the next run; no run is marked finished, nothing is written."""
    calls = []

    def run_then_signal(config, workdir, **kwargs):
        calls.append(workdir)
        os.kill(os.getpid(), signal.SIGINT)
        return train.RunResult(members=[], final=[], diverged_at=[], step=config.train.steps)

    monkeypatch.setattr(train, "run", run_then_signal)
    with pytest.raises(Interrupted) as stopped:
        _experiment(tmp_path)
    assert stopped.value.exit_code == 130 and len(calls) == 1
    assert not list(tmp_path.rglob(runner.FINISHED_FILE))
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "results.csv").exists()


def test_an_interrupted_run_stops_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(config, workdir, **kwargs):
        raise Interrupted(signal.SIGTERM, 10)

    monkeypatch.setattr(train, "run", interrupted)
    with pytest.raises(Interrupted):
        _experiment(tmp_path)
    assert not list(tmp_path.rglob(runner.FINISHED_FILE))
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "results.csv").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """batchnorm's fig1 at --preset=test, run to the end by the command line."""
    workdir = tmp_path_factory.mktemp("finished") / "w"
    result = subprocess.run(
        [*CLI, f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def _copy(finished: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    os.remove(workdir / "results.csv")
    os.remove(workdir / "report.md")
    return workdir


def test_a_run_cut_short_after_it_finished_is_refused_not_dropped(
    finished: Path, tmp_path: Path
) -> None:
    workdir = _copy(finished, tmp_path)
    metrics = workdir / "runs" / "fig1" / "batchnorm" / METRICS_FILE
    metrics.write_bytes(metrics.read_bytes()[:-40])  # a torn last line
    for report_only in (False, True):
        with pytest.raises(ConfigError, match=f"delete {workdir}/runs/fig1/batchnorm and run"):
            _experiment(workdir, report_only=report_only)
    assert not (workdir / "results.csv").exists()
    # A line gone from the middle (here member 0's evaluation at step 30 of 60): refused too.
    baseline = workdir / "runs" / "fig1" / "baseline" / METRICS_FILE
    lines = baseline.read_text().splitlines(keepends=True)
    gone = [i for i, line in enumerate(lines) if '"step": 30,' in line and "test/loss" in line]
    baseline.write_text("".join(lines[: gone[0]] + lines[gone[0] + 1 :]))
    with pytest.raises(ConfigError, match="lacks the evaluation of member 0 at step 30 "):
        _experiment(workdir, report_only=True)
    baseline.write_text("".join(lines))
    # Redone as the message says, the run is recomputed: the same results as before.
    shutil.rmtree(metrics.parent)
    _experiment(workdir)
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_tasks_share_an_experiment_and_the_last_one_writes_the_report(
    finished: Path, tmp_path: Path
) -> None:
    """Task 1's variant (fig1/batchnorm) unfinished: task 0 reads its own back and leaves the
    report; --report_only refuses; task 1 finishes its variant and writes the report."""
    workdir = _copy(finished, tmp_path)
    os.remove(workdir / "runs" / "fig1" / "batchnorm" / runner.FINISHED_FILE)
    assert _experiment(workdir, share=runner.Share(0, 2)) is None
    assert not (workdir / "results.csv").exists()
    with pytest.raises(ConfigError, match=r"1 of 2 variants have not finished \(fig1/batchnorm\)"):
        _experiment(workdir, report_only=True)
    assert _experiment(workdir, share=runner.Share(1, 2)) is not None
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()
    os.remove(workdir / "results.csv")
    assert _experiment(workdir, report_only=True) is not None
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def _interrupt(workdir: Path, pattern: str) -> tuple[int, bool]:
    return interrupt([*CLI, f"--workdir={workdir}"], workdir, pattern)


def test_sigint_in_tuning_and_in_an_evaluation_run_then_resume(
    finished: Path, tmp_path: Path
) -> None:
    """Each SIGINT: exit 130, no report; the rerun gives an uninterrupted experiment's results."""
    workdir = tmp_path / "w"
    assert _interrupt(workdir, "tuning/*/*/" + METRICS_FILE) == (130, False)
    assert _interrupt(workdir, "runs/*/*/" + METRICS_FILE) == (130, False)
    result = subprocess.run(
        [*CLI, f"--workdir={workdir}"], cwd=ROOT, capture_output=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


@pytest.mark.slow
def test_two_tasks_at_once_then_report_only_give_one_process_results(
    finished: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "w"
    tasks = [
        subprocess.Popen(
            [*CLI, f"--workdir={workdir}", "--num_tasks=2", f"--task_index={i}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    assert [t.wait(timeout=600) for t in tasks] == [0, 0]
    os.remove(workdir / "results.csv")  # written by the last task: written again
    result = subprocess.run(
        [*CLI, f"--workdir={workdir}", "--report_only"], cwd=ROOT, capture_output=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_sigterm_then_sigint_stop_experiments_all(tmp_path: Path) -> None:
    """The whole command stops (it used to run on) with 128 + whichever signal its handlers saw
    first; neither the experiment's report nor the index is written."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.all",
            "--preset=test",
            f"--data_dir={MNIST.dir}",
            f"--workdir={tmp_path}",
            "--config.parallel.mode=single",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not list(tmp_path.glob("*/tuning/*/*/" + METRICS_FILE)) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) in (128 + signal.SIGINT, 128 + signal.SIGTERM)
    assert not list(tmp_path.rglob("report.md")) and not list(tmp_path.rglob("results.csv"))


# -- the dataset flag ------------------------------------------------------------------------------
def test_fashion_mnist_from_gzipped_idx_files_runs_an_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fashion-MNIST's files are not on this machine: synthetic gzipped IDX files in its format
    (their checksums registered as the published ones) stand in. The experiment trains on them,
    holds out its fraction of them for tuning, and its report says which dataset it ran on."""
    files = tmp_path / "fashion"
    files.mkdir()
    write_idx_dataset(
        files, monkeypatch, gz=True, num_train=300, num_test=40, dataset="fashion_mnist"
    )
    dirs = spec.DataDirs(dataset="fashion_mnist", dir=str(files))
    workdir = tmp_path / "w"
    result = runner.run_experiment(
        dropout.EXPERIMENT,
        preset="test",
        workdir=str(workdir),
        data_dirs=dirs,
        overrides=OVERRIDES,
        log=lambda s: None,
    )
    assert result is not None
    report = (workdir / "report.md").read_text()
    assert "Preset `test` on Fashion-MNIST," in report
    assert "**Setup used.** Fashion-MNIST;" in report
    assert f"--dataset=fashion_mnist --data_dir={files}" in report
    assert "with the last 1/6 of the training examples (50) held out" in report
    for config in workdir.glob("**/config.json"):
        assert json.loads(config.read_text())["data"]["name"] == "fashion_mnist", config
    tuned = json.loads(next(workdir.glob("**/tuning/**/config.json")).read_text())
    assert data.holdout_size(tuned["data"]["holdout"], 300, "fashion_mnist") == 50  # 1/6


def test_digits_runs_an_experiment_from_the_command_line(tmp_path: Path) -> None:
    """digits is built in (no files): --dataset=digits runs an experiment's test preset (its
    1,437 training examples are fewer than the 10,000 a fixed hold-out used to take)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.dropout",
            "--preset=test",
            "--dataset=digits",
            f"--workdir={tmp_path}",
            "--config.parallel.mode=single",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp_path / "report.md").read_text()
    assert "Preset `test` on digits," in report and "--dataset=digits" in report
    assert "**Result" in report and "95%" in report


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset=nope"], "dataset='nope' is not known; allowed values: cifar10, digits"),
        (["--dataset=cifar10", "--cifar_dir=/x"], "with dataset='cifar10' its files are dir"),
    ],
)
def test_a_bad_dataset_flag_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [*CLI, f"--workdir={tmp_path / 'w'}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "w").exists()
