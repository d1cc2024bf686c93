"""The residual judge on fabricated histories: each of the three outcomes, and the convergence
condition that makes an otherwise decided verdict inconclusive."""

import numpy as np
from fake_runs import fake_run

from dlresearch import ablation
from dlresearch.ablation import Run, stats
from experiments import residual

NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])  # per seed: a spread, so intervals are finite
STEPS = np.arange(10, 110, 10)


def _member(error: float, final_drop: float) -> list[dict]:
    """A member ending at training `error` whose loss fell by `final_drop` over the last 20%."""
    loss = np.where(STEPS <= 80, 1.0, 1.0 - final_drop * (STEPS - 80) / 20)
    return [
        {"step": int(s), "train/loss": float(value), "train/accuracy": 1 - error}
        | {"test/accuracy": 1 - error}
        for s, value in zip(STEPS, loss, strict=True)
    ]


def _runs(errors: dict[str, float], noise: float = 0.002, drop: float = 0.01) -> dict[str, Run]:
    """Variants kind_depth with the given mean final training errors (and per-seed noise that
    differs between variants, as independent training noise would)."""
    runs = {}
    for i, (name, error) in enumerate(errors.items()):
        kind, depth = name.split("_")
        members = [_member(error + noise * n, drop) for n in np.roll(NOISE, i)]
        config = {"model.depth": int(depth), "model.residual": kind == "residual"}
        runs[name] = fake_run(name, members, config=config)
    return runs


DEGRADES = {"plain_2": 0.02, "residual_2": 0.02, "plain_8": 0.10, "residual_8": 0.015}


def test_loss_drop_is_the_fall_over_the_last_fifth_of_training() -> None:
    group = ablation.groups(_runs({"plain_2": 0.1}, drop=0.25))["plain_2"]
    assert np.isclose(ablation.loss_drop(group), 0.25)


def test_reproduced_when_plain_nets_degrade_and_residual_nets_do_not(tmp_path) -> None:
    findings = residual.judge(_runs(DEGRADES), str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    assert len(findings.verdict.effects) == 2
    assert set(findings.judged) == set(DEGRADES)


def test_inconclusive_whatever_the_errors_when_the_nets_have_not_converged(
    tmp_path,
) -> None:
    runs = _runs(DEGRADES, drop=2 * ablation.CONVERGED_CHANGE)
    verdict = residual.judge(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "Not every net compared has converged" in verdict.reason
    assert "As measured: reproduced" in verdict.reason


def test_inconclusive_when_the_deeper_plain_net_is_still_training(tmp_path) -> None:
    """Higher error of a deeper plain net that is only slower is not degradation: a longer
    budget could bring it below the shallow one."""
    runs = _runs(DEGRADES)
    slower = _runs({"plain_8": DEGRADES["plain_8"]}, drop=2 * ablation.CONVERGED_CHANGE)
    runs["plain_8"] = slower["plain_8"]
    verdict = residual.judge(runs, str(tmp_path)).verdict
    assert verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "the training loss of plain_8 fell 20% over" in verdict.reason


def test_not_reproduced_when_the_deeper_plain_net_trains_better(tmp_path) -> None:
    runs = _runs({"plain_2": 0.10, "residual_2": 0.02, "plain_8": 0.02, "residual_8": 0.02})
    assert residual.judge(runs, str(tmp_path)).verdict.outcome == stats.Outcome.NOT_REPRODUCED


def test_inconclusive_when_the_degradation_is_within_the_seeds_spread(tmp_path) -> None:
    runs = _runs(
        {"plain_2": 0.050, "residual_2": 0.05, "plain_8": 0.051, "residual_8": 0.05}, noise=0.01
    )
    assert residual.judge(runs, str(tmp_path)).verdict.outcome == stats.Outcome.INCONCLUSIVE
