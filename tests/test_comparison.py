"""The declarative surface (`ablation.Comparison`): what it derives from a declaration, and each of
the three outcomes of its derived judge on fabricated runs."""

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from fake_runs import fake_run, fake_tuning_run

from dlresearch import ablation, data
from dlresearch.ablation import Run, runner, spec, stats
from dlresearch.ablation.measures import best_value
from dlresearch.errors import ConfigError

# Per seed offsets: a spread between seeds, so that intervals are finite.
NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])
DIRS = spec.DataDirs(dir="/mnist", cifar_dir="/cifar10")
TARGET = ablation.Target("train/accuracy", 0.9)


def _comparison(**changes: object) -> ablation.Comparison:
    declared = ablation.Comparison(
        name="wide",
        title="Wider is better",
        claim="A wider MLP has a lower test error.",
        source="folklore",
        base={"data.name": "mnist", "model.width": 32, "train.batch_size": 100},
        arms=(
            ablation.Variant("narrow", {}, "narrow"),
            ablation.Variant("wide", {"model.width": 256}, "wide"),
        ),
        budget=ablation.Budget(steps={"test": 40}, epochs={"quick": 3, "standard": 5, "paper": 20}),
        measure=ablation.test_error(),
        direction="lower",
        smallest_effect=0.002,
        tuning=ablation.log_grid(0.01, 1.0),
        per_preset={"test": {"model.depth": 1}},
    )
    return dataclasses.replace(declared, **changes)


# -- what a declaration derives --------------------------------------------------------------------
def test_a_value_at_the_budget_is_a_value_claim_with_its_rule() -> None:
    comparison = _comparison()
    assert comparison.kind == "value"
    part = comparison.part("quick", DIRS)
    # 3 epochs of MNIST's training set at batch 100, from the dataset facts.
    steps = 3 * data.FACTS["mnist"].train_size // 100
    assert part.config.train.steps == steps
    assert part.config.data.dir == "/mnist" and part.config.model.depth == 2  # no test override
    assert comparison.part("test", DIRS).config.model.depth == 1
    assert f"{steps:,} steps (3 epochs of 60,000 examples at batch 100)" in part.rule
    assert "test error, narrow minus wide" in part.rule
    assert (
        "on the fixed test set" in part.rule and "a diverged member counts as error 1" in part.rule
    )
    assert "and not wholly below the smallest effect of interest, 0.2 pp" in part.rule
    assert "not reproduced if the interval lies below 0.2 pp" in part.rule
    # The tuning protocol: the grid, scored by the measure (on the held-out split).
    assert part.tuning.grid == ablation.log_grid(0.01, 1.0)
    assert part.tuning.metric == "held-out error"
    assert [v.name for v in part.variants] == ["narrow", "wide"]
    for config in runner.run_configs(part, (0, 1), {}):  # every arm's config is valid
        assert config.train.steps == steps


def test_steps_to_a_target_is_a_speed_claim_compared_as_a_ratio() -> None:
    comparison = _comparison(
        measure=ablation.steps_to(TARGET), direction="lower", smallest_effect=2.0
    )
    assert comparison.kind == "speed"
    part = comparison.part("test", DIRS)
    assert part.target == TARGET
    assert "steps to train/accuracy >= 0.9, narrow / wide, at the budget of 40 steps," in part.rule
    assert "log ratios" in part.rule and "censored at the budget" in part.rule
    assert "lies above 1x" in part.rule and "2x" in part.rule
    higher = _comparison(direction="higher", smallest_effect=None)
    assert "test error, wide minus narrow" in higher.part("test", DIRS).rule
    assert "smallest effect" not in higher.part("test", DIRS).rule


