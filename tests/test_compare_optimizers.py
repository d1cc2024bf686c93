"""The optimizer benchmark: search spaces, the tuning protocol, its statistics and the command."""

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_runs import fake_run
from processes import interrupt
from test_data import write_idx_dataset

from dlresearch import config as config_lib
from dlresearch import data, train
from dlresearch.ablation import Group, runner, spec, stats
from dlresearch.errors import ConfigError, Interrupted
from dlresearch.metrics import METRICS_FILE, read_jsonl
from dlresearch.optimizer_benchmark import (
    analysis,
    benchmark,
    choi2019,
    problems,
    protocol,
    report,
)
from dlresearch.optimizer_benchmark.search_space import (
    DEFAULT_LR,
    Arm,
    Dimension,
    parse_arm,
    points,
    with_space,
)

ROOT = Path(__file__).resolve().parents[1]


# -- search spaces -------------------------------------------------------------------------------
def test_points_are_quasi_random_strata_and_the_same_every_time() -> None:
    space = (Dimension("lr", 1e-4, 1.0, "log"), Dimension("b1", 0.5, 0.999, "log1m"))
    drawn = points(space, 8)
    assert drawn == points(space, 8)
    u = [math.log(p["lr"] / 1e-4) / math.log(1e4) for p in drawn]
    # The first 8 points of a scrambled Halton sequence put one point in each eighth (base 2).
    assert sorted(int(8 * x) for x in u) == list(range(8))
    assert all(0.5 <= p["b1"] < 0.999 for p in drawn)


def test_a_decay_rate_is_log_uniform_in_its_distance_from_one() -> None:
    b1 = Dimension("b1", 0.9, 0.999, "log1m")
    assert b1.value(0.0) == pytest.approx(0.9)
    assert b1.value(0.5) == pytest.approx(1 - math.sqrt(0.1 * 0.001))


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "benchopt_for_tests.py").write_text(
        "import optax\n\ndef make(learning_rate):\n    return optax.sgd(learning_rate, momentum=0.95)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "benchopt_for_tests:make"


def test_any_optimizer_gets_the_default_learning_rate_space(user_module: str) -> None:
    for name in ("adam", "optax.lion", user_module):
        assert parse_arm(name) == Arm(name, name, (DEFAULT_LR,))
    assert parse_arm("wide=adam") == Arm("wide", "adam", (DEFAULT_LR,))
    # Not searched: the optimizer's own defaults (lion's b2 is 0.99).
    assert parse_arm("optax.lion").fixed() == {"weight_decay": 1e-3, "b1": 0.9, "b2": 0.99}


def test_a_space_makes_b1_and_eps_searched_and_keeps_the_default_lr() -> None:
    arms = with_space([parse_arm("adam"), parse_arm("sgd")], "adam b1=0.5..0.99 eps=1e-8..1")
    assert [d.field for d in arms[0].space] == ["lr", "b1", "eps"]
    assert arms[0].space[2] == Dimension("eps", 1e-8, 1.0, "log")
    assert arms[1].space == (DEFAULT_LR,)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ("adam b3=0.1..0.9", r"'b3' is not searchable; allowed: lr, weight_decay, b1, b2, eps"),
        ("sgd momentum=0.1..0.9", r"'momentum' is not searchable; allowed: lr, weight_decay$"),
        ("adam lr=1..0.1", r"needs LOW < HIGH"),
        ("adam b1=0.5..1.5", r"needs LOW < HIGH, each a finite number in \[0, 1\)"),
        ("adam lr=1e-4..1:cubic", r"scale 'cubic' is not known; allowed: log, log1m, linear"),
        ("adam lr=small", r"allowed: FIELD=LOW..HIGH\[:SCALE\]"),
        ("adamw lr=1e-4..1", r"names no optimizer; allowed: adam, sgd \(as given\)"),
    ],
)
def test_bad_spaces_name_the_field_and_what_is_allowed(space: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        with_space([parse_arm("adam"), parse_arm("sgd")], space)


def test_a_misspelled_optimizer_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match=r"optim\.name='adamm' is not known; allowed values: "):
        parse_arm("adamm")


