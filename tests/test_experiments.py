"""The five experiment scripts: valid grids in every preset, end to end on a tiny grid, resume, CLI."""

import csv
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest
from fake_runs import fake_run

from dlresearch import config as config_lib
from dlresearch import train
from dlresearch.ablation import runner, spec
from dlresearch.errors import ConfigError
from dlresearch.metrics import METRICS_FILE, read_jsonl
from experiments import all as all_experiments

EXPERIMENTS = {e.name: e for e in all_experiments.EXPERIMENTS}
ROOT = Path(__file__).resolve().parents[1]
# One device keeps the tiny runs at their fastest (conftest forces 8 CPU devices).
SINGLE = {"parallel.mode": "single"}
# MNIST as CI has it beside the checkout (missing data is a failure there, not a skip).
MNIST = spec.DataDirs(dir=str(ROOT.parent / "shared" / "data" / "mnist"))


@pytest.mark.parametrize("preset", spec.PRESETS)
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_preset_is_a_valid_grid(name: str, preset: str) -> None:
    parts = EXPERIMENTS[name].parts(preset, spec.DataDirs(dir="/mnist", cifar_dir="/cifar10"))
    assert len({p.name for p in parts}) == len(parts)
    for part in parts:
        assert len({v.name for v in part.variants}) == len(part.variants) > 1
        configs = runner.run_configs(part, spec.DEFAULT_SEEDS[preset], {})  # validates each
        assert all(c.sweep.seed == spec.DEFAULT_SEEDS[preset] for c in configs)
        if preset != "test":
            assert {c.data.name for c in configs} <= {"mnist", "cifar10"}


@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist", "cifar10"])
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_runs_on_the_dataset_named(name: str, dataset: str) -> None:
    """--dataset reaches every part of the quick and test presets (the paper presets' CIFAR-10
    parts stay on CIFAR-10)."""
    dirs = spec.DataDirs(dataset=dataset, dir="/files")
    for preset in ("test", "quick"):
        for part in EXPERIMENTS[name].parts(preset, dirs):
            configs = runner.run_configs(part, spec.DEFAULT_SEEDS[preset], {})  # validates each
            assert {(c.data.name, c.data.dir) for c in configs} == {(dataset, "/files")}
    paper = EXPERIMENTS[name].parts("paper", spec.DataDirs(dataset=dataset, dir="/files"))
    assert {p.config.data.name for p in paper} <= {dataset, "cifar10"}


# The optimizers experiment's runs as declared before it was written on `ablation.Comparison` (the
# standard runs trained then are read back, not retrained): per preset, the mlp's width and steps
# (epochs x 60,000 // 128, complete batches), and its intervals (about 20 logs and 2 evaluations
# an epoch, 4 checkpoints, multiples of the logging interval).
OPTIMIZERS_MLP = {
    "test": (16, 937, 23, 230, 230),  # 2 epochs
    "quick": (100, 2_343, 23, 230, 575),  # 5 epochs
    "standard": (100, 4_687, 23, 230, 1_173),  # 10 epochs
    "paper": (1_000, 46_875, 23, 230, 11_730),  # 100 epochs
}
OPTIMIZERS = ("nesterov", "adagrad", "rmsprop", "adadelta", "adam")


