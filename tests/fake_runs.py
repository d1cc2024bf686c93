"""Fabricated finished runs for the judges' tests: each member's logged history, made up."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dlresearch import config as config_lib
from dlresearch.ablation import spec
from dlresearch.ablation.runs import Run


def fake_run(
    name: str,
    history: Sequence[Sequence[Mapping[str, Any]]],
    *,
    config: Mapping[str, Any] | None = None,
    lr: float = 0.1,
    part: str = "p",
    num_eval: int = 10_000,
    tuning: Run | None = None,
    init: Sequence[Mapping[str, float]] | None = None,
) -> Run:
    """An evaluation run at rate `lr` whose member i (seed i) logged the records `history[i]`
    (and measured the diagnostics `init[i]` at initialisation)."""
    members = [{"seed": i, "lr": lr} for i in range(len(history))]
    steps = max(r["step"] for records in history for r in records)
    overrides = {"train.steps": steps, "optim.lr": lr, **(config or {})}
    return Run(
        part=part,
        variant=spec.Variant(name, label=name),
        config=config_lib.apply_overrides(config_lib.base_config(), overrides),
        workdir="",
        members=members,
        history=[[dict(r) for r in records] for records in history],
        diverged_at=[None] * len(members),
        num_train=60_000,
        num_eval=num_eval,
        init_diagnostics=[dict(d) for d in init] if init else [{} for _ in members],
        seconds=1.0,
        tuning=tuning,
    )


def fake_tuning_run(name: str, grid: Sequence[float]) -> Run:
    """A tuning run of one seed at every rate of `grid` (its history does not matter here)."""
    run = fake_run(name, [[{"step": 10, "train/loss": 1.0}]])
    run.members = [{"seed": 1000, "lr": lr} for lr in grid]
    run.history = [[{"step": 10, "train/loss": 1.0}] for _ in grid]
    run.diverged_at = [None] * len(grid)
    return run


def speed_history(
    taus: Sequence[float], *, steps: int = 1_000, every: int = 10
) -> list[list[dict[str, float]]]:
    """Per seed, a net learning at time constant `taus[i]` steps from chance on 10 classes: a
    training error of 0.9 exp(-t / tau) and a training loss of ln(10) exp(-t / tau), logged every
    `every` steps. Both reach their chance level over h (`ablation.HALVINGS`) at t = tau ln h."""
    return [
        [
            {
                "step": s,
                "train/accuracy": 1 - 0.9 * math.exp(-s / tau),
                "train/loss": math.log(10) * math.exp(-s / tau),
            }
            for s in range(every, steps + 1, every)
        ]
        for tau in taus
    ]