# -- statistics ------------------------------------------------------------------------------------
def test_expected_best_of_k_is_the_mean_max_over_every_draw() -> None:
    scores = [0.2, 0.9, 0.5, 0.7]
    for k in (1, 2, 3):
        draws = list(itertools.product(scores, repeat=k))
        assert analysis.expected_best(scores, k) == pytest.approx(np.mean([max(d) for d in draws]))
    curve = analysis.budget_curve(scores)
    assert curve.shape == (4, 3)
    assert np.all(np.diff(curve[:, 0]) > 0)
    assert np.all((curve[:, 1] <= curve[:, 0]) & (curve[:, 0] <= curve[:, 2]))


def test_rank_frequencies_follow_the_resampled_seeds() -> None:
    values = np.array([[0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [0.1, 0.95, 0.1]])
    freq = analysis.rank_frequencies(values)
    # Arm 2's mean beats arm 0's only if the resample is its good seed 3 times (1/27), arm 1's if
    # at least twice (7/27); arm 0 always beats arm 1.
    np.testing.assert_allclose(freq[2], [1 / 27, 6 / 27, 20 / 27], atol=0.035)
    np.testing.assert_allclose(freq[0], [1 - freq[2, 0], freq[2, 0], 0])
    assert freq[1, 2] == pytest.approx(freq[2, 0] + freq[2, 1])


def test_performance_profile_counts_problems_within_tau_of_the_best() -> None:
    costs = np.array([[1.0, 2.0, np.inf], [4.0, 2.0, np.inf]])
    profile = analysis.performance_profile(costs, np.array([1.0, 1.5, 2.0]))
    np.testing.assert_allclose(profile, [[0.5, 0.5, 1.0], [0.5, 0.5, 1.0], [0, 0, 0]])


def test_each_arm_is_compared_with_the_baseline_as_a_comparison_would() -> None:
    """Test error: the paired difference of error fractions on the fixed test set, a diverged
    member counting as error 1; Holm over the arms of a measure; one arm: no comparison."""
    accuracy = {"adam": [0.90, 0.92, 0.91], "sgd": [0.85, 0.80, 0.88], "lion": [0.93, 0.9, 0.95]}
    groups = []
    for name, values in accuracy.items():
        history = [[{"step": 10, "test/accuracy": a, "train/loss": 1 - a}] for a in values]
        run = fake_run(name, history, num_eval=360)
        groups.append(Group(name, run, (0, 1, 2)))
    groups[1].run.diverged_at[1] = 5
    groups[1].run.history[1][0]["test/accuracy"] = float("nan")
    problem = problems.PROBLEMS.get("digits_mlp")
    rows = analysis.against_baseline(problem, groups, analysis.measures(problem)[0])
    errors = {name: 1 - np.nan_to_num(values, nan=0.0) for name, values in accuracy.items()}
    errors["sgd"][1] = 1.0
    expected = [
        stats.error_difference(errors[n], errors["adam"], 360, name=f"test error, {n} minus adam")
        for n in ("sgd", "lion")
    ]
    assert [effect.describe() for effect, _ in rows] == [e.describe() for e in expected]
    assert [p for _, p in rows] == stats.holm([e.p for e in expected])
    assert analysis.against_baseline(problem, groups[:1], analysis.measures(problem)[0]) == []


def _effect(low: float, high: float) -> stats.Effect:
    return stats.Effect("d", (low + high) / 2, low, high, 0.5, 5, "paired t", unit="pp")


@pytest.mark.parametrize(
    ("low", "high", "outcome"),
    [
        (-0.004, 0.01, stats.Outcome.REPRODUCED),
        (-0.02, -0.006, stats.Outcome.NOT_REPRODUCED),
        (-0.02, 0.01, stats.Outcome.INCONCLUSIVE),
    ],
)
def test_choi_non_inferiority_rule(low: float, high: float, outcome: stats.Outcome) -> None:
    assert choi2019.non_inferiority(_effect(low, high), 0.005).outcome == outcome


def test_choi_judge_states_the_rule_and_a_result_line_per_problem() -> None:
    accuracy = {"momentum": 0.90, "adam_lr_b1_eps": 0.95, "adam_lr_only": 0.85}
    tuned = []
    for i, arm in enumerate(choi2019.ARMS):
        noise = np.roll([0.0, 0.01, 0.004], i)  # differing per arm: a finite interval
        history = [[{"step": 10, "test/accuracy": accuracy[arm.label] + d}] for d in noise]
        run = fake_run(arm.label, history)
        tuned.append(protocol.Tuned(arm, [{}], np.zeros(1), 0, run, run))
    lines = choi2019.judge({"mnist_mlp": tuned})
    assert lines[0] == choi2019.RULE
    assert any(line.startswith("Verdict: reproduced.") for line in lines)
    result = [line for line in lines if line.startswith("**Result (value): reproduced**")]
    assert len(result) == 1 and "adam_lr_b1_eps minus momentum" in result[0]


def test_a_point_at_an_edge_of_the_drawn_values_and_diverged_members_are_noted() -> None:
    space = (DEFAULT_LR, Dimension("b1", 0.5, 0.999, "log1m"))
    lrs, b1s = (0.1, 0.001, 0.01, 0.003), (0.85, 0.9, 0.87, 0.8)
    drawn = [{"lr": lr, "b1": b1} for lr, b1 in zip(lrs, b1s, strict=True)]
    tuning = fake_run("adam", [[{"step": 10, "train/loss": 1.0}]] * 4)
    tuning.members = [{"seed": 1000, **point} for point in drawn]
    evaluation = fake_run("adam", [[{"step": 10, "test/accuracy": 0.9}]] * 2)
    evaluation.diverged_at = [None, 5]
    scores = np.array([0.9, 0.5, 0.6, 0.4])
    notes = report.notes(
        [protocol.Tuned(Arm("adam", "adam", space), drawn, scores, 0, tuning, evaluation)]
    )
    assert len(notes) == 2
    assert "selected lr 0.1 is the highest of the grid (0.001, 0.003, 0.01, 0.1)" in notes[0]
    assert notes[1].startswith("`adam`: 1 of 2 evaluation members diverged (test error 1;")
    inner = protocol.Tuned(Arm("adam", "adam", space), drawn, scores, 2, tuning, tuning)
    assert report.notes([inner]) == []


# -- the protocol, end to end ----------------------------------------------------------------------
def _setting(
    name: str = "digits_mlp", preset: str = "test", k: int = 4, **changes
) -> protocol.Setting:
    problem = dataclasses.replace(problems.PROBLEMS.get(name), **changes)
    return protocol.Setting(name, problem, problem.config(preset, ""), (0, 1), k)


def test_a_problem_declares_an_ablation_budget_and_target() -> None:
    problem = problems.PROBLEMS.get("mnist_mlp")
    # The paper budget is 100 epochs of MNIST's training set at the problem's batch size.
    assert problem.budget.epochs == {"paper": 100}
    paper = problem.config("paper", "")
    assert paper.train.steps == math.ceil(100 * data.facts(paper.data).train_size / 128)
    assert problem.target == spec.Target("test/accuracy", 0.95)
    assert set(problem.budget.steps) | set(problem.budget.epochs) == set(spec.PRESETS)


def test_an_arms_points_are_one_sweep_on_the_tuning_seeds() -> None:
    arm = with_space([parse_arm("adam")], "adam b1=0.5..0.99")[0]
    config = protocol.tuning_config(_setting(), arm)
    config_lib.validate(config)
    members = config_lib.sweep_members(config)
    assert [(m["lr"], m["b1"]) for m in members] == [
        (p["lr"], p["b1"]) for p in points(arm.space, 4)
    ]
    train_size = data.FACTS["digits"].train_size
    assert data.holdout_size(config.data.holdout, train_size, "digits") == 300


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("bench")
    arms = [parse_arm("adam"), parse_arm("momentum"), parse_arm("optax.lion")]
    results = benchmark.run(
        [_setting()], arms, str(workdir), name="b", title="t", command="c", log=lambda s: None
    )
    return workdir, results


def test_the_report_states_each_comparison_with_its_interval(benchmark_run) -> None:
    workdir, _ = benchmark_run
    report = (workdir / "report.md").read_text()
    for label in ("momentum", "optax.lion"):
        lines = [line for line in report.splitlines() if f"{label} minus adam" in line]
        assert lines and all("95% CI" in line for line in lines)
    assert (workdir / "performance_profiles.png").exists()
    assert (workdir / "digits_mlp_tuning_budget.png").exists()
    kinds = [row.split(",")[2] for row in (workdir / "results.csv").read_text().splitlines()[1:]]
    assert kinds.count("tuning point") == 3 * 4 and kinds.count("evaluation") == 3 * 2
    # Each of the 2 other arms on each of the 3 measures (test error, loss, steps to target).
    assert kinds.count("effect") == 2 * 3
    assert json.loads((workdir / runner.EXPERIMENT_FILE).read_text()) == {"experiment": "b"}


def test_the_arms_are_ablation_variants_and_their_runs_are_marked_finished(
    benchmark_run,
) -> None:
    workdir, results = benchmark_run
    for tuned in results["digits_mlp"]:
        assert tuned.evaluation.variant == tuned.arm.variant
        assert tuned.arm.variant.overrides["optim.name"] == tuned.arm.optimizer
        for kind in ("tuning", "runs"):
            marker = workdir / kind / "digits_mlp" / tuned.arm.label / runner.FINISHED_FILE
            assert json.loads(marker.read_text())["step"] == 20


def test_the_selected_point_is_the_best_on_validation_and_trains_on_the_seeds(
    benchmark_run,
) -> None:
    workdir, results = benchmark_run
    for tuned in results["digits_mlp"]:
        tuning_dir = workdir / "tuning" / "digits_mlp" / tuned.arm.label
        finals = {}
        for record in read_jsonl(tuning_dir / "metrics.jsonl"):
            if "validation/accuracy" in record:
                finals[record["member"]] = record["validation/accuracy"]
        assert len(finals) == 4  # the K points trained in one run
        best = max(finals, key=finals.get)
        assert finals[best] == pytest.approx(tuned.scores.max())
        config = json.loads(
            (workdir / "runs" / "digits_mlp" / tuned.arm.label / "config.json").read_text()
        )
        assert config["optim"]["lr"] == pytest.approx(tuned.points[best]["lr"])
        assert config["sweep"]["seed"] == [0, 1]


def test_a_stopped_benchmark_writes_no_report_and_resumes(tmp_path, monkeypatch) -> None:
    arms = [parse_arm("adam"), parse_arm("sgd")]
    real = protocol.train_run

    def stop_at_sgd(setting, arm, *args):
        if arm.label == "sgd":
            raise Interrupted(15, 0)
        return real(setting, arm, *args)

    monkeypatch.setattr(protocol, "train_run", stop_at_sgd)
    run = dict(name="b", title="t", command="c", log=lambda s: None)
    with pytest.raises(Interrupted):
        benchmark.run([_setting(k=2)], arms, str(tmp_path), **run)
    assert not (tmp_path / "report.md").exists()
    monkeypatch.setattr(protocol, "train_run", real)
    trained = []
    chunk = train.Trainer.train_chunk

    def counted(self, *args, **kwargs):
        trained.append(self.config.optim.name)
        return chunk(self, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "train_chunk", counted)
    benchmark.run([_setting(k=2)], arms, str(tmp_path), **run)
    assert (tmp_path / "report.md").exists()
    assert set(trained) == {"sgd"}  # adam's finished runs were read back, not retrained
    # A finished run damaged since (its metrics cut short) is refused, as an experiment's is.
    metrics = tmp_path / "runs" / "digits_mlp" / "adam" / METRICS_FILE
    metrics.write_bytes(metrics.read_bytes()[:-40])
    with pytest.raises(ConfigError, match=f"delete {tmp_path}/runs/digits_mlp/adam and run"):
        benchmark.run([_setting(k=2)], arms, str(tmp_path), **run)


def test_another_experiments_workdir_is_refused(tmp_path) -> None:
    runner.claim_workdir(str(tmp_path), "activations")
    with pytest.raises(ConfigError, match="holds experiment 'activations'"):
        benchmark.run(
            [_setting(k=2)], [parse_arm("adam")], str(tmp_path), name="b", title="t", command="c"
        )
    assert not (tmp_path / "tuning").exists()


def test_fashion_mnist_2c2d_runs_on_synthetic_idx_files(tmp_path, monkeypatch) -> None:
    write_idx_dataset(tmp_path, monkeypatch, num_train=200, num_test=40, dataset="fashion_mnist")
    problem = dataclasses.replace(problems.PROBLEMS.get("fmnist_2c2d"), holdout=40)
    setting = protocol.Setting(
        "fmnist_2c2d", problem, problem.config("test", str(tmp_path)), (0, 1), 2
    )
    assert setting.config.model.cnn_preset == "deepobs_2c2d"
    results = benchmark.run(
        [setting],
        [parse_arm("adam"), parse_arm("momentum")],
        str(tmp_path / "w"),
        name="b",
        title="t",
        command="c",
        log=lambda s: None,
    )
    assert [t.evaluation.config.train.steps for t in results["fmnist_2c2d"]] == [10, 10]
    assert (tmp_path / "w" / "report.md").exists()


def test_every_registered_problem_has_every_preset_and_a_valid_config() -> None:
    for name in problems.PROBLEMS.names():
        problem = problems.PROBLEMS.get(name)
        for preset in spec.PRESETS:
            config_lib.validate(problem.config(preset, ""))


def test_the_command_line_rejects_a_misspelled_optimizer_in_one_line(tmp_path) -> None:
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlresearch.compare_optimizers",
            "--optimizers=adam,adamm",
            "--problems=digits_mlp",
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.startswith("error: --optimizers: optim.name='adamm'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not workdir.exists()


CLI = [
    sys.executable,
    "-m",
    "dlresearch.compare_optimizers",
    "--optimizers=adam,sgd",
    "--problems=digits_mlp",
    "--tuning_budget=2",
    "--preset=test",
]


def _interrupt(workdir: Path, pattern: str) -> tuple[int, bool]:
    return interrupt([*CLI, f"--workdir={workdir}"], workdir, pattern)


def test_sigint_in_tuning_and_in_an_evaluation_run_then_resume(tmp_path) -> None:
    """Each SIGINT: exit 130, no report; the rerun gives an uninterrupted run's results.csv."""
    finished = tmp_path / "finished"
    result = subprocess.run([*CLI, f"--workdir={finished}"], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    workdir = tmp_path / "w"
    assert _interrupt(workdir, "tuning/*/*/" + METRICS_FILE) == (130, False)
    assert _interrupt(workdir, "runs/*/*/" + METRICS_FILE) == (130, False)
    result = subprocess.run([*CLI, f"--workdir={workdir}"], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_tuning_speed_times_one_program_and_k_processes(tmp_path) -> None:
    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # as a user runs it
    subprocess.run(
        [sys.executable, "-m", "benchmarks.tuning_speed", "--k=2", "--problem=digits_mlp",
         "--preset=test", "--data_dir=", f"--json={out}"],
        cwd=ROOT, check=True, capture_output=True, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert len(result["trial_s"]) == 2
    assert result["sequential_s"] == pytest.approx(sum(result["trial_s"]))
    assert result["ratio"] == pytest.approx(result["sequential_s"] / result["one_program_s"])
