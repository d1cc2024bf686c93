"""Budget-proof verdicts (issue 13): every judge, given fabricated runs of a long ("paper")
budget and their prefixes (`Run.prefix`) at shorter ("quick") budgets of the same seeds, never
gives opposite verdicts (reproduced at one budget, not reproduced at the other). Where the budget
decides, the shorter one must say inconclusive.

Hypothesis draws each arm's curve over training and each seed's deviation from it: steps to a
target that fall before, between or after the budgets (never reached included), and training
curves that approach their final level exponentially, fast or slowly (converged long before the
short budget, still falling at it, or still falling at the long one).

The speed judges (activations, glorot, batchnorm fig1, optimizers) count steps to targets,
censored at the budget; the value judge (residual at the end of its schedule) decides only
comparisons that are settled on the compared measure itself (`ablation.settled`: the same outcome
at 0.8x the budget, and where each seed's change over that window is continued linearly to 10x
the budget); the trainability judges (initialization he, batchnorm deep) define a stall relative
to the other arm's steps out of the stall band, censored at the budget. Every judge passes without
an expected failure; the counterexamples that defeated the training-loss convergence clause
(issue 20) stay as explicit examples.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from fake_runs import fake_run, fake_tuning_run
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dlresearch import ablation
from dlresearch.ablation import Run, stats
from dlresearch.ablation.stats import Outcome
from experiments import activations, batchnorm, initialization, optimizers, residual

# The verdicts are under test here, not the figures (tests/test_ablation.py draws those).
pytestmark = pytest.mark.usefixtures("no_figures")

PAPER = 1_000  # steps of every fabricated run
LOG_EVERY = 10
STEPS = np.arange(LOG_EVERY, PAPER + 1, LOG_EVERY)
QUICK = (PAPER // 10, PAPER // 3 // LOG_EVERY * LOG_EVERY)  # prefixes of 1/10 and ~1/3
SEEDS = 5
# Steps-to-target judges are cheap, and a bound that decides wrongly needs a few hundred draws
# to turn up (a cut-off seed, ratios near the margin, little spread between seeds).
MANY = settings(max_examples=500, deadline=None, derandomize=True)
EXAMPLES = settings(max_examples=60, deadline=None, derandomize=True)
Judge = Callable[[dict[str, Run], str], ablation.Findings]


def _contradict(a: Outcome, b: Outcome) -> bool:
    return {a, b} == {Outcome.REPRODUCED, Outcome.NOT_REPRODUCED}


def assert_budget_proof(judge: Judge, runs: dict[str, Run]) -> None:
    paper = judge(runs, "").verdict
    for steps in QUICK:
        quick = judge({name: run.prefix(steps) for name, run in runs.items()}, "").verdict
        assert not _contradict(quick.outcome, paper.outcome), (
            f"at {steps} steps: {quick.result_line('?')}\nat {PAPER} steps: {paper.result_line('?')}"
        )


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda x: 10.0**x)


# Per seed, a deviation in [-1, 1] from the arm's curve (scaled by each family).
deviations = st.lists(st.floats(-1.0, 1.0), min_size=SEEDS, max_size=SEEDS)
# How far apart seeds reach a target (decades).
spreads = log_uniform(0.01, 0.3)


def approach(start: float, end: float, tau: float) -> np.ndarray:
    """A curve over STEPS from `start` toward `end` with time constant `tau` steps."""
    return end + (start - end) * np.exp(-STEPS / tau)


# --- steps to a target: activations speed, initialization he -------------------------------


def reach_steps(center: float, deviation: Sequence[float], spread: float) -> list[float]:
    """Per seed, the logged step at which a target is first reached: `center` times up to
    10^±spread, rounded up to a log line; math.inf when beyond the paper budget."""
    steps = [LOG_EVERY * math.ceil(center * 10 ** (spread * d) / LOG_EVERY) for d in deviation]
    return [s if s <= PAPER else math.inf for s in steps]


def target_history(reached: Sequence[float], low: float, high: float) -> list[list[dict]]:
    """Per seed, training accuracy `low` until its step in `reached`, then `high`."""
    return [
        [
            {"step": int(s), "train/accuracy": high if s >= at else low, "train/loss": 1.0}
            for s in STEPS
        ]
        for at in reached
    ]


def band_history(left: Sequence[float]) -> list[list[dict]]:
    """Per seed, a training loss of 2.3 (in the stall band) until its step in `left`, then 1.0."""
    return [
        [
            {"step": int(s), "train/loss": 2.3 if s < at else 1.0, "train/accuracy": 0.5}
            for s in STEPS
        ]
        for at in left
    ]


@MANY
@given(
    relu=log_uniform(10, 300),
    # Half the draws near the claimed 2x, where a bound decides.
    tanh_ratio=st.one_of(log_uniform(1, 3), log_uniform(0.5, 30)),
    sigmoid_ratio=st.one_of(log_uniform(1, 3), log_uniform(0.5, 100)),
    noise=st.tuples(deviations, deviations, deviations),
    spread=spreads,
)
def test_activations_speed(
    relu: float,
    tanh_ratio: float,
    sigmoid_ratio: float,
    noise: tuple[list[float], ...],
    spread: float,
) -> None:
    centers = {"relu": relu, "tanh": relu * tanh_ratio, "sigmoid": relu * sigmoid_ratio}
    init = [{"diag/saturated/hidden_0": 0.5}] * SEEDS
    runs = {
        name: fake_run(
            name, target_history(reach_steps(center, deviation, spread), 0.1, 0.9), init=init
        )
        for (name, center), deviation in zip(centers.items(), noise, strict=True)
    }
    assert_budget_proof(activations.judge_speed, runs)


@MANY
@given(
    he_deep=log_uniform(10, 300),
    stall=log_uniform(1, 100),
    he_shallow=log_uniform(10, 300),
    slower=log_uniform(0.5, 30),
    noise=st.tuples(deviations, deviations, deviations, deviations),
    spread=spreads,
)
def test_initialization_he(
    he_deep: float,
    stall: float,
    he_shallow: float,
    slower: float,
    noise: tuple[list[float], ...],
    spread: float,
) -> None:
    """Includes the budget-dependent case of issue 13: Xavier-30 leaving the stall band after the
    short budget but within the long one."""
    centers = {
        "xavier_4": he_shallow * slower,
        "he_4": he_shallow,
        "xavier_6": he_deep * stall,
        "he_6": he_deep,
    }
    runs = {}
    for (name, center), deviation in zip(centers.items(), noise, strict=True):
        history = band_history(reach_steps(center, deviation, spread))
        # Xavier-6's tuning run: its evaluation seeds at the rates of the grid, the long budget.
        tuning = fake_tuning_run(name, initialization.HE_GRID)
        tuning.history = history
        tuning.config.train.steps = PAPER
        runs[name] = fake_run(
            name,
            history,
            config={"model.depth": int(name.split("_")[1])},
            lr=initialization.HE_GRID[2],
            tuning=tuning if name == "xavier_6" else None,
        )
    assert_budget_proof(initialization.judge_he, runs)


# --- at initialisation: activations gradients --------------------------------------------


@EXAMPLES
@given(
    slopes=st.tuples(*[st.floats(-0.5, 0.2)] * 3),
    noise=st.tuples(deviations, deviations, deviations),
    loss_tau=log_uniform(PAPER / 100, 3 * PAPER),
)
def test_activations_gradients(
    slopes: tuple[float, ...], noise: tuple[list[float], ...], loss_tau: float
) -> None:
    depth = 4
    loss = approach(2.3, 0.1, loss_tau)

    def signal(slope: float) -> dict[str, float]:
        return {
            f"diag/signal_norm/hidden_{i}": 10.0 ** (slope * (depth - 1 - i)) for i in range(depth)
        }

    runs = {}
    for name, slope, deviation in zip(activations.ACTIVATIONS, slopes, noise, strict=True):
        signals = [signal(slope + 0.1 * d) for d in deviation]
        history = [
            [
                {"step": int(s), "train/loss": float(value), "test/accuracy": 0.9, **member}
                for s, value in zip(STEPS, loss, strict=True)
            ]
            for member in signals
        ]
        runs[name] = fake_run(name, history, config={"model.depth": depth}, init=signals)
    assert_budget_proof(activations.judge_gradients, runs)


# --- final values of training curves: glorot, batchnorm, residual, optimizers ------------

# An arm's curve: its final level and how fast it gets there (from a few steps, converged long
# before the short budget, to slower than the long budget).
levels = st.floats(0.005, 0.3)
taus = log_uniform(PAPER / 300, 3 * PAPER)


def error_history(
    final: float, tau: float, deviation: Sequence[float], keys: Sequence[str]
) -> list[list[dict]]:
    """Per seed, an error curve from 0.9 toward `final` (times 1 ± 10% per seed) logged as the
    accuracy `keys`, and a training loss of the same shape."""
    history = []
    for d in deviation:
        error = approach(0.9, final * (1 + 0.1 * d), tau)
        history.append(
            [
                {"step": int(s), "train/loss": 2.5 * float(e)} | {key: 1 - float(e) for key in keys}
                for s, e in zip(STEPS, error, strict=True)
            ]
        )
    return history


arm = st.tuples(levels, taus, deviations)
# Counterexamples: a net that ends worse but gets there 10x sooner than one that ends better.
SPREAD = [0.0, 0.5, -0.5, 1.0, -1.0]
SOONER_WORSE = (0.25, PAPER / 100, SPREAD)
LATER_BETTER = (0.125, PAPER / 10, SPREAD)


@EXAMPLES
@example(tanh=(0.25, PAPER / 10, [0.0] * SEEDS), tanh_n=(0.28125, PAPER / 100, [0.0] * SEEDS))
@example(tanh=SOONER_WORSE, tanh_n=LATER_BETTER)
@given(tanh=arm, tanh_n=arm)
def test_initialization_glorot(tanh: tuple, tanh_n: tuple) -> None:
    depth = 5
    act_std = {f"diag/act_std/hidden_{i}": 1.0 for i in range(depth)}
    arms = {name: (0.1, PAPER / 10, [0.0] * SEEDS) for name in initialization.MNIST_ERRORS}
    arms |= {"tanh": tanh, "tanh_n": tanh_n}
    runs = {}
    for name, (final, tau, deviation) in arms.items():
        history = error_history(final, tau, deviation, ["test/accuracy", "train/accuracy"])
        history = [[r | act_std for r in records] for records in history]
        runs[name] = fake_run(
            name, history, config={"model.depth": depth}, num_eval=10_000, init=[act_std] * SEEDS
        )
    assert_budget_proof(initialization.judge_glorot, runs)


def _unit_history(
    records: list[dict], amplitude: float, tau: float, deviation: float
) -> list[dict]:
    """Adds the 15/50/85th percentiles of two units' input: a median drifting by `amplitude`
    (times 1 ± 20%) with time constant `tau`, a 15-85% spread of 1."""
    median = amplitude * (1 + 0.2 * deviation) * (1 - np.exp(-STEPS / tau))
    out = []
    for record, p50 in zip(records, median, strict=True):
        units = {}
        for u in range(2):
            units |= {
                f"diag/units_p15/{u}": p50 + u - 0.5,
                f"diag/units_p50/{u}": p50 + u,
                f"diag/units_p85/{u}": p50 + u + 0.5,
            }
        units |= {f"diag/unit_p{q}": units[f"diag/units_p{q}/0"] for q in (15, 50, 85)}
        out.append(record | {k: float(v) for k, v in units.items()})
    return out


@EXAMPLES
@example(
    error=((0.25, PAPER, [0.0, 0.0, 0.0, 0.0, 0.5]), (0.25, PAPER / 100, [0.0] * SEEDS)),
    drift=(10.0, 1.0),
    drift_tau=(10.0**3.25, PAPER / 10),
)
@example(error=(SOONER_WORSE, LATER_BETTER), drift=(10.0, 1.0), drift_tau=(PAPER / 100,) * 2)
@given(
    error=st.tuples(arm, arm),
    drift=st.tuples(log_uniform(0.1, 10), log_uniform(0.1, 10)),
    drift_tau=st.tuples(taus, taus),
)
def test_batchnorm_fig1(error: tuple, drift: tuple, drift_tau: tuple) -> None:
    runs = {}
    for name, (final, tau, deviation), amplitude, amplitude_tau in zip(
        ("baseline", "batchnorm"), error, drift, drift_tau, strict=True
    ):
        history = error_history(final, tau, deviation, ["test/accuracy", "train/accuracy"])
        history = [
            _unit_history(records, amplitude, amplitude_tau, d)
            for records, d in zip(history, deviation, strict=True)
        ]
        runs[name] = fake_run(name, history, config={"model.depth": 3})
    assert_budget_proof(batchnorm.judge_fig1, runs)


@EXAMPLES
@example(error=((0.25, PAPER / 100, [0.0] * SEEDS), (0.125, 10.0**2.25, [0.0] * SEEDS)))
@example(error=(SOONER_WORSE, LATER_BETTER))
@example(error=((0.85, 3 * PAPER, SPREAD), (0.1, PAPER / 300, SPREAD)))
@given(error=st.tuples(st.tuples(st.floats(0.005, 0.9), taus, deviations), arm))
def test_batchnorm_deep(error: tuple) -> None:
    """Final levels up to 0.9 (the start, a stall) for the baseline; its tuning run is its
    evaluation seeds at the rates of the grid (their budget is the long one)."""
    runs = {}
    for name, (final, tau, deviation) in zip(("baseline", "batchnorm"), error, strict=True):
        history = error_history(final, tau, deviation, ["test/accuracy", "train/accuracy"])
        tuning = fake_tuning_run(name, batchnorm.DEEP_GRID)
        tuning.history = history
        tuning.config.train.steps = PAPER
        runs[name] = fake_run(
            name, history, config={"model.depth": 20}, lr=batchnorm.DEEP_GRID[2], tuning=tuning
        )
    assert_budget_proof(batchnorm.judge_deep, runs)


@EXAMPLES
# Both plain nets 10x and more slower than the short budget: each falls under 2% over its last
# fifth there.
@example(
    arms=(
        (0.25, PAPER, SPREAD),
        (0.125, PAPER / 100, SPREAD),
        (0.25, 2.4 * PAPER, SPREAD),
        (0.25, PAPER / 100, SPREAD),
    )
)
@given(arms=st.tuples(arm, arm, arm, arm))
def test_residual(arms: tuple) -> None:
    """Includes the budget-dependent cases of issue 13: the shallow plain net still training at
    the short budget, and a deep plain net that is only slower."""
    runs = {}
    for name, (final, tau, deviation) in zip(
        ("plain_2", "residual_2", "plain_8", "residual_8"), arms, strict=True
    ):
        kind, depth = name.split("_")
        runs[name] = fake_run(
            name,
            error_history(final, tau, deviation, ["train/accuracy", "test/accuracy"]),
            config={"model.depth": int(depth), "model.residual": kind == "residual"},
        )
    assert_budget_proof(residual.judge, runs)


@EXAMPLES
@example(arms=(SOONER_WORSE,) * (len(optimizers.NAMES) - 1) + (LATER_BETTER,))
@given(arms=st.tuples(*[arm] * len(optimizers.NAMES)))
def test_optimizers(arms: tuple) -> None:
    runs = {
        name: fake_run(
            name,
            error_history(final, tau, deviation, ["train/accuracy", "test/accuracy"]),
            part="mlp",
        )
        for name, (final, tau, deviation) in zip(optimizers.NAMES, arms, strict=True)
    }
    assert_budget_proof(optimizers.MLP.derived_judge, runs)


# --- an experiment's verdict from its parts -------------------------------------------------


@settings(deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(Outcome), st.sampled_from(Outcome)), min_size=1))
def test_parts_that_never_contradict_make_an_experiment_that_never_does(
    parts: list[tuple[Outcome, Outcome]],
) -> None:
    """An experiment's verdict joins its parts' (`stats.joint_outcome`, as
    `writeup.experiment_verdict` does), so the per-part property above carries over."""
    parts = [(quick, paper) for quick, paper in parts if not _contradict(quick, paper)]
    if parts:
        quick, paper = zip(*parts, strict=True)
        assert not _contradict(stats.joint_outcome(quick), stats.joint_outcome(paper))
