"""The activations judges on synthetic run histories: each of the three outcomes, from the rule."""

import math
from pathlib import Path

import numpy as np
import pytest

from dlresearch.ablation import spec
from dlresearch.ablation.runs import Run
from dlresearch.ablation.stats import Outcome
from experiments import activations

SEEDS = 5
LOG_EVERY = 10


def synthetic_run(
    activation: str,
    *,
    steps: int,
    records: list[list[dict[str, float]]],
    init: list[dict[str, float]],
) -> Run:
    """A finished evaluation run of `activation`, its members the seeds, logging `records`."""
    config = spec.make_config({"train.steps": steps, "sweep.seed": tuple(range(len(records)))})
    return Run(
        part="p",
        variant=spec.Variant(activation, {"model.activation": activation}),
        config=config,
        workdir="",
        members=[{"seed": s, "lr": 0.01} for s in range(len(records))],
        history=records,
        diverged_at=[None] * len(records),
        num_train=1000,
        num_eval=360,
        init_diagnostics=init,
        seconds=1.0,
    )


def speed_run(activation: str, reached: list[float], steps: int = 500) -> Run:
    """Per seed, training accuracy below both targets until step `reached` (inf: never), then
    above them."""
    records = [
        [
            {
                "step": step,
                "train/accuracy": 0.9 if step >= at else 0.1,
                "train/loss": 0.3 if step >= at else 1.5,
            }
            for step in range(LOG_EVERY, steps + 1, LOG_EVERY)
        ]
        for at in reached
    ]
    init = [{"diag/saturated/hidden_0": 0.5} for _ in reached]
    return synthetic_run(activation, steps=steps, records=records, init=init)


FAST = [20, 30, 20, 30, 20]


@pytest.mark.parametrize(
    ("tanh", "sigmoid", "outcome"),
    [
        # tanh 5-9x slower than ReLU, sigmoid never there in the budget.
        ([150, 160, 170, 180, 190], [math.inf] * SEEDS, Outcome.REPRODUCED),
        # tanh as fast as ReLU: the interval excludes a 2x speed-up.
        ([20, 30, 30, 30, 20], [150, 160, 170, 180, 190], Outcome.NOT_REPRODUCED),
        # tanh from faster to 20x slower: the interval includes both 1x and 2x.
        ([10, 400, 20, 300, 30], [10, 400, 20, 300, 30], Outcome.INCONCLUSIVE),
    ],
)
def test_speed_outcomes(
    tmp_path: Path, tanh: list[float], sigmoid: list[float], outcome: Outcome
) -> None:
    runs = {
        "relu": speed_run("relu", FAST),
        "tanh": speed_run("tanh", tanh),
        "sigmoid": speed_run("sigmoid", sigmoid),
    }
    findings = activations.judge_speed(runs, str(tmp_path))
    assert findings.verdict.outcome == outcome
    # Only tanh decides (sigmoid is not in the paper's Fig. 1), at both targets.
    assert [e.name for e in findings.verdict.effects] == [
        "tanh/ReLU steps to 57.5% training error",
        "tanh/ReLU steps to 25% training error",
    ]
    assert any(note.startswith("Sigmoid (reported, not judged") for note in findings.notes)
    assert findings.judged == {name: tuple(range(SEEDS)) for name in runs}
    assert findings.previous is not None


def test_a_target_no_net_reaches_is_reported_out_of_reach_and_inconclusive(tmp_path: Path) -> None:
    """On a dataset where the paper's 25% training error is beyond these nets (e.g. CIFAR-10 with
    an MLP), neither tanh nor ReLU gets there: inconclusive, never a refutation, and said so."""
    never = [math.inf] * SEEDS
    runs = {name: speed_run(name, never) for name in ("relu", "tanh", "sigmoid")}
    findings = activations.judge_speed(runs, str(tmp_path))
    assert findings.verdict.outcome == Outcome.INCONCLUSIVE
    out_of_reach = [n for n in findings.notes if "out of reach" in n]
    assert len(out_of_reach) == 2  # both targets
    assert out_of_reach[1].startswith("No run of tanh and relu reached train/accuracy >= 0.75")
    reached = {"relu": speed_run("relu", FAST), "tanh": speed_run("tanh", never)}
    reached["sigmoid"] = speed_run("sigmoid", never)
    assert not any(
        "out of reach" in n for n in activations.judge_speed(reached, str(tmp_path)).notes
    )


def test_sigmoid_no_longer_decides_the_speed_part(tmp_path: Path) -> None:
    """The previous rule judged sigmoid/ReLU too: sigmoid as fast as ReLU refuted the claim."""
    runs = {
        "relu": speed_run("relu", FAST),
        "tanh": speed_run("tanh", [150, 160, 170, 180, 190]),
        "sigmoid": speed_run("sigmoid", [20, 30, 30, 30, 20]),
    }
    findings = activations.judge_speed(runs, str(tmp_path))
    assert findings.verdict.outcome == Outcome.REPRODUCED
    assert findings.previous.verdict.outcome == Outcome.NOT_REPRODUCED


def test_the_early_target_decides_too(tmp_path: Path) -> None:
    """tanh reaches the paper's 25% target 6x later but the early one as soon as ReLU, on every
    one of 6 seeds (zero spread: the exact sign-flip interval, finite from 6 seeds)."""
    fast = [*FAST, 30]
    runs = {
        "relu": speed_run("relu", fast),
        "tanh": speed_run("tanh", [150, 160, 170, 180, 190, 200]),
        "sigmoid": speed_run("sigmoid", fast),
    }
    for records, relu_at in zip(runs["tanh"].history, fast, strict=True):
        for record in records:
            if relu_at <= record["step"] < 150:
                record["train/accuracy"] = 0.5  # past the early target, short of the paper's
    verdict = activations.judge_speed(runs, str(tmp_path)).verdict
    assert verdict.outcome == Outcome.NOT_REPRODUCED
    assert "57.5% training error: not reproduced" in verdict.reason


