"""The batchnorm judges on fabricated histories: each gives each of the three outcomes."""

import math

import numpy as np
from fake_runs import fake_run, fake_tuning_run, speed_history

from dlresearch.ablation import Run, stats
from experiments import batchnorm

# Per seed offsets: a spread between seeds, so that intervals are finite.
NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])
UNITS = 3


def _fig1_member(
    tau: float, accuracy: float, medians: list[float], spread: float = 1.0
) -> list[dict]:
    """A member learning at time constant `tau` (`fake_runs.speed_history`, 400 steps) with test
    accuracy `accuracy`, whose every unit's median input moves along `medians` (at steps 100,
    200, 300 and 400, linear between) with the given 15-85% spread; unit u is offset by u, which
    leaves its drift unchanged."""
    (records,) = speed_history([tau], steps=400)
    anchors = [0, 100, 200, 300, 400]
    for record in records:
        median = float(np.interp(record["step"], anchors, [medians[0], *medians]))
        record["test/accuracy"] = accuracy
        for u in range(UNITS):
            p50 = median + u
            record.update(
                {
                    f"diag/units_p15/{u}": p50 - spread / 2,
                    f"diag/units_p50/{u}": p50,
                    f"diag/units_p85/{u}": p50 + spread / 2,
                }
            )
        record.update({f"diag/unit_p{q}": record[f"diag/units_p{q}/0"] for q in (15, 50, 85)})
    return records


def _fig1_runs(
    tau: dict[str, float], drift: dict[str, float], tau_noise: float = 0.05
) -> dict[str, Run]:
    """Runs whose members learn at time constants about `tau` and drift as `drift` (range /
    spread), with per-seed noise that differs between the two nets."""
    runs = {}
    for i, name in enumerate(("baseline", "batchnorm")):
        members = [
            _fig1_member(
                tau[name] * (1 + tau_noise * n),
                0.95,
                [0.0, drift[name] * (1 + 0.1 * n), 0.5 * drift[name], 0.0],
            )
            for n in np.roll(NOISE, i)
        ]
        runs[name] = fake_run(name, members, config={"model.depth": 3})
    return runs


def test_drift_is_the_mean_over_units_of_the_median_range_over_the_final_spread() -> None:
    run = fake_run("v", [_fig1_member(50, 0.9, [0.0, 3.0, 1.0, 2.0], spread=2.0)])
    group = batchnorm.ablation.groups({"v": run})["v"]
    np.testing.assert_allclose(batchnorm.drift(group), [1.5])


def test_fig1_reproduced_when_batchnorm_reaches_every_target_sooner(tmp_path) -> None:
    runs = _fig1_runs({"baseline": 60.0, "batchnorm": 20.0}, {"baseline": 2.0, "batchnorm": 0.2})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert [e.name for e in findings.verdict.effects] == [
        f"baseline/batchnorm steps to {error}% training error" for error in ("45", "22.5", "11.25")
    ]
    assert [c.passed for c in findings.checks] == [True]
    assert findings.judged == {"baseline": tuple(range(5)), "batchnorm": tuple(range(5))}


def test_fig1_drift_is_a_sanity_check_that_never_decides(tmp_path) -> None:
    """Before issue 20 a BatchNorm net drifting more refuted the part."""
    runs = _fig1_runs({"baseline": 60.0, "batchnorm": 20.0}, {"baseline": 0.2, "batchnorm": 2.0})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert [c.passed for c in findings.checks] == [False]


def test_fig1_not_reproduced_when_batchnorm_is_slower(tmp_path) -> None:
    runs = _fig1_runs({"baseline": 20.0, "batchnorm": 60.0}, {"baseline": 2.0, "batchnorm": 0.2})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.NOT_REPRODUCED


def test_fig1_inconclusive_when_the_speed_difference_is_within_the_noise(tmp_path) -> None:
    runs = _fig1_runs(
        {"baseline": 40.0, "batchnorm": 40.4}, {"baseline": 2.0, "batchnorm": 0.2}, tau_noise=0.1
    )
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.INCONCLUSIVE


def test_fig1_previous_rule_compared_test_errors_at_matched_budgets(tmp_path) -> None:
    """Equal test errors: the previous rule (test error gaps at matched budgets, settled) found
    no effect where the steps to the training targets decide."""
    runs = _fig1_runs({"baseline": 60.0, "batchnorm": 20.0}, {"baseline": 2.0, "batchnorm": 0.2})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert findings.previous.verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert [e.name for e in findings.previous.verdict.effects] == [
        "test error without minus with BatchNorm at step 200",
        "test error without minus with BatchNorm at step 400",
    ]