def _intervals(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    train = config.train
    every = (train.log_every_steps, config.eval.every_steps, config.checkpoint.every_steps)
    assert train.steps_per_call == train.log_every_steps and config.diagnostics.every_steps == 0
    return (train.steps, *every)


@pytest.mark.parametrize("preset", spec.PRESETS)
def test_optimizers_declares_the_runs_it_declared_before_the_comparison(preset: str) -> None:
    parts = EXPERIMENTS["optimizers"].parts(preset, spec.DataDirs())
    assert [p.name for p in parts] == (["mlp", "cnn"] if preset == "paper" else ["mlp"])
    mlp = parts[0]
    width, *intervals = OPTIMIZERS_MLP[preset]
    assert _intervals(mlp.config) == tuple(intervals)
    model = mlp.config.model
    assert (model.name, model.depth, model.width, model.activation) == ("mlp", 2, width, "relu")
    assert (model.dropout, model.input_dropout, mlp.config.train.batch_size) == (0.5, 0.0, 128)
    assert (mlp.config.data.name, mlp.config.data.dir, mlp.config.data.holdout) == ("mnist", "", 0)
    # The chance cross-entropy ln(10) halved once, twice and three times.
    targets = ("train/loss<=1.151293", "train/loss<=0.575646", "train/loss<=0.287823")
    assert tuple(mlp.config.train.reach_targets) == targets
    assert [(v.name, dict(v.overrides)) for v in mlp.variants] == [
        (name, {"optim.name": name}) for name in OPTIMIZERS
    ]
    assert [v.label for v in mlp.variants] == [
        "SGD Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"
    ]  # fmt: skip
    # Adam is the baseline: every other optimizer's steps over Adam's.
    for label in ("SGD Nesterov", "AdaGrad", "RMSProp", "AdaDelta"):
        assert f"steps to train/loss <= 0.287823, {label} / Adam" in mlp.rule
    for part in parts:
        assert part.kind == "speed" and part.quote == "Adam shows better convergence"
        tuning = part.tuning
        assert tuning.grid == (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)
        assert (tuning.metric, tuning.holdout, tuning.seeds) == (
            "final training cost",
            1 / 6,
            (1000,),
        )
        # Scored by the final training loss, the lowest best.
        run = fake_run(
            "adam", [[{"step": 10, "train/loss": 0.5}], [{"step": 10, "train/loss": 0.2}]]
        )
        assert tuning.score(run, (0,)) == 0.5 and tuning.score(run, (1,)) == 0.2
        seeds = spec.DEFAULT_SEEDS[preset]
        assert all(c.sweep.seed == seeds for c in runner.run_configs(part, seeds, {}))
    if preset == "paper":
        cnn = parts[1].config
        # 45 epochs of CIFAR-10's 50,000 examples at batch 128.
        assert _intervals(cnn) == (17_578, 19, 190, 4_389)
        assert (cnn.data.name, cnn.data.augment, cnn.train.batch_size) == ("cifar10", "none", 128)
        assert (cnn.model.name, cnn.model.cnn_preset) == ("cnn", "adam2015")
        assert (cnn.model.dropout, cnn.model.input_dropout, cnn.model.activation) == (
            0.5, 0.2, "relu"
        )  # fmt: skip
        assert tuple(cnn.train.reach_targets) == targets
        assert [v.name for v in parts[1].variants] == ["nesterov", "adagrad", "adam"]


def _check_outputs(workdir: Path, parts: list[spec.Part], seeds: tuple[int, ...]) -> None:
    """results.csv has a row per member of every variant (and of its tuning run) and one per
    effect; report.md one verdict of the three, every part's result with a 95% interval, its plots."""
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in ("run", "tuning", "effect")}
    assert len(by_kind["run"]) + len(by_kind["tuning"]) + len(by_kind["effect"]) == len(rows)
    configs = [c for p in parts for c in runner.run_configs(p, seeds, SINGLE)]
    assert len(by_kind["run"]) == sum(len(config_lib.sweep_members(c)) for c in configs)
    # A tuning row per member of each variant's tuning run and of its grid-edge extensions.
    tuned = [(p, v) for p in parts if p.tuning for v in p.variants]
    members = 0
    for part, variant in tuned:
        tuning_dir = workdir / "tuning" / part.stored / variant.name
        for path in [tuning_dir, *tuning_dir.glob("extend-*")]:
            sweep = json.loads((path / "config.json").read_text())["sweep"]
            assert path != tuning_dir or tuple(sweep["lr"]) == part.tuning.grid
            members += len(sweep["lr"]) * len(sweep["seed"])
    assert len(by_kind["tuning"]) == members
    for column in (
        "part",
        "variant",
        "seed",
        "lr",
        "train_loss",
        "train_accuracy",
        "eval_accuracy",
    ):
        assert all(row[column] != "" for row in by_kind["run"]), column
    assert {row["diverged"] for row in by_kind["run"]} <= {"yes", "no"}
    assert by_kind["effect"] and all(r["ci_low"] or r["ci_high"] for r in by_kind["effect"])
    text = (workdir / "report.md").read_text()
    verdicts = [line for line in text.splitlines() if line.startswith("Verdict:")]
    assert len(verdicts) == 1
    assert re.match(r"Verdict: (reproduced|not reproduced|inconclusive)\. \S", verdicts[0])
    # What the acceptance check greps: the outcome must end at punctuation, not a space.
    word = re.search(r"Verdict: [a-z ]*", text).group()
    assert word in ("Verdict: reproduced", "Verdict: not reproduced", "Verdict: inconclusive")
    results = [line for line in text.splitlines() if line.startswith("**Result")]
    assert len(results) == len(parts) and all("95% CI" in line for line in results)
    assert "**Provenance.** Code " in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert images
    for image in images:
        assert (workdir / image).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_end_to_end_on_a_tiny_grid(name: str, tmp_path: Path) -> None:
    """Every part of every experiment (10-50 s each here: about 5 compilations per variant)."""
    experiment = EXPERIMENTS[name]
    outcome = runner.run_experiment(
        experiment,
        preset="test",
        workdir=str(tmp_path),
        data_dirs=MNIST,
        overrides=SINGLE,
        log=lambda s: None,
    )
    assert outcome.verdict.reason
    _check_outputs(tmp_path, experiment.parts("test", MNIST), spec.DEFAULT_SEEDS["test"])