def test_speed_is_inconclusive_where_a_longer_budget_could_refute_it(tmp_path: Path) -> None:
    """At 140 steps one tanh seed of six is cut off: the ratio to ReLU is only known to be >=
    1.57x, a bound short of the claimed 2x (exact sign-flip, Holm over the two targets); the same
    seeds over 1,000 steps show tanh less than 2x slower."""
    runs = {
        "relu": speed_run("relu", [60, 60, 70, 60, 80, 70], steps=1_000),
        "tanh": speed_run("tanh", [90, 100, 110, 90, 150, 100], steps=1_000),
        "sigmoid": speed_run("sigmoid", [math.inf] * 6, steps=1_000),
    }
    assert activations.judge_speed(runs, str(tmp_path)).verdict.outcome == (Outcome.NOT_REPRODUCED)
    prefix = {name: run.prefix(140) for name, run in runs.items()}
    verdict = activations.judge_speed(prefix, str(tmp_path)).verdict
    assert verdict.outcome == Outcome.INCONCLUSIVE
    assert "tanh/ReLU steps to 25% training error: inconclusive" in verdict.reason
    assert any("exact sign-flip (censored runs)" in e.method for e in verdict.effects)
    # Both targets' ratios censored: sign-flip p = 2/64 each, Holm-adjusted 0.062.
    assert "needs a longer budget (1 run did not reach the target)" in verdict.reason


def gradient_run(activation: str, slopes: list[float], depth: int = 4, steps: int = 100) -> Run:
    """Per seed, a back-propagated signal that changes by 10^slope per layer toward the input."""

    def signal(slope: float) -> dict[str, float]:
        below_top = range(depth - 1, -1, -1)
        return {
            f"diag/signal_norm/hidden_{i}": 10.0 ** (slope * k)
            for i, k in zip(range(depth), below_top, strict=True)
        } | {"diag/grad_norm/hidden_0": 1.0, "diag/grad_norm/output": 1.0}

    records = [
        [{"step": steps, "train/loss": 0.5, "test/accuracy": 0.9, **signal(slope)}]
        for slope in slopes
    ]
    return synthetic_run(activation, steps=steps, records=records, init=[signal(s) for s in slopes])


@pytest.mark.parametrize(
    ("sigmoid", "relu", "outcome"),
    [
        ([-0.5, -0.6, -0.4, -0.55, -0.45], [0.0, 0.01, -0.02, 0.0, 0.01], Outcome.REPRODUCED),
        ([0.0, 0.01, -0.02, 0.0, 0.01], [-0.5, -0.6, -0.4, -0.55, -0.45], Outcome.NOT_REPRODUCED),
        ([-0.1, 0.1, -0.2, 0.2, 0.0], [0.0, 0.01, -0.02, 0.0, 0.01], Outcome.INCONCLUSIVE),
    ],
)
def test_gradients_outcomes(
    tmp_path: Path, sigmoid: list[float], relu: list[float], outcome: Outcome
) -> None:
    runs = {
        "relu": gradient_run("relu", relu),
        "tanh": gradient_run("tanh", relu),
        "sigmoid": gradient_run("sigmoid", sigmoid),
    }
    findings = activations.judge_gradients(runs, str(tmp_path))
    assert findings.verdict.outcome == outcome  # a sanity check (mechanism), not deciding
    (effect,) = findings.verdict.effects
    assert effect.estimate == pytest.approx(np.mean(sigmoid) - np.mean(relu))


def test_gradients_on_a_prefix_that_ends_between_measurements(tmp_path: Path) -> None:
    """The verdict is at init, whatever the budget; the table shows the last measurement."""
    sigmoid, relu = [-0.5, -0.6, -0.4, -0.55, -0.45], [0.0, 0.01, -0.02, 0.0, 0.01]
    runs = {
        "relu": gradient_run("relu", relu),
        "tanh": gradient_run("tanh", relu),
        "sigmoid": gradient_run("sigmoid", sigmoid),
    }
    for run in runs.values():
        for records in run.history:
            records.insert(0, {"step": 50, "train/loss": 1.0, "test/accuracy": 0.5})
    full = activations.judge_gradients(runs, str(tmp_path))
    prefix = activations.judge_gradients(
        {name: run.prefix(60) for name, run in runs.items()}, str(tmp_path)
    )
    assert prefix.verdict == full.verdict
    assert "at step 100" in full.tables[0] and "at init" in prefix.tables[0]


def test_signal_slope_is_the_decay_per_layer_toward_the_input() -> None:
    run = gradient_run("sigmoid", [-0.5, -0.25])
    group = activations.ablation.groups({"sigmoid": run})["sigmoid"]
    np.testing.assert_allclose(activations.signal_slopes(group, None), [-0.5, -0.25])


def test_each_part_declares_its_kind() -> None:
    parts = activations.parts("quick", activations.ablation.DataDirs())
    assert [(p.name, p.kind) for p in parts] == [
        ("speed", "speed"),
        ("speed_standardized", "control"),
        ("gradients", "mechanism"),
    ]
    assert [p.decides for p in parts] == [True, False, False]
    assert parts[0].quote == activations.FIG1
