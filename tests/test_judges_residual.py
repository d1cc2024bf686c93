"""The residual judge on fabricated histories: each of the three outcomes, and the settled test
on the training errors that makes an otherwise decided verdict inconclusive."""

import numpy as np
from fake_runs import fake_run

from dlresearch.ablation import Run, stats
from experiments import residual

NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])  # per seed: a spread, so intervals are finite
STEPS = np.arange(10, 110, 10)


def _member(error: float, falling: float = 0.0) -> list[dict]:
    """A member ending at training `error`, `falling` higher at step 80 (linear from there)."""
    errors = np.where(STEPS <= 80, error + falling, error + falling * (100 - STEPS) / 20)
    return [
        {"step": int(s), "train/loss": 2.5 * float(e), "train/accuracy": 1 - float(e)}
        | {"test/accuracy": 1 - float(e)}
        for s, e in zip(STEPS, errors, strict=True)
    ]


def _runs(
    errors: dict[str, float], noise: float = 0.002, falling: dict[str, float] | None = None
) -> dict[str, Run]:
    """Variants kind_depth with the given mean final training errors (and per-seed noise that
    differs between variants, as independent training noise would)."""
    falling = falling or {}
    runs = {}
    for i, (name, error) in enumerate(errors.items()):
        kind, depth = name.split("_")
        members = [_member(error + noise * n, falling.get(name, 0.0)) for n in np.roll(NOISE, i)]
        config = {"model.depth": int(depth), "model.residual": kind == "residual"}
        runs[name] = fake_run(name, members, config=config)
    return runs


DEGRADES = {"plain_2": 0.02, "residual_2": 0.02, "plain_8": 0.10, "residual_8": 0.015}


def test_reproduced_when_plain_nets_degrade_and_residual_nets_do_not(tmp_path) -> None:
    findings = residual.judge(_runs(DEGRADES), str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert len(findings.verdict.effects) == 2
    assert set(findings.judged) == set(DEGRADES)
    assert findings.previous.verdict.outcome == stats.Outcome.REPRODUCED


def test_inconclusive_when_the_deeper_plain_net_is_only_slower(tmp_path) -> None:
    """Higher error of a deeper plain net whose error still falls fast is not degradation: its
    fall over the last fifth, continued to 10x the budget, takes it below the shallow one."""
    runs = _runs(DEGRADES, falling={"plain_8": 0.05})
    verdict = residual.judge(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "Not settled" in verdict.reason and "As measured: reproduced" in verdict.reason


def test_a_fall_that_only_enlarges_the_effect_does_not_block_it(tmp_path) -> None:
    """Issue 20: the convergence clause blocked nets whose further progress can only enlarge the
    effect (residual-4 and plain-4 still falling); the settled test looks at the direction."""
    runs = _runs(DEGRADES, falling={"residual_8": 0.01, "plain_2": 0.01})
    for run in runs.values():  # the training loss of every net still falls 20% at the end
        for member in run.history:
            member[-1]["train/loss"] *= 0.8
    findings = residual.judge(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert findings.previous.verdict.outcome == stats.Outcome.INCONCLUSIVE


def test_not_reproduced_when_the_deeper_plain_net_trains_better(tmp_path) -> None:
    runs = _runs({"plain_2": 0.10, "residual_2": 0.02, "plain_8": 0.02, "residual_8": 0.02})
    assert residual.judge(runs, str(tmp_path)).verdict.outcome == stats.Outcome.NOT_REPRODUCED


def test_inconclusive_when_the_degradation_is_within_the_seeds_spread(tmp_path) -> None:
    runs = _runs(
        {"plain_2": 0.050, "residual_2": 0.05, "plain_8": 0.051, "residual_8": 0.05}, noise=0.01
    )
    assert residual.judge(runs, str(tmp_path)).verdict.outcome == stats.Outcome.INCONCLUSIVE


def test_the_part_declares_a_value_claim() -> None:
    (part,) = residual.parts("quick", residual.ablation.DataDirs())
    assert part.kind == "value" and "higher training error" in part.quote
