"""The optimizers judge on fabricated histories: each of the three outcomes, Holm over the
comparisons at the matched budgets, the settled test, and the grid-edge note of a tuned rate."""

import numpy as np
from fake_runs import fake_run, fake_tuning_run

from dlresearch.ablation import Run, stats
from experiments import optimizers

NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])  # per seed: a spread, so intervals are finite
MIDDLE = optimizers.GRID[len(optimizers.GRID) // 2]


def _runs(costs: dict[str, float], noise: float = 0.005, lr: float = MIDDLE) -> dict[str, Run]:
    """Every optimizer with the given mean final training cost (per-seed noise differing between
    optimizers), its tuning run over the whole grid."""
    runs = {}
    for i, (name, cost) in enumerate(costs.items()):
        # Settled: the cost at 0.8x each matched budget (steps 40 and 80) is as at it (50, 100).
        members = [
            [
                {"step": s, "train/loss": scale * (cost + noise * n), "train/accuracy": 0.9}
                | {"test/accuracy": 0.9}
                for s, scale in ((10, 2.0), (80, 1.0), (100, 1.0))
            ]
            for n in np.roll(NOISE, i)
        ]
        tuning = fake_tuning_run(name, optimizers.GRID)
        runs[name] = fake_run(name, members, part="mlp", lr=lr, tuning=tuning)
    return runs


def _costs(adam: float, others: float) -> dict[str, float]:
    return {name: adam if name == "adam" else others for name in optimizers.NAMES}


def test_reproduced_when_adam_ends_lowest_against_every_optimizer(tmp_path) -> None:
    findings = optimizers.judge(_runs(_costs(adam=0.05, others=0.2)), str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    # Every other optimizer against Adam at half the budget and at the whole of it.
    assert len(findings.verdict.effects) == 2 * (len(optimizers.NAMES) - 1)
    assert "Holm-adjusted" in findings.verdict.reason
    assert not [n for n in findings.notes if "of the grid" in n]  # selected at an inner rate


def test_not_reproduced_when_an_optimizer_ends_clearly_below_adam(tmp_path) -> None:
    costs = _costs(adam=0.05, others=0.2) | {"rmsprop": 0.01}
    assert optimizers.judge(_runs(costs), str(tmp_path)).verdict.outcome == (
        stats.Outcome.NOT_REPRODUCED
    )


def test_inconclusive_when_one_comparison_is_within_the_noise(tmp_path) -> None:
    costs = _costs(adam=0.05, others=0.2) | {"adadelta": 0.051}
    assert optimizers.judge(_runs(costs), str(tmp_path)).verdict.outcome == (
        stats.Outcome.INCONCLUSIVE
    )


def test_each_comparison_is_judged_at_its_holm_adjusted_p(tmp_path) -> None:
    costs = _costs(adam=0.05, others=0.2) | {"adagrad": 0.07, "adadelta": 0.06}
    verdict = optimizers.judge(_runs(costs, noise=0.01), str(tmp_path)).verdict
    raw = [e.p for e in verdict.effects]
    adjusted = stats.holm(raw)
    assert adjusted != raw
    for effect, p in zip(verdict.effects, adjusted, strict=True):
        expected = stats.verdict(effect, claim="greater", p_adjusted=p)
        assert f"{effect.name}: {expected.outcome}. {expected.reason}" in verdict.reason


def test_an_adam_lead_that_would_close_is_not_settled(tmp_path) -> None:
    """AdaGrad ends above Adam, but lowers its cost by 20% over the last fifth (steps 80 to 100):
    continued to 10x the budget it would end below Adam's."""
    runs = _runs(_costs(adam=0.05, others=0.2))
    for member in runs["adagrad"].history:
        member[-1]["train/loss"] = member[-2]["train/loss"] * 0.8
    findings = optimizers.judge(runs, str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "Not settled" in findings.verdict.reason
    assert "As measured: reproduced" in findings.verdict.reason
    # The previous rule called the same runs unconverged on the training loss.
    assert findings.previous.verdict.outcome == stats.Outcome.INCONCLUSIVE
    assert "adagrad fell 20%" in findings.previous.verdict.reason


def test_a_rate_selected_at_the_grid_edge_is_noted(tmp_path) -> None:
    runs = _runs(_costs(adam=0.05, others=0.2), lr=optimizers.GRID[0])
    notes = optimizers.judge(runs, str(tmp_path)).notes
    assert len(notes) == len(optimizers.NAMES) and all("lowest of the grid" in n for n in notes)
