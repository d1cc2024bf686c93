"""A finished variant read back: what each member of its sweep logged, as series and finals."""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from dlresearch import config as config_lib
from dlresearch import data
from dlresearch.ablation.spec import Target, Variant
from dlresearch.diagnostics import forward_order
from dlresearch.metrics import reach_key


@dataclasses.dataclass
class Run:
    """A finished (or stopped) variant: its members and everything they logged."""

    part: str
    variant: Variant
    config: ml_collections.ConfigDict
    workdir: str
    members: list[dict[str, float]]  # the swept values of each member (seed, lr, ...)
    history: list[list[dict[str, Any]]]  # per member, its metrics.jsonl records in step order
    diverged_at: list[int | None]
    num_train: int
    num_eval: int  # examples of the evaluation split (test, or validation with a hold-out)
    init_diagnostics: list[dict[str, float]]  # per member; empty dicts when not measured
    seconds: float  # wall time spent on this variant by this invocation
    tuning: "Run | None" = None  # the tuning run that chose this run's learning rate
    # A tuning run: the rates each grid-edge extension added, in order (its other rates are the
    # preset's grid).
    extensions: tuple[tuple[float, ...], ...] = ()

    def prefix(self, steps: int) -> "Run":
        """This run as if its budget had been its first `steps` steps: what it logged up to then,
        `config.train.steps` = `steps` (the budget a judge censors at), and a divergence only if
        it happened by then; the rest (members, the rate its tuning run chose, the diagnostics
        at init) as it is. Judging every run of a part by its prefix gives the verdict of the
        shorter budget on the same seeds."""
        if not 0 < steps <= self.config.train.steps:
            raise ValueError(f"a prefix of 1 to {self.config.train.steps} steps, got {steps}")
        return dataclasses.replace(
            self,
            config=config_lib.apply_overrides(self.config, {"train.steps": steps}),
            history=[[r for r in records if r["step"] <= steps] for records in self.history],
            diverged_at=[d if d is not None and d <= steps else None for d in self.diverged_at],
        )

    @property
    def eval_split(self) -> str:
        return data.eval_split(self.config.data)

    def series(self, key: str, member: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of `key` for one member (non-finite values as NaN)."""
        pairs = [(r["step"], _number(r[key])) for r in self.history[member] if key in r]
        if not pairs:
            return np.zeros(0, int), np.zeros(0)
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps), np.asarray(values, float)

    def final(self, key: str) -> np.ndarray:
        """The last logged value of `key` per member (NaN where never logged)."""
        return np.asarray([_last(self.series(key, m)[1]) for m in range(len(self.members))])

    def where(self, **values: float) -> tuple[int, ...]:
        """The members whose swept values match, e.g. `where(lr=0.1)`."""
        return tuple(
            i
            for i, m in enumerate(self.members)
            if all(math.isclose(m[k], v, rel_tol=1e-6) for k, v in values.items())
        )

    def steps_to(self, target: Target, member: int) -> int | None:
        """The step at which `member` first reached `target` (None: not within the budget): at
        step resolution where the run recorded it (`train.reach_targets`, see `Target.spec`),
        else at the resolution of its train log lines (`steps_to_target`)."""
        if target.spec in self.config.train.get("reach_targets", ()):
            key = reach_key(target.spec)
            return next((int(r[key]) for r in self.history[member] if key in r), None)
        steps, values = self.series(target.metric, member)
        return steps_to_target(steps, values, target.threshold, below=target.below)

    def epochs(self, steps: np.ndarray) -> np.ndarray:
        return steps * self.config.train.batch_size / self.num_train

    def last_measured(self, prefix: str) -> int | None:
        """The last step at which the per-layer diagnostics `prefix/<layer>` were logged; None
        (at init) if never. A run measures them at its last step, but its `prefix` may end
        between two measurements."""
        start = prefix + "/"
        steps = [r["step"] for r in self.history[0] if any(k.startswith(start) for k in r)]
        return steps[-1] if steps else None

    def layer_values(self, prefix: str, member: int, step: int | None = None) -> dict[str, float]:
        """Per-layer diagnostics `prefix/<layer>` in forward order, at `step` (None = at init)."""
        record = self.init_diagnostics[member]
        start = prefix + "/"
        if step is not None:
            record = next(
                (
                    r
                    for r in self.history[member]
                    if r["step"] == step and any(k.startswith(start) for k in r)
                ),
                {},
            )
        values = {k[len(start) :]: _number(v) for k, v in record.items() if k.startswith(start)}
        return {k: values[k] for k in sorted(values, key=forward_order)}


def _number(value: Any) -> float:
    # Non-finite values are stored as strings ("nan", "inf") to keep the JSON lines valid.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan


def steps_to_target(
    steps: Sequence[int], values: Sequence[float], threshold: float, *, below: bool = False
) -> int | None:
    """The first logged step whose value reaches `threshold` (None if none does): for a run that
    did not record the target at step resolution (`train.reach_targets`).

    The resolution is the logging interval: train metrics are means over the steps since the last
    log line, so the step reported is the end of the first interval whose mean reaches the target.
    """
    for step, value in zip(steps, values, strict=True):
        if (value <= threshold) if below else (value >= threshold):
            return int(step)
    return None