def _metrics(workdir: Path, keep: tuple[str, ...] = ("",)) -> dict[str, list[dict]]:
    """Each run's metric records, with only the keys starting with one of `keep`."""
    return {
        str(path.relative_to(workdir)): [
            {k: v for k, v in r.items() if k.startswith(keep)} for r in read_jsonl(path)
        ]
        for path in sorted(workdir.glob("runs/*/*/" + METRICS_FILE))
    }


def test_run_read_back_and_resume(tmp_path: Path) -> None:
    """One experiment end to end (batchnorm's fig1, the cheapest part), then twice again."""
    experiment = EXPERIMENTS["batchnorm"]
    run = functools.partial(
        runner.run_experiment,
        experiment,
        preset="test",
        workdir=str(tmp_path),
        data_dirs=MNIST,
        overrides=SINGLE,
        only=("fig1",),
        log=lambda s: None,
    )
    run()
    _check_outputs(tmp_path, experiment.parts("test", MNIST)[:1], (0, 1))
    assert "Partial: only parts fig1 ran." in (tmp_path / "report.md").read_text()
    before = _metrics(tmp_path)

    # Asked again, it trains nothing: every run is read back and the outputs are rewritten.
    os.remove(tmp_path / "results.csv")
    run()
    assert _metrics(tmp_path) == before
    assert (tmp_path / "results.csv").exists()

    # As if killed before its last checkpoint: it resumes from the one before and recomputes the
    # rest. Evaluations and diagnostics are functions of the state: identical. (The first train
    # line after a restart averages fewer steps, so train metrics are not compared.)
    state = ("step", "member", "test/", "diag/")
    finished = _metrics(tmp_path, state)
    checkpoints = tmp_path / "runs" / "fig1" / "baseline" / "checkpoints"
    newest = max((p for p in checkpoints.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(newest)
    run()
    assert _metrics(tmp_path, state) == finished


def _untimed(records: list[dict]) -> list[dict]:
    """Metric records without their wall-clock measurement."""
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]


def test_results_csv_holds_what_train_run_logs_for_the_same_config(tmp_path: Path) -> None:
    """Pins the runner: each variant's config is the part's base config, then the variant's
    overrides, the seeds, the user's overrides (and the rate its tuning selected); trained on its
    own by `train.run`, that config logs the same metrics, and results.csv holds their final values
    (6 significant digits)."""
    experiment = EXPERIMENTS["batchnorm"]
    runner.run_experiment(
        experiment,
        preset="test",
        workdir=str(tmp_path / "experiment"),
        data_dirs=MNIST,
        overrides=SINGLE,
        only=("fig1",),
        log=lambda s: None,
    )
    rows = list(csv.DictReader((tmp_path / "experiment" / "results.csv").open()))
    rows = [r for r in rows if r["kind"] == "run"]
    part = experiment.parts("test", MNIST)[0]
    seeds = spec.DEFAULT_SEEDS["test"]
    for variant in part.variants:
        mine = [r for r in rows if r["variant"] == variant.name]
        selected = {"optim.lr": float(mine[0]["lr"])} if part.tuning else {}
        config = config_lib.apply_overrides(
            part.config, {**variant.overrides, "sweep.seed": seeds, **SINGLE, **selected}
        )
        result = train.run(config, str(tmp_path / variant.name))
        ours = read_jsonl(
            tmp_path / "experiment" / "runs" / part.stored / variant.name / METRICS_FILE
        )
        assert _untimed(ours) == _untimed(read_jsonl(tmp_path / variant.name / METRICS_FILE))
        assert [r["seed"] for r in mine] == [str(s) for s in seeds]
        for row, final in zip(mine, result.final, strict=True):
            assert row["steps"] == str(config.train.steps)
            assert row["eval_split"] == "test" and row["diverged"] == "no"
            for column, key in (
                ("train_loss", "train/loss"),
                ("train_accuracy", "train/accuracy"),
                ("eval_loss", "test/loss"),
                ("eval_accuracy", "test/accuracy"),
            ):
                assert row[column] == f"{final[key]:.6g}", column


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.batchnorm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [(["--preset=huge"], "preset"), (["--config.model.nope=1"], "nope")],
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli(f"--workdir={tmp_path / 'w'}", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: ")
    assert not (tmp_path / "w" / "runs").exists()


def test_unknown_parts_and_missing_cifar_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parts=nope"):
        runner.run_experiment(
            EXPERIMENTS["batchnorm"],
            preset="test",
            workdir=str(tmp_path),
            data_dirs=MNIST,
            only=("nope",),
        )
    # No CIFAR-10 directory and an empty download cache with no mirror to fill it (conftest).
    with pytest.raises(ConfigError, match="--cifar_dir"):
        runner.run_experiment(
            EXPERIMENTS["residual"],
            preset="paper",
            workdir=str(tmp_path),
            data_dirs=MNIST,
            log=lambda s: None,
        )
    assert not (tmp_path / "runs").exists()