def test_the_tuning_score_is_the_measure_on_the_held_out_split() -> None:
    grid = ablation.log_grid(0.01, 1.0)
    tuning = fake_tuning_run("narrow", grid)
    best = 3  # the rate whose held-out error is lowest
    for member in range(len(grid)):
        accuracy = 0.9 if member == best else 0.5
        tuning.history[member] = [{"step": 10, "validation/accuracy": accuracy, "train/loss": 1}]
    tuning.config.data.holdout = 1 / 6
    score = _comparison().part("test", DIRS).tuning.score
    assert best_value(tuning, "lr", score) == grid[best]
    # A diverged member (no finite accuracy) counts as error 1, the worst.
    tuning.history[best][0]["validation/accuracy"] = "nan"
    assert best_value(tuning, "lr", score) != grid[best]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arms": (ablation.Variant("a"),)}, "at least two"),
        ({"arms": (ablation.Variant("a"), ablation.Variant("a"))}, "distinct names"),
        ({"direction": "sideways"}, "direction='sideways'"),
        ({"smallest_effect": -0.01}, "smallest_effect=-0.01 must be above 0"),
        ({"measure": ablation.steps_to(TARGET), "smallest_effect": 0.5}, "must be above 1"),
        ({"rule": "my rule"}, "a hand-written judge states its rule"),
        ({"per_preset": {"fast": {}}}, "per_preset=\\['fast'\\]"),
        ({"baseline": "widest"}, "baseline='widest'; allowed: an arm's name"),
        ({"previous": ablation.test_error()}, "previous and previous_rule"),
        ({"previous_rule": "the old rule"}, "previous and previous_rule"),
    ],
)
def test_a_bad_declaration_is_refused_with_one_line(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _comparison(**changes)


def test_a_budget_names_every_preset_once() -> None:
    with pytest.raises(ConfigError, match="every preset once"):
        ablation.Budget(steps={"test": 10, "quick": 10})
    with pytest.raises(ConfigError, match="every preset once"):
        ablation.Budget(
            steps={"test": 10, "quick": 10, "standard": 10, "paper": 10}, epochs={"paper": 1}
        )
    with pytest.raises(ConfigError, match="positive"):
        ablation.Budget(steps={"test": 0, "quick": 10, "standard": 10, "paper": 10})


# -- the derived judge: three outcomes on fabricated runs ----------------------------------------
def _value_runs(
    accuracy: dict[str, float], noise: float = 0.002, num_eval: int = 10_000
) -> dict[str, Run]:
    """Runs whose members end at the given mean test accuracy on `num_eval` test examples, with
    per-seed noise that differs between the arms."""
    return {
        name: fake_run(
            name,
            [
                [
                    {"step": 20, "train/loss": 0.5, "test/accuracy": 0.5},
                    {"step": 40, "train/loss": 0.1, "test/accuracy": accuracy[name] + noise * n},
                ]
                for n in np.roll(NOISE, i)
            ],
            num_eval=num_eval,
        )
        for i, name in enumerate(("narrow", "wide"))
    }


@pytest.mark.parametrize(
    "accuracy, noise, num_eval, outcome",
    [
        ({"narrow": 0.90, "wide": 0.95}, 0.002, 10_000, stats.Outcome.REPRODUCED),
        ({"narrow": 0.95, "wide": 0.90}, 0.002, 10_000, stats.Outcome.NOT_REPRODUCED),
        # Real but below the smallest effect of interest (0.2 pp), on a test set large enough
        # to tell.
        ({"narrow": 0.90, "wide": 0.9005}, 1e-4, 10**6, stats.Outcome.NOT_REPRODUCED),
        ({"narrow": 0.90, "wide": 0.92}, 0.03, 10_000, stats.Outcome.INCONCLUSIVE),
    ],
)
def test_the_derived_judge_gives_each_outcome(
    tmp_path: Path, accuracy: dict, noise: float, num_eval: int, outcome: stats.Outcome
) -> None:
    runs = _value_runs(accuracy, noise, num_eval)
    findings = _comparison().derived_judge(runs, str(tmp_path))
    assert findings.verdict.outcome == outcome, findings.verdict.reason
    (effect,) = findings.verdict.effects
    assert effect.name == "test error, narrow minus wide"
    assert effect.estimate == pytest.approx(accuracy["wide"] - accuracy["narrow"])
    assert findings.judged == {"narrow": (0, 1, 2, 3, 4), "wide": (0, 1, 2, 3, 4)}
    assert "test error (%)" in findings.tables[0]
    assert (tmp_path / findings.plots[0].filename).read_bytes()[:4] == b"\x89PNG"


def test_a_diverged_member_counts_as_error_1_and_is_reported(tmp_path: Path) -> None:
    runs = _value_runs({"narrow": 0.95, "wide": 0.96})
    runs["narrow"].history[2][-1]["test/accuracy"] = "nan"
    runs["narrow"].diverged_at[2] = 30
    findings = _comparison().derived_judge(runs, str(tmp_path))
    errors = [1 - (0.95 + 0.002 * n) for n in NOISE]
    errors[2] = 1.0
    expected = np.mean(errors) - np.mean([1 - (0.96 + 0.002 * n) for n in np.roll(NOISE, 1)])
    assert findings.verdict.effects[0].estimate == pytest.approx(expected)
    assert "narrow: 1 of 5 members diverged (a diverged member counts as error 1)." in (
        findings.notes
    )


def test_grid_edge_notes_come_with_tuned_runs(tmp_path: Path) -> None:
    grid = ablation.log_grid(0.01, 1.0)
    runs = _value_runs({"narrow": 0.90, "wide": 0.95})
    for name, run in runs.items():
        run.tuning = fake_tuning_run(name, grid)
        run.config.optim.lr = grid[0] if name == "wide" else grid[2]
    notes = _comparison().derived_judge(runs, str(tmp_path)).notes
    assert len(notes) == 1 and notes[0].startswith("wide: the selected lr 0.01 is the lowest")


def _speed_runs(reached: dict[str, list[int | None]]) -> dict[str, Run]:
    """Runs whose member i reaches 90% training accuracy at step reached[name][i] (None: never,
    in 1,000 steps)."""
    runs = {}
    for name, steps in reached.items():
        members = []
        for at in steps:
            members.append(
                [
                    {"step": s, "train/accuracy": 0.95 if at is not None and s >= at else 0.5}
                    for s in range(50, 1001, 50)
                ]
            )
        runs[name] = fake_run(name, members)
    return runs


@pytest.mark.parametrize(
    "reached, outcome",
    [
        # Six seeds: a censored run is judged by the exact sign-flip test, unbounded below six.
        (
            {"narrow": [800, 900, 850, 950, None, 900], "wide": [100, 150, 100, 150, 100, 120]},
            "reproduced",
        ),
        (
            {"narrow": [100, 150, 100, 150, 100, 120], "wide": [800, 900, 850, 950, None, 900]},
            "not",
        ),
        (
            {"narrow": [200, 300, 250, 100, 400, 300], "wide": [250, 150, 300, 200, 350, 250]},
            "inconclusive",
        ),
    ],
)
def test_a_speed_claim_gives_each_outcome(tmp_path: Path, reached: dict, outcome: str) -> None:
    comparison = _comparison(measure=ablation.steps_to(TARGET), smallest_effect=None)
    findings = comparison.derived_judge(_speed_runs(reached), str(tmp_path))
    assert str(findings.verdict.outcome).startswith(outcome), findings.verdict.reason
    (effect,) = findings.verdict.effects
    assert effect.unit == "x" and effect.name.endswith("narrow / wide")
    assert effect.censored == (0 if outcome == "inconclusive" else 1)


def test_several_arms_are_each_compared_with_the_baseline_holm_adjusted(tmp_path: Path) -> None:
    wider = ablation.Variant("wider", {"model.width": 512}, "wider")
    comparison = _comparison(arms=(*_comparison().arms, wider))
    runs = _value_runs({"narrow": 0.90, "wide": 0.95})
    runs["wider"] = dataclasses.replace(runs["wide"], variant=wider)
    findings = comparison.derived_judge(runs, str(tmp_path))
    assert [e.name for e in findings.verdict.effects] == [
        "test error, narrow minus wide",
        "test error, narrow minus wider",
    ]
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert "Holm" in comparison.part("test", DIRS).rule


def test_a_hand_written_judge_replaces_the_derived_one(tmp_path: Path) -> None:
    def judge(runs: dict[str, Run], outdir: str) -> ablation.Findings:
        effect = stats.Effect("mine", 1.0, 0.5, 1.5, 0.01, 5, "made up")
        return ablation.Findings(stats.verdict(effect, claim="greater"))

    part = _comparison(judge=judge, rule="my rule").part("test", DIRS)
    assert part.rule == "my rule" and part.judge is judge
    experiment = _comparison().experiment()
    assert experiment.name == "wide"
    (only,) = experiment.parts("test", DIRS)
    assert only.rule == _comparison().part("test", DIRS).rule


def test_a_custom_measure_of_runs() -> None:
    """Your own function of a group of runs: here the final test accuracy, higher claimed."""
    measure = ablation.Measure("final accuracy", lambda g: g.final("test/accuracy"), unit="%")
    comparison = _comparison(measure=measure, direction="higher", smallest_effect=None)
    assert comparison.kind == "value"
    effect = comparison.effect(
        *ablation.groups(_value_runs({"narrow": 0.9, "wide": 0.95})).values()
    )
    assert effect.name == "final accuracy, wide minus narrow" and effect.unit == "%"
    assert effect.estimate == pytest.approx(0.05)


def test_final_value_of_the_evaluation_split_is_the_held_out_one_when_tuning() -> None:
    measure = ablation.final_value("{split}/loss")
    assert measure.name == "final test/loss"
    records = [[{"step": 10, "validation/loss": 0.3, "test/loss": 0.9}]]
    for holdout, loss in ((0, 0.9), (0.1, 0.3)):
        run = fake_run("a", records, config={"data.holdout": holdout})
        assert measure.values(ablation.groups({"a": run})["a"]).tolist() == [loss]


def test_the_dataset_is_the_command_lines_unless_the_base_pins_one() -> None:
    """Without data.name in its base a comparison runs on `--dataset` (its files from --data_dir);
    a base that sets data.name runs on it, and naming another dataset is refused, not ignored."""
    free = _comparison(base={"model.width": 32, "train.batch_size": 100})
    fashion = spec.DataDirs(dataset="fashion_mnist", dir="/fashion")
    config = free.part("quick", fashion).config
    assert (config.data.name, config.data.dir) == ("fashion_mnist", "/fashion")
    assert free.part("quick", spec.DataDirs()).config.data.name == "mnist"  # the default
    cifar = free.part("quick", spec.DataDirs(dataset="cifar10", dir="/c")).config
    # Epochs to steps from the named dataset's size: 3 epochs of CIFAR-10's 50,000 at batch 100.
    assert cifar.train.steps == 3 * data.FACTS["cifar10"].train_size // 100
    with pytest.raises(ConfigError, match=r"sets data\.name=.mnist., so it cannot run on dataset="):
        _comparison().part("quick", fashion)
    pinned = _comparison(base={"data.name": "cifar10", "train.batch_size": 100})
    assert pinned.part("test", DIRS).config.data.dir == "/cifar10"  # --cifar_dir


def test_data_dirs_name_a_registered_dataset_and_cifar_s_files_once() -> None:
    dirs = spec.DataDirs(dataset="digits", dir="/d", cifar_dir="/c")
    assert dirs.data() == {"data.name": "digits", "data.dir": "/d"}
    assert dirs.cifar10() == {"data.name": "cifar10", "data.dir": "/c"}
    assert dirs.of("mnist") == "" and dirs.title == "digits"
    on_cifar = spec.DataDirs(dataset="cifar10", dir="/c10")
    assert on_cifar.cifar10() == on_cifar.data() == {"data.name": "cifar10", "data.dir": "/c10"}
    assert spec.DataDirs(dataset="fashion_mnist").title == "Fashion-MNIST"
    with pytest.raises(ConfigError, match="dataset='nope' is not known; allowed values: "):
        spec.DataDirs(dataset="nope")
    with pytest.raises(ConfigError, match="its files are dir"):
        spec.DataDirs(dataset="cifar10", cifar_dir="/c")
    with pytest.raises(TypeError):
        spec.DataDirs("/mnist")  # keywords only: a path is no dataset name


def test_a_tuning_holdout_is_a_fraction() -> None:
    grid = ablation.log_grid(0.01, 1.0)
    assert ablation.Tuning(grid=grid, score=len, metric="m").holdout == pytest.approx(1 / 6)
    for bad in (0, 1, 10_000):
        with pytest.raises(ConfigError, match=f"Tuning.holdout={bad}; allowed: a fraction"):
            ablation.Tuning(grid=grid, score=len, metric="m", holdout=bad)


GRID = (0.001, 0.003, 0.01, 0.03, 0.1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("grid", ()),
        ("grid", (0.0, 0.003, 0.01, 0.03, 0.1)),  # not positive
        ("grid", (-0.1, 0.003, 0.01, 0.03, 0.1)),
        ("grid", (0.003, 0.001, 0.01, 0.03, 0.1)),  # not in increasing order
        ("grid", (0.001, 0.001, 0.01, 0.03, 0.1)),  # a repeated rate
        ("grid", (0.01, 0.02, 0.03, 0.04, 0.1)),  # one decade
        ("grid", (0.001, 0.01, 0.1)),  # three rates
        ("grid", 0.01),  # not a tuple
        ("grid", ("0.001", "0.003", "0.01", "0.03", "0.1")),
        ("seeds", ()),
        ("seeds", (1000, 1000)),
        ("seeds", (1000.5,)),
        ("extensions", -1),
        ("holdout", "1/6"),
        ("score", "final loss"),
    ],
)
def test_a_bad_tuning_is_refused_naming_field_value_and_what_is_allowed(
    field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as refused:
        ablation.Tuning(**{"grid": GRID, "score": len, "metric": "m", field: value})
    message = str(refused.value)
    assert message.startswith(f"Tuning.{field}={value!r}; allowed: ") and "\n" not in message


@pytest.mark.parametrize("grid", [(), (0.1, 0.01, 0.001, 0.0001, 0.00001), 0.01, "0.01"])
def test_a_bad_comparison_grid_is_refused(grid: object) -> None:
    with pytest.raises(ConfigError, match=r"^tuning=.*; allowed: None, an ablation\.Tuning, or "):
        _comparison(tuning=grid)
    assert _comparison(tuning=list(GRID)).part("test", DIRS).tuning.grid == GRID


# -- the generalisation gap and two comparisons of the same runs -----------------------------------
def _gap_runs(gap: dict[str, float]) -> dict[str, Run]:
    """Runs whose members end at test accuracy 0.95 (+ noise) and a train-set accuracy `gap`
    above it (+ other noise): a test error minus training error of `gap` per arm."""
    return {
        name: fake_run(
            name,
            [
                [
                    {
                        "step": 40,
                        "train/loss": 0.1,
                        "test/accuracy": 0.95 + 0.002 * n,
                        "train_eval/accuracy": 0.95 + 0.002 * n + gap[name] + 0.001 * m,
                    }
                ]
                for n, m in zip(NOISE, np.roll(NOISE, i + 1), strict=True)
            ],
        )
        for i, name in enumerate(("narrow", "wide"))
    }


@pytest.mark.parametrize(
    "gap, outcome",
    [
        ({"narrow": 0.03, "wide": 0.01}, stats.Outcome.REPRODUCED),
        ({"narrow": 0.01, "wide": 0.03}, stats.Outcome.NOT_REPRODUCED),
    ],
)
def test_the_generalization_gap_is_test_error_minus_train_eval_error(
    tmp_path: Path, gap: dict, outcome: stats.Outcome
) -> None:
    comparison = _comparison(measure=ablation.generalization_gap(), smallest_effect=None)
    runs = _gap_runs(gap)
    per_seed = comparison.measure.values(ablation.groups(runs)["narrow"])
    test_error = 1 - runs["narrow"].final("test/accuracy")
    np.testing.assert_allclose(
        per_seed, test_error - (1 - runs["narrow"].final("train_eval/accuracy"))
    )
    findings = comparison.derived_judge(runs, str(tmp_path))
    assert findings.verdict.outcome == outcome, findings.verdict.reason
    (effect,) = findings.verdict.effects
    assert effect.name == "generalization gap, narrow minus wide"
    assert effect.estimate == pytest.approx(gap["narrow"] - gap["wide"], abs=1e-9)
    assert "generalization gap (%)" in findings.tables[0]
    part = comparison.part("test", DIRS)
    assert (
        "generalization gap, narrow minus wide" in part.rule
        and "paired over seeds (t-interval)" in part.rule
    )


def test_a_gap_without_the_train_set_evaluation_is_refused() -> None:
    base = {"data.name": "mnist", "eval.train_examples": 0}
    comparison = _comparison(measure=ablation.generalization_gap(), base=base)
    with pytest.raises(ConfigError, match=r"^wide: eval\.train_examples=0, .*generalization gap"):
        comparison.part("test", DIRS)


def test_two_comparisons_of_the_same_runs_make_one_experiment_that_trains_them_once(
    tmp_path: Path,
) -> None:
    error = _comparison(
        base={"data.name": "digits", "model.width": 16, "train.batch_size": 32},
        per_preset={},
        budget=ablation.Budget(steps={"test": 20, "quick": 20, "standard": 20, "paper": 20}),
        tuning=None,
        smallest_effect=None,
    )
    gap = dataclasses.replace(
        error, name="wide_gap", measure=ablation.generalization_gap(), runs=error.name
    )
    experiment = error.experiment(gap)
    assert experiment.name == "wide"
    parts = experiment.parts("test", DIRS)
    assert [p.name for p in parts] == ["wide", "wide_gap"] and parts[1].stored == "wide"
    lines: list[str] = []
    result = runner.run_experiment(
        experiment,
        preset="test",
        workdir=str(tmp_path),
        seeds=(0, 1),
        overrides={"parallel.mode": "single"},
        log=lines.append,
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["wide"]
    assert len([line for line in lines if "): train/loss" in line]) == 2  # each arm trained once
    assert len(result.verdict.effects) == 2
    report = (tmp_path / "report.md").read_text()
    assert (
        "generalization gap, narrow minus wide" in report
        and "test error, narrow minus wide" in report
    )


# -- a value at several matched budgets: a speed claim ---------------------------------------------
def _curve_runs(early: dict[str, float], late: dict[str, float]) -> dict[str, Run]:
    """Runs of 40 steps evaluated every 10, whose members' test accuracy is `early` (+ per-seed
    noise) up to step 20 and `late` after it."""
    return {
        name: fake_run(
            name,
            [
                [
                    {
                        "step": s,
                        "train/loss": 0.5,
                        "test/accuracy": (early if s <= 20 else late)[name] + 0.002 * n,
                    }
                    for s in (10, 20, 30, 40)
                ]
                for n in np.roll(NOISE, i)
            ],
        )
        for i, name in enumerate(("narrow", "wide"))
    }


def _matched(fractions: tuple[float, ...] = (0.5, 1.0), **changes: object) -> ablation.Comparison:
    measure = ablation.matched_budgets(ablation.test_error(), fractions)
    return _comparison(**{"measure": measure, "smallest_effect": None, **changes})


def test_a_value_at_matched_budgets_is_a_speed_claim_with_its_rule() -> None:
    comparison = _matched()
    assert comparison.kind == "speed"
    rule = comparison.part("test", DIRS).rule
    assert (
        "For test error, narrow minus wide, at each of the matched budgets 0.5x and 1x the budget "
        "of 40 steps (each arm's value as its runs had logged it by then), paired over seeds, on "
        "the fixed test set" in rule
    )
    assert "Holm's correction over the comparisons at every budget" in rule
    assert "smallest effect" not in rule


@pytest.mark.parametrize(
    "early, late, outcome",
    [
        # Wide ahead at both budgets.
        ({"narrow": 0.90, "wide": 0.95}, {"narrow": 0.92, "wide": 0.97}, "reproduced"),
        # Ahead at half the budget, caught up at the end: not faster at every budget.
        ({"narrow": 0.90, "wide": 0.95}, {"narrow": 0.95, "wide": 0.95}, "inconclusive"),
        # Behind at half the budget.
        ({"narrow": 0.95, "wide": 0.90}, {"narrow": 0.95, "wide": 0.97}, "not reproduced"),
    ],
)
def test_matched_budgets_judge_every_budget(
    tmp_path: Path, early: dict, late: dict, outcome: str
) -> None:
    findings = _matched().derived_judge(_curve_runs(early, late), str(tmp_path))
    assert str(findings.verdict.outcome) == outcome, findings.verdict.reason
    first, second = findings.verdict.effects
    assert first.name == "test error, narrow minus wide at step 20"
    assert second.name == "test error, narrow minus wide at step 40"
    assert first.estimate == pytest.approx(early["wide"] - early["narrow"])
    assert second.estimate == pytest.approx(late["wide"] - late["narrow"], abs=1e-12)
    assert "Holm-adjusted" in findings.verdict.reason
    assert "test error at step 20 (%)" in findings.tables[0]
    assert "test error at step 40 (%)" in findings.tables[0]


def test_a_matched_budget_takes_the_value_last_logged_at_or_before_it(tmp_path: Path) -> None:
    runs = _curve_runs({"narrow": 0.90, "wide": 0.95}, {"narrow": 0.80, "wide": 0.99})
    findings = _matched((0.6, 1.0)).derived_judge(runs, str(tmp_path))
    at_24 = findings.verdict.effects[0]
    assert at_24.name.endswith("at step 24")
    assert at_24.estimate == pytest.approx(0.05)  # the evaluation of step 20


def test_several_arms_at_matched_budgets_are_holm_adjusted_over_all(tmp_path: Path) -> None:
    wider = ablation.Variant("wider", {"model.width": 512}, "wider")
    comparison = _matched(arms=(*_comparison().arms, wider))
    runs = _curve_runs({"narrow": 0.90, "wide": 0.95}, {"narrow": 0.92, "wide": 0.97})
    runs["wider"] = dataclasses.replace(runs["wide"], variant=wider)
    verdict = comparison.derived_judge(runs, str(tmp_path)).verdict
    assert [e.name for e in verdict.effects] == [
        "test error, narrow minus wide at step 20",
        "test error, narrow minus wider at step 20",
        "test error, narrow minus wide at step 40",
        "test error, narrow minus wider at step 40",
    ]
    assert verdict.outcome == stats.Outcome.REPRODUCED, verdict.reason
    assert verdict.reason.count("Holm-adjusted") == 4


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ablation.matched_budgets(ablation.test_error(), (1.0,)), r"fractions=\(1.0,\)"),
        (lambda: ablation.matched_budgets(ablation.test_error(), (1.0, 0.5)), "increasing"),
        (lambda: ablation.matched_budgets(ablation.test_error(), (0.5, 1.5)), r"in \(0, 1\]"),
        (lambda: ablation.matched_budgets(ablation.steps_to(TARGET), (0.5, 1.0)), "not a ratio"),
        (lambda: _matched(smallest_effect=0.002), "smallest_effect=0.002: a measure at matched"),
    ],
)
def test_a_bad_matched_budget_is_refused_with_one_line(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


# -- steps to several targets, against a smallest speed-up -----------------------------------------
EARLY = ablation.Target("train/accuracy", 0.5)


def _two_target_runs(reached: dict[str, list[tuple[int | None, int | None]]]) -> dict[str, Run]:
    """Runs of 1,000 steps logged every 10 whose member i reaches `EARLY` at reached[name][i][0]
    and `TARGET` at reached[name][i][1] (None: never)."""

    def accuracy(step: int, early: int | None, late: int | None) -> float:
        if late is not None and step >= late:
            return 0.95
        return 0.6 if early is not None and step >= early else 0.1

    return {
        name: fake_run(
            name,
            [
                [{"step": s, "train/accuracy": accuracy(s, *at)} for s in range(10, 1001, 10)]
                for at in members
            ],
        )
        for name, members in reached.items()
    }


def _speed(**changes: object) -> ablation.Comparison:
    return _comparison(
        **{"measure": ablation.steps_to(EARLY, TARGET), "smallest_effect": 2.0, **changes}
    )


def test_steps_to_several_targets_derive_one_ratio_each_holm_adjusted() -> None:
    comparison = _speed()
    assert comparison.kind == "speed"
    part = comparison.part("test", DIRS)
    assert part.target == TARGET
    assert part.tuning.metric == "steps to train/accuracy >= 0.9"  # the last target's
    assert tuple(part.config.train.reach_targets) == (EARLY.spec, TARGET.spec)
    assert (
        "For each of steps to train/accuracy >= 0.5, narrow / wide; steps to train/accuracy >= "
        "0.9, narrow / wide, at the budget of 40 steps" in part.rule
    )
    assert "Holm's correction over the comparisons, of no effect and of the smallest effect" in (
        part.rule
    )
    assert "exact sign-flip test where a run is censored" in part.rule
    assert "reproduced needs a bound toward the claim to reach 2x" in part.rule
    with pytest.raises(ConfigError, match=r"allowed: one or more ablation\.Target"):
        ablation.steps_to()


FAST = [(100, 200), (110, 210), (90, 190), (100, 230), (120, 220), (110, 200)]


@pytest.mark.parametrize(
    "narrow, outcome, why",
    [
        # About 4x at both targets, above the claimed 2x.
        (
            [(400, 800), (450, 900), (500, 850), (420, 950), (480, 880), (460, 900)],
            "reproduced",
            "excludes no effect",
        ),
        # 4x at the last target, but only about 1.2x at the first: real, smaller than claimed.
        (
            [(120, 800), (130, 900), (110, 850), (120, 950), (140, 880), (130, 900)],
            "not reproduced",
            "smaller than claimed: its interval excludes the claimed effect of 2x or more "
            "(Holm-adjusted p",
        ),
        # A seed of narrow never reaches the last target: censored, judged by the sign-flip test.
        (
            [(400, 800), (450, 900), (500, None), (420, 950), (480, 880), (460, 900)],
            "reproduced",
            "excludes no effect",
        ),
    ],
)
def test_a_speed_claim_at_several_targets_gives_each_outcome(
    tmp_path: Path, narrow: list, outcome: str, why: str
) -> None:
    runs = _two_target_runs({"narrow": narrow, "wide": FAST})
    findings = _speed().derived_judge(runs, str(tmp_path))
    verdict = findings.verdict
    assert str(verdict.outcome) == outcome, verdict.reason
    assert why in verdict.reason
    early, late = verdict.effects
    assert early.name == "steps to train/accuracy >= 0.5, narrow / wide"
    assert late.name == "steps to train/accuracy >= 0.9, narrow / wide"
    ratios = [n[0] / w[0] for n, w in zip(narrow, FAST, strict=True)]
    assert early.estimate == pytest.approx(np.exp(np.mean(np.log(ratios))))
    assert np.isfinite(early.p_margin) and np.isfinite(late.p_margin)
    assert late.censored == sum(n[1] is None for n in narrow)
    if late.censored:
        assert late.method.startswith("exact sign-flip")
    assert "steps to train/accuracy >= 0.5" in findings.tables[0]
    assert "steps to train/accuracy >= 0.9" in findings.tables[0]


def test_a_target_no_run_reaches_is_inconclusive_and_noted(tmp_path: Path) -> None:
    never = [(e, None) for e, _ in FAST]
    runs = _two_target_runs({"narrow": [(400, None)] * 6, "wide": never})
    findings = _speed().derived_judge(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.INCONCLUSIVE, findings.verdict.reason
    assert findings.verdict.effects[1].interval() == "unbounded"
    (note,) = findings.notes
    assert note.startswith("No run of narrow and wide reached train/accuracy >= 0.9 within 1,000")


# -- targets of the dataset, a named baseline, a budget per epoch, the previous rule --------------
def _targets_of(data_config: ml_collections.ConfigDict) -> tuple[ablation.Target, ...]:
    """A target that depends on the dataset: 50% training accuracy on MNIST, 80% on any other."""
    return (ablation.Target("train/accuracy", 0.5 if data_config.name == "mnist" else 0.8),)


def test_targets_of_the_dataset_are_made_when_the_part_is_built_or_runs_judged(
    tmp_path: Path,
) -> None:
    comparison = _comparison(
        base={"model.width": 32, "train.batch_size": 100},
        measure=ablation.steps_to(_targets_of),
        smallest_effect=None,
    )
    assert comparison.kind == "speed"
    mnist = comparison.part("test", DIRS)
    digits = comparison.part("test", spec.DataDirs(dataset="digits", dir="/digits"))
    assert mnist.config.train.reach_targets == ("train/accuracy>=0.5",)
    assert digits.config.train.reach_targets == ("train/accuracy>=0.8",)
    assert mnist.target == ablation.Target("train/accuracy", 0.5)
    assert "steps to train/accuracy >= 0.8, narrow / wide" in digits.rule
    assert digits.tuning.metric == "steps to train/accuracy >= 0.8"
    # The chance cross-entropy halved 1, 2 and 3 times, from the dataset's classes.
    losses = _comparison(measure=ablation.steps_to(ablation.loss_targets), smallest_effect=None)
    config = losses.part("test", DIRS).config
    assert config.train.reach_targets == tuple(t.spec for t in ablation.loss_targets(config.data))
    # The derived judge makes it for its runs' dataset.
    runs = _speed_runs({"narrow": [800, 900, 850, 950, 900], "wide": [100, 150, 100, 150, 120]})
    for run in runs.values():
        run.config.data.name = "mnist"
    (effect,) = comparison.derived_judge(runs, str(tmp_path)).verdict.effects
    assert effect.name == "steps to train/accuracy >= 0.5, narrow / wide"
    group = ablation.groups(runs)["wide"]
    with pytest.raises(ConfigError, match="made for one first"):
        ablation.steps_to(_targets_of).values(group)


def test_a_named_baseline_is_compared_with_every_other_arm_in_their_order(tmp_path: Path) -> None:
    wider = ablation.Variant("wider", {"model.width": 512}, "wider")
    narrow, wide = _comparison().arms
    # The claim turned around: the narrow and the wider nets have a higher error than the wide one.
    comparison = _comparison(arms=(narrow, wider, wide), baseline="wide", direction="higher")
    part = comparison.part("test", DIRS)
    assert [v.name for v in part.variants] == ["narrow", "wider", "wide"]
    assert "test error, narrow minus wide; test error, wider minus wide" in part.rule
    runs = _value_runs({"narrow": 0.90, "wide": 0.95})
    runs["wider"] = dataclasses.replace(runs["narrow"], variant=wider)
    verdict = comparison.derived_judge(runs, str(tmp_path)).verdict
    assert [e.name for e in verdict.effects] == [
        "test error, narrow minus wide",
        "test error, wider minus wide",
    ]
    assert verdict.effects[0].estimate == pytest.approx(0.05)
    assert verdict.outcome == stats.Outcome.REPRODUCED


def test_several_arms_at_several_targets_are_each_arm_at_each_target() -> None:
    wider = ablation.Variant("wider", {"model.width": 512}, "wider")
    comparison = _speed(arms=(*_comparison().arms, wider))
    fast = _two_target_runs({"wide": FAST})["wide"]
    runs = _two_target_runs({"narrow": [(400, 800)] * 6, "wide": FAST})
    runs["wider"] = dataclasses.replace(fast, variant=wider)
    names = [
        f"steps to train/accuracy >= {t:g}, narrow / {arm}"
        for arm in ("wide", "wider")
        for t in (0.5, 0.9)
    ]
    assert [e.name for e in comparison.verdict(ablation.groups(runs)).effects] == names
    assert "; ".join(names) in comparison.part("test", DIRS).rule


def test_a_budget_in_complete_batches_logged_per_epoch() -> None:
    budget = ablation.Budget(
        epochs={"test": 2, "quick": 5, "standard": 10, "paper": 100},
        rounding="down",
        logs_per_epoch=20,
        evals_per_epoch=2,
    )
    comparison = _comparison(budget=budget, base={"train.batch_size": 128})
    config = comparison.part("standard", DIRS).config
    # 10 epochs of MNIST's 60,000 examples at batch 128 are 4,687.5 batches: 4,687 complete ones.
    assert config.train.steps == 4_687
    assert dataclasses.replace(budget, rounding="up").of("standard", config) == 4_688
    # 200 training logs (20 an epoch) and 20 evaluations (2 an epoch), on the logging interval.
    assert config.train.log_every_steps == 4_687 // 200 == config.train.steps_per_call
    assert config.eval.every_steps == round(4_687 / 20 / 23) * 23
    # The default: 100 logs and 10 evaluations per run.
    quick = _comparison().part("quick", DIRS).config
    assert quick.train.log_every_steps == quick.train.steps // 100
    assert quick.eval.every_steps == round(quick.train.steps / 10 / quick.train.log_every_steps) * (
        quick.train.log_every_steps
    )
    with pytest.raises(ConfigError, match="rounding='nearest'; allowed values: up, down"):
        dataclasses.replace(budget, rounding="nearest")
    with pytest.raises(ConfigError, match="logs_per_epoch=-1"):
        dataclasses.replace(budget, logs_per_epoch=-1)


def test_a_previous_rule_is_judged_on_the_same_runs_against_no_effect(tmp_path: Path) -> None:
    matched = ablation.matched_budgets(ablation.test_error(), (0.5, 1.0))
    comparison = _comparison(
        previous=matched, previous_rule="the old rule"
    )  # smallest effect 0.2 pp
    runs = _value_runs({"narrow": 0.90, "wide": 0.95})
    findings = comparison.derived_judge(runs, str(tmp_path))
    by_name = ablation.groups(runs)
    expected = _comparison(measure=matched, smallest_effect=None).verdict(by_name)
    assert findings.previous.rule == "the old rule"
    assert findings.previous.verdict.outcome == expected.outcome
    assert findings.previous.verdict.reason == expected.reason
    assert [e.name for e in findings.previous.verdict.effects] == [
        "test error, narrow minus wide at step 20",
        "test error, narrow minus wide at step 40",
    ]
    assert findings.verdict.reason == _comparison().verdict(by_name).reason
    assert _comparison().derived_judge(runs, str(tmp_path)).previous is None