DEEP_STEPS = 1_000
SIX = [0, 10, -10, 20, -20, 5]  # per seed: steps added to when a net leaves the stall band


def _member(leaves: float) -> list[dict]:
    """A training loss of 2.3 until step `leaves` (inf: never), then 1.0."""
    return [
        {"step": s, "train/loss": 2.3 if s < leaves else 1.0, "train/accuracy": 0.5}
        | {"test/accuracy": 0.5}
        for s in range(10, DEEP_STEPS + 1, 10)
    ]


def _deep_runs(
    leaves: dict[str, float],
    tuning: list[float] | None = None,
    bn_lr: float = batchnorm.DEEP_GRID[2],
    seeds: int = 6,
) -> dict[str, Run]:
    """Each net leaving the stall band at about `leaves` steps (inf: never), the baseline's
    tuning run at every rate of `DEEP_GRID` at the steps `tuning` (default: never)."""
    runs = {}
    for name, at in leaves.items():
        tuning_run = fake_tuning_run(name, batchnorm.DEEP_GRID)
        tuning_run.history = [_member(s) for s in (tuning or [math.inf] * len(batchnorm.DEEP_GRID))]
        tuning_run.config.train.steps = DEEP_STEPS
        runs[name] = fake_run(
            name,
            [_member(at + d) for d in SIX[:seeds]],
            config={"model.depth": 20},
            lr=bn_lr if name == "batchnorm" else batchnorm.DEEP_GRID[0],
            tuning=tuning_run,
        )
    return runs


def test_deep_reproduced_when_the_baseline_stalls_everywhere_and_batchnorm_trains(tmp_path):
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 50})
    findings = batchnorm.judge_deep(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    (effect,) = findings.verdict.effects
    assert effect.method == "exact sign-flip (censored runs) on log ratios"
    assert "is inside the grid" in findings.verdict.reason


def test_deep_not_reproduced_when_the_baseline_trains_within_ten_times_batchnorms_steps(
    tmp_path,
) -> None:
    runs = _deep_runs({"baseline": 150, "batchnorm": 50})
    assert batchnorm.judge_deep(runs, str(tmp_path)).verdict.outcome == (
        stats.Outcome.NOT_REPRODUCED
    )


def test_deep_inconclusive_when_the_baseline_trains_at_another_rate_of_the_grid(tmp_path):
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 50}, tuning=[math.inf] * 4 + [200])
    verdict = batchnorm.judge_deep(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "does not stall at every rate" in verdict.reason


def test_deep_inconclusive_when_the_grid_does_not_bracket_batchnorms_rate(tmp_path):
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 50}, bn_lr=batchnorm.DEEP_GRID[-1])
    verdict = batchnorm.judge_deep(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "is not inside the grid" in verdict.reason


def test_deep_inconclusive_where_the_budget_cannot_tell_a_stall_from_slow_training(tmp_path):
    """BatchNorm leaves the band at about step 150: a stall needs more than 1,500 steps."""
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 150})
    assert batchnorm.judge_deep(runs, str(tmp_path)).verdict.outcome == (stats.Outcome.INCONCLUSIVE)


def test_deep_below_six_seeds_a_censored_stall_is_inconclusive(tmp_path) -> None:
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 50}, seeds=5)
    verdict = batchnorm.judge_deep(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "at least 6 seeds" in verdict.reason


def test_deep_previous_rule_compared_test_errors(tmp_path) -> None:
    findings = batchnorm.judge_deep(
        _deep_runs({"baseline": math.inf, "batchnorm": 50}), str(tmp_path)
    )
    assert findings.previous is not None and "test error" in findings.previous.rule


def test_a_rate_selected_at_the_grid_edge_is_noted(tmp_path) -> None:
    runs = _deep_runs({"baseline": math.inf, "batchnorm": 50})
    runs["batchnorm"].config.optim.lr = batchnorm.DEEP_GRID[-1]
    notes = batchnorm.judge_deep(runs, str(tmp_path)).notes
    assert [note.split(":")[0] for note in notes if "highest of the grid" in note] == ["batchnorm"]
