"""The benchmark's numbers: tuning-budget curves, comparisons against a baseline, rank
frequencies and performance profiles.

- Tuning-budget curve (Dodge et al. 2019, "Show your work"): the expected best validation score of
  k points drawn at random from an arm's K tuned points, k = 1..K, with a bootstrap interval over
  resamples of the K scores. k = 1 is the one-shot budget of Crowded Valley, k = K the full one.
- Comparisons: each arm against the baseline on each of `measures` (the surface's `Measure`s),
  with the effects an `ablation.Comparison` of the arms derives (paired over the evaluation
  seeds, which the arms share with their data order; 95% intervals), Holm-adjusted over the arms
  of a measure, as a Comparison of several arms adjusts them.
- Ranking: how often each arm holds each rank when the evaluation seeds are resampled (paired:
  one resample of seeds for every arm).
- Performance profiles (Dolan & Moré 2002, as AlgoPerf scores): for each arm, the fraction of
  problems on which its cost is within a factor tau of the best arm's.
"""

from collections.abc import Sequence

import numpy as np

from dlresearch.ablation import stats
from dlresearch.ablation.comparison import Comparison, Measure, final_value, steps_to, test_error
from dlresearch.ablation.measures import Group
from dlresearch.metrics import TRAIN_LOSS
from dlresearch.optimizer_benchmark.problems import Problem

BOOTSTRAP = 2_000
CONFIDENCE = 0.95


def _weights(n: int, k: int) -> np.ndarray:
    """P(the i-th smallest of n scores is the max of k draws with replacement), i = 1..n."""
    i = np.arange(1, n + 1)
    return (i / n) ** k - ((i - 1) / n) ** k


def expected_best(scores: Sequence[float], k: int) -> float:
    """E[max of k draws with replacement from `scores`]: sum_i s_(i) ((i/n)^k - ((i-1)/n)^k)."""
    s = np.sort(np.asarray(scores, float))
    return float(s @ _weights(s.size, k))


def budget_curve(scores: Sequence[float], seed: int = 0) -> np.ndarray:
    """[K, 3]: for k = 1..K, the expected best score of k points, and its bootstrap interval."""
    scores = np.asarray(scores, float)
    n = scores.size
    rng = np.random.default_rng(seed)
    resampled = np.sort(scores[rng.integers(0, n, size=(BOOTSTRAP, n))], axis=1)
    tail = (1 - CONFIDENCE) / 2
    rows = []
    for k in range(1, n + 1):
        boot = resampled @ _weights(n, k)
        rows.append([expected_best(scores, k), *np.quantile(boot, [tail, 1 - tail])])
    return np.asarray(rows)


def measures(problem: Problem) -> tuple[Measure, ...]:
    """What every arm is compared with the baseline on: the final test error (a diverged member
    counting as error 1), the final training loss, and the steps to the problem's target (a run
    that never reaches it censored at the budget)."""
    return test_error(), final_value(TRAIN_LOSS), steps_to(problem.target)


def against_baseline(
    problem: Problem, groups: Sequence[Group], measure: Measure
) -> list[tuple[stats.Effect, float]]:
    """Each group's `measure` against the first group's (the baseline), with the Holm-adjusted
    p-value over them: the effects of a `Comparison` of the arms, each arm first (`arm minus
    baseline`, or `arm / baseline` for steps); none for a single arm."""
    if len(groups) < 2:
        return []
    comparison = Comparison(
        name=problem.title,
        title=problem.title,
        claim="each optimizer against the baseline",
        source="",
        base=problem.base,
        arms=tuple(g.run.variant for g in groups),
        budget=problem.budget,
        measure=measure,
        direction="higher",  # orders each effect as the arm against the baseline
    )
    effects = [comparison.effect(groups[0], group) for group in groups[1:]]
    return list(zip(effects, stats.holm([e.p for e in effects]), strict=True))


def rank_frequencies(values: np.ndarray, *, higher: bool = True, seed: int = 0) -> np.ndarray:
    """[arms, ranks]: how often each arm (row of `values`, [arms, seeds]) holds rank 1, 2, ...
    of the seed-mean when the seeds are resampled with replacement (a NaN counts worst)."""
    values = np.nan_to_num(np.asarray(values, float), nan=-np.inf if higher else np.inf)
    arms, seeds = values.shape
    rng = np.random.default_rng(seed)
    counts = np.zeros((arms, arms))
    for _ in range(BOOTSTRAP):
        means = values[:, rng.integers(0, seeds, size=seeds)].mean(axis=1)
        order = np.argsort(-means if higher else means, kind="stable")
        counts[order, np.arange(arms)] += 1
    return counts / BOOTSTRAP


def performance_profile(costs: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """[arms, taus]: the fraction of problems (rows of `costs`, [problems, arms], lower is better,
    inf = failed) on which an arm's cost is at most tau times the best arm's."""
    costs = np.asarray(costs, float)
    best = costs.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isfinite(costs), costs / best, np.inf)
    return (ratios[:, :, None] <= taus[None, None, :]).mean(axis=0)


def median_steps(steps: Sequence[int | None]) -> float:
    """The median over seeds of the steps to a target, a miss counting as never (inf)."""
    return float(np.median([np.inf if s is None else s for s in steps]))
