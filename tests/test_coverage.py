"""Coverage of the steps-ratio interval under censoring, by simulation (issue 20).

`stats.paired_ratio` judges an uncensored effect by the paired t-interval on log ratios and one
with censored runs (or zero spread) by the exact sign-flip test, the censored values at the budget.
Each scenario draws DATASETS data sets of n seeds: per seed the fast arm's steps to a target, and
the slow arm's as the fast arm's times a per-seed ratio (the effect); the slow arm's runs beyond the
budget are censored, the budget set at the quantile of the slow arm's steps that censors the
stated fraction of them. The estimand is the mean log ratio (the log of the geometric-mean ratio the
report states). The test passes when, in every scenario, the 95% interval covers it in at least
95% - TOLERANCE of the data sets (TOLERANCE: about 3 Monte-Carlo standard errors at 2,000 draws).

Every parameter below was fixed before the test was first run.
"""

import math

import numpy as np
import pytest

from dlresearch.ablation import stats

DATASETS = 2_000
SEEDS = (6, 10)
CENSORED = (0.0, 0.2, 0.5)  # fraction of the slow arm's runs beyond the budget
CONFIDENCE = 0.95
TOLERANCE = 0.015
RATIO = 3.0  # the typical per-seed ratio, slow / fast
FAST_STEPS = 100.0  # the fast arm's median steps to the target
FAST_SPREAD = 0.2  # sd of log(fast steps) over seeds
# Per-seed ratios: log-normal (log ratio ~ N(log 3, 0.3^2)), or normal (ratio ~ N(3, 0.5^2),
# a left-skewed log ratio).
LOG_SD = 0.3
SD = 0.5
REFERENCE_DRAWS = 2_000_000  # for the estimand and the budget of the normal-ratio scenarios


def draw_ratios(family: str, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if family == "lognormal":
        return np.exp(math.log(RATIO) + LOG_SD * rng.standard_normal(size))
    ratios = RATIO + SD * rng.standard_normal(size)
    return np.maximum(ratios, 1e-3)  # a ratio is positive (P(ratio <= 0) ~ 1e-9)


def estimand_and_budget(family: str, censored: float) -> tuple[float, float]:
    """The mean log ratio, and the budget at which `censored` of the slow arm's runs are cut off
    (infinite for none), from a large reference sample."""
    rng = np.random.default_rng(12345)
    ratios = draw_ratios(family, (REFERENCE_DRAWS,), rng)
    fast = FAST_STEPS * np.exp(FAST_SPREAD * rng.standard_normal(REFERENCE_DRAWS))
    budget = math.inf if censored == 0 else float(np.quantile(ratios * fast, 1 - censored))
    return float(np.mean(np.log(ratios))), budget


@pytest.mark.parametrize("censored", CENSORED)
@pytest.mark.parametrize("n", SEEDS)
@pytest.mark.parametrize("family", ["normal", "lognormal"])
def test_the_ratio_interval_covers_the_effect_under_censoring(
    family: str, n: int, censored: float
) -> None:
    mean_log_ratio, budget = estimand_and_budget(family, censored)
    rng = np.random.default_rng([n, int(100 * censored), int(family == "normal")])
    fast = FAST_STEPS * np.exp(FAST_SPREAD * rng.standard_normal((DATASETS, n)))
    slow = draw_ratios(family, (DATASETS, n), rng) * fast
    slow = np.where(slow > budget, math.inf, slow)
    covered = 0
    for numerator, denominator in zip(slow, fast, strict=True):
        effect = stats.paired_ratio(
            numerator,
            denominator,
            name="slow/fast",
            budget=None if math.isinf(budget) else budget,
            confidence=CONFIDENCE,
        )
        with np.errstate(divide="ignore"):  # a limit of 0: unbounded below
            covered += np.log(effect.low) <= mean_log_ratio <= np.log(effect.high)
    if censored:  # the draws censored about the stated fraction of the slow runs
        assert np.isinf(slow).mean() == pytest.approx(censored, abs=0.02)
    assert covered / DATASETS >= CONFIDENCE - TOLERANCE
