"""The batchnorm judges on fabricated histories: each gives each of the three outcomes."""

import numpy as np
from fake_runs import fake_run, fake_tuning_run

from dlresearch import ablation
from dlresearch.ablation import Run, stats
from experiments import batchnorm

# Per seed offsets: a spread between seeds, so that intervals are finite.
NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])
STEPS = (10, 20, 30, 40)
UNITS = 3


def _fig1_member(accuracy: float, medians: list[float], spread: float = 1.0) -> list[dict]:
    """A member whose every unit's median input moves along `medians` (one per record) with the
    given 15-85% spread; unit u is offset by u, which leaves its drift unchanged."""
    records = []
    for step, median in zip(STEPS, medians, strict=True):
        record = {"step": step, "train/loss": 0.1, "train/accuracy": 0.99}
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
        records.append(record)
    return records


def _fig1_runs(
    accuracy: dict[str, float], drift: dict[str, float], accuracy_noise: float = 0.002
) -> dict[str, Run]:
    """Runs whose members have the given mean test accuracy and median drift (range / spread),
    with per-seed noise that differs between the two nets."""
    runs = {}
    for i, name in enumerate(("baseline", "batchnorm")):
        members = [
            _fig1_member(
                accuracy[name] + accuracy_noise * n,
                [0.0, drift[name] * (1 + 0.1 * n), 0.5 * drift[name], 0.0],
            )
            for n in np.roll(NOISE, i)
        ]
        runs[name] = fake_run(name, members, config={"model.depth": 3})
    return runs


def test_drift_is_the_mean_over_units_of_the_median_range_over_the_final_spread() -> None:
    run = fake_run("v", [_fig1_member(0.9, [0.0, 3.0, 1.0, 2.0], spread=2.0)])
    group = batchnorm.ablation.groups({"v": run})["v"]
    np.testing.assert_allclose(batchnorm.drift(group), [1.5])


def test_fig1_reproduced_when_batchnorm_errs_less_and_drifts_less(tmp_path) -> None:
    runs = _fig1_runs({"baseline": 0.95, "batchnorm": 0.98}, {"baseline": 2.0, "batchnorm": 0.2})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert len(findings.verdict.effects) == 2
    assert findings.judged == {"baseline": tuple(range(5)), "batchnorm": tuple(range(5))}


def test_fig1_not_reproduced_when_batchnorm_drifts_more(tmp_path) -> None:
    runs = _fig1_runs({"baseline": 0.95, "batchnorm": 0.98}, {"baseline": 0.2, "batchnorm": 2.0})
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.NOT_REPRODUCED
    outcomes = [stats.verdict(e, claim="greater").outcome for e in findings.verdict.effects]
    assert outcomes == [stats.Outcome.REPRODUCED, stats.Outcome.NOT_REPRODUCED]


def test_fig1_inconclusive_when_the_error_gap_is_within_the_noise(tmp_path) -> None:
    runs = _fig1_runs(
        {"baseline": 0.950, "batchnorm": 0.951},
        {"baseline": 2.0, "batchnorm": 0.2},
        accuracy_noise=0.01,
    )
    findings = batchnorm.judge_fig1(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.INCONCLUSIVE


def converged_loss(falling: float = 0.0) -> list[float]:
    """A training loss per step of `STEPS` that falls by `falling` over the last fifth of them."""
    tail = [s for s in STEPS if s <= 0.8 * STEPS[-1]][-1]
    return [1.0 if s <= tail else 1.0 - falling for s in STEPS]


def _deep_runs(
    accuracy: dict[str, float], noise: float = 0.002, falling: float = 0.0
) -> dict[str, Run]:
    def member(acc: float) -> list[dict]:
        return [
            {"step": s, "train/loss": loss, "train/accuracy": acc, "test/accuracy": acc}
            for s, loss in zip(STEPS, converged_loss(falling), strict=True)
        ]

    return {
        name: fake_run(
            name,
            [member(accuracy[name] + noise * n) for n in np.roll(NOISE, i)],
            config={"model.depth": 20},
            lr=batchnorm.DEEP_GRID[2],
            tuning=fake_tuning_run(name, batchnorm.DEEP_GRID),
        )
        for i, name in enumerate(("baseline", "batchnorm"))
    }


def test_deep_reproduced_against_a_baseline_that_trains(tmp_path) -> None:
    findings = batchnorm.judge_deep(
        _deep_runs({"baseline": 0.90, "batchnorm": 0.97}), str(tmp_path)
    )
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert [c.passed for c in findings.checks] == [True]
    # The fabricated runs were selected at the middle rate of the grid: no edge note.
    assert not any("edge" in note or "lowest" in note for note in findings.notes)


def test_deep_check_fails_and_says_so_when_the_baseline_is_at_chance(tmp_path) -> None:
    runs = _deep_runs({"baseline": batchnorm.CHANCE, "batchnorm": 0.97})
    findings = batchnorm.judge_deep(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED  # a check never decides
    assert [c.passed for c in findings.checks] == [False]
    assert any("did not train at any rate" in note for note in findings.notes)


def test_deep_not_reproduced_when_batchnorm_errs_more(tmp_path) -> None:
    findings = batchnorm.judge_deep(
        _deep_runs({"baseline": 0.97, "batchnorm": 0.90}), str(tmp_path)
    )
    assert findings.verdict.outcome == stats.Outcome.NOT_REPRODUCED


def test_deep_inconclusive_while_a_net_still_learns(tmp_path) -> None:
    runs = _deep_runs({"baseline": 0.90, "batchnorm": 0.97}, falling=2 * ablation.CONVERGED_CHANGE)
    verdict = batchnorm.judge_deep(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "baseline fell 20%, batchnorm fell 20%" in verdict.reason
    assert "As measured: reproduced" in verdict.reason


def test_deep_inconclusive_within_the_test_set_noise(tmp_path) -> None:
    runs = _deep_runs({"baseline": 0.950, "batchnorm": 0.951}, noise=0.0005)
    findings = batchnorm.judge_deep(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.INCONCLUSIVE


def test_a_rate_selected_at_the_grid_edge_is_noted(tmp_path) -> None:
    runs = _deep_runs({"baseline": 0.90, "batchnorm": 0.97})
    runs["batchnorm"].config.optim.lr = batchnorm.DEEP_GRID[-1]
    notes = batchnorm.judge_deep(runs, str(tmp_path)).notes
    assert [note.split(":")[0] for note in notes if "highest of the grid" in note] == ["batchnorm"]
