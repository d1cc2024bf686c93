"""The optimizers judge on fabricated histories: each of the three outcomes, Holm over the
ratios of steps to the training-cost targets, the previous rule beside it, and the grid-edge note
of a tuned rate."""

import numpy as np
from fake_runs import fake_run, fake_tuning_run, speed_history

from dlresearch.ablation import Run, stats
from experiments import optimizers

NOISE = np.array([0.0, 1.0, -1.0, 2.0, -2.0])  # per seed: a spread, so intervals are finite
MIDDLE = optimizers.GRID[len(optimizers.GRID) // 2]


def _runs(taus: dict[str, float], noise: float = 0.05, lr: float = MIDDLE) -> dict[str, Run]:
    """Every optimizer lowering its training cost at about the time constant `taus[name]`
    (`fake_runs.speed_history`; per-seed noise differing between optimizers), its tuning run
    over the whole grid."""
    runs = {}
    for i, (name, tau) in enumerate(taus.items()):
        members = speed_history([tau * (1 + noise * n) for n in np.roll(NOISE, i)], steps=400)
        tuning = fake_tuning_run(name, optimizers.GRID)
        runs[name] = fake_run(name, members, part="mlp", lr=lr, tuning=tuning)
    return runs


def _taus(adam: float, others: float) -> dict[str, float]:
    return {name: adam if name == "adam" else others for name in optimizers.NAMES}


def test_reproduced_when_adam_reaches_every_target_sooner_than_every_optimizer(tmp_path) -> None:
    findings = optimizers.MLP.derived_judge(_runs(_taus(adam=20.0, others=60.0)), str(tmp_path))
    assert findings.verdict.outcome == stats.Outcome.REPRODUCED
    # Every other optimizer against Adam at each of the three training-cost targets.
    assert [e.name for e in findings.verdict.effects[:3]] == [
        f"steps to train/loss <= {t:g}, nesterov / Adam" for t in (1.15129, 0.575646, 0.287823)
    ]
    assert len(findings.verdict.effects) == 3 * (len(optimizers.NAMES) - 1)
    assert "Holm-adjusted" in findings.verdict.reason
    assert not [n for n in findings.notes if "of the grid" in n]  # selected at an inner rate


def test_not_reproduced_when_an_optimizer_is_clearly_faster_than_adam(tmp_path) -> None:
    taus = _taus(adam=20.0, others=60.0) | {"rmsprop": 5.0}
    assert optimizers.MLP.derived_judge(_runs(taus), str(tmp_path)).verdict.outcome == (
        stats.Outcome.NOT_REPRODUCED
    )


def test_inconclusive_when_one_comparison_is_within_the_noise(tmp_path) -> None:
    taus = _taus(adam=20.0, others=60.0) | {"adadelta": 20.2}
    assert optimizers.MLP.derived_judge(_runs(taus), str(tmp_path)).verdict.outcome == (
        stats.Outcome.INCONCLUSIVE
    )


def test_each_comparison_is_judged_at_its_holm_adjusted_p(tmp_path) -> None:
    taus = _taus(adam=20.0, others=60.0) | {"adagrad": 26.0, "adadelta": 24.0}
    verdict = optimizers.MLP.derived_judge(_runs(taus, noise=0.1), str(tmp_path)).verdict
    raw = [e.p for e in verdict.effects]
    adjusted = stats.holm(raw)
    assert adjusted != raw
    for effect, p in zip(verdict.effects, adjusted, strict=True):
        expected = stats.verdict(effect, claim="greater", p_adjusted=p)
        assert f"{effect.name}: {expected.outcome}. {expected.reason}" in verdict.reason


def test_previous_rule_compared_training_costs_at_matched_budgets(tmp_path) -> None:
    """The rule until 2026-12-05 on the same runs: each cost minus Adam's at half the budget and
    at all of it, settled."""
    findings = optimizers.MLP.derived_judge(_runs(_taus(adam=20.0, others=60.0)), str(tmp_path))
    assert "settled" in findings.previous.rule
    assert [e.name for e in findings.previous.verdict.effects[:2]] == [
        "final train/loss, SGD Nesterov minus Adam at step 200",
        "final train/loss, AdaGrad minus Adam at step 200",
    ]


def test_a_rate_selected_at_the_grid_edge_is_noted(tmp_path) -> None:
    runs = _runs(_taus(adam=20.0, others=60.0), lr=optimizers.GRID[0])
    notes = optimizers.MLP.derived_judge(runs, str(tmp_path)).notes
    assert len(notes) == len(optimizers.NAMES) and all("lowest of the grid" in n for n in notes)
