"""The optimizers a benchmark compares, each with a declared search space, and its tuning points.

An `Arm` is an optimizer as the user named it (`adam`, `optax.lion`, `myopt:make`, or
`label=name` to compare one optimizer under two spaces) with the `Dimension`s searched; the
hyperparameters not searched stay at the optimizer's own defaults. Its config overrides are an
`ablation.Variant` (`Arm.variant`), as every arm of an ablation; what an `Arm` adds is its search
space: the benchmark tunes K points of several hyperparameters at once, where an ablation's
`Tuning` is a grid of learning rates. `points` draws K points of a
space quasi-randomly (scrambled Halton, fixed seed), the same way for every arm.
"""

import dataclasses
import math
from collections.abc import Sequence

from scipy.stats import qmc

from dlresearch import config as config_lib
from dlresearch import optim
from dlresearch.ablation.spec import Variant
from dlresearch.errors import ConfigError

# How a dimension maps [0, 1) to values: uniform in log(value), in log(1 - value) (decay rates
# such as momentum and Adam's betas, whose distance from 1 sets their horizon), or uniform.
SCALES = ("log", "log1m", "linear")
DEFAULT_SCALE = {"lr": "log", "eps": "log", "weight_decay": "log", "momentum": "log1m"}
DEFAULT_SCALE |= {"b1": "log1m", "b2": "log1m"}
SEARCHABLE = tuple(optim.INJECTED)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter (a config field of `optim.INJECTED`) over [low, high]."""

    field: str
    low: float
    high: float
    scale: str

    def value(self, u: float) -> float:
        """The value at quantile `u` in [0, 1)."""
        if self.scale == "log":
            return float(math.exp(math.log(self.low) + u * math.log(self.high / self.low)))
        if self.scale == "log1m":
            far, near = math.log(1 - self.low), math.log(1 - self.high)
            return float(1 - math.exp(far + u * (near - far)))
        return float(self.low + u * (self.high - self.low))

    def describe(self) -> str:
        how = {"log": "log-uniform", "log1m": "log-uniform in 1 - x", "linear": "uniform"}
        return f"{self.field} {how[self.scale]} in [{self.low:g}, {self.high:g}]"


# The learning-rate range every arm searches unless its space says otherwise: four decades, from
# below Adam's usual 1e-3 to above SGD's usual 0.1.
DEFAULT_LR = Dimension("lr", 1e-4, 1.0, "log")


@dataclasses.dataclass(frozen=True)
class Arm:
    """An optimizer as given (`label`), its `optim.name`, its search space and fixed values."""

    label: str
    optimizer: str
    space: tuple[Dimension, ...] = (DEFAULT_LR,)

    @property
    def variant(self) -> Variant:
        """The arm as an `ablation.Variant`: its optimizer and fixed values as config overrides
        (the searched values are set per point, `protocol.arm_config`)."""
        fixed = {f"optim.{field}": value for field, value in self.fixed().items()}
        return Variant(self.label, {"optim.name": self.optimizer, **fixed})

    def fixed(self) -> dict[str, float]:
        """The config values of the hyperparameters not searched: the optimizer's defaults."""
        searched = {d.field for d in self.space}
        return {f: v for f, v in optim.defaults(self.optimizer).items() if f not in searched}

    def describe(self) -> str:
        text = "; ".join(d.describe() for d in self.space)
        fixed = self.fixed()
        if fixed:
            text += "; fixed: " + ", ".join(f"{f} {v:g}" for f, v in fixed.items())
        return text


def parse_arm(text: str) -> Arm:
    """`name` or `label=name` (e.g. `adam_wide=adam`) with the default learning-rate space;
    `ConfigError` naming the allowed values for an optimizer that does not exist."""
    label, _, name = text.partition("=") if "=" in text else (text, "", text)
    if not label or not name:
        raise ConfigError(f"--optimizers entry {text!r} is not valid; allowed: NAME or LABEL=NAME")
    try:
        optim.uses(name)
    except ConfigError as error:
        raise ConfigError(f"--optimizers: {error}") from None
    return Arm(label, name)


def _dimension(arm: Arm, token: str) -> Dimension:
    """`field=low..high` or `field=low..high:scale`, checked against `arm`'s optimizer."""
    prefix = f"--space {arm.label}: {token!r}"
    field, _, rest = token.partition("=")
    bounds, _, scale = rest.partition(":")
    low_text, _, high_text = bounds.partition("..")
    allowed = ("lr", *optim.uses(arm.optimizer))
    if field not in allowed:
        raise ConfigError(f"{prefix}: {field!r} is not searchable; allowed: {', '.join(allowed)}")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise ConfigError(f"{prefix} is not valid; allowed: FIELD=LOW..HIGH[:SCALE]") from None
    scale = scale or DEFAULT_SCALE[field]
    if scale not in SCALES:
        raise ConfigError(f"{prefix}: scale {scale!r} is not known; allowed: {', '.join(SCALES)}")
    dimension = Dimension(field, low, high, scale)
    rule = config_lib.RULES[f"optim.{field}"]
    positive = scale != "log" or low > 0
    if not (low < high and rule.accepts(low) and rule.accepts(high) and positive):
        raise ConfigError(
            f"{prefix}: needs LOW < HIGH, each {rule.error(field, low).split('allowed: ')[-1]}"
            + (", LOW > 0 on a log scale" if scale == "log" else "")
        )
    return dimension


def with_space(arms: Sequence[Arm], text: str) -> list[Arm]:
    """`arms` with the space `text` ('LABEL field=low..high[:scale] ...') replacing one arm's;
    a space without `lr` keeps the default learning-rate range."""
    label, *tokens = text.split()
    by_label = {arm.label: arm for arm in arms}
    if label not in by_label:
        raise ConfigError(
            f"--space {text!r} names no optimizer; allowed: {', '.join(by_label)} (as given)"
        )
    arm = by_label[label]
    dimensions = [_dimension(arm, token) for token in tokens]
    fields = [d.field for d in dimensions]
    if not dimensions or len(set(fields)) < len(fields):
        raise ConfigError(f"--space {text!r} must name each searched field once, at least one")
    if "lr" not in fields:
        dimensions.insert(0, DEFAULT_LR)
    replaced = dataclasses.replace(arm, space=tuple(dimensions))
    return [replaced if a.label == label else a for a in arms]


def points(space: Sequence[Dimension], k: int, seed: int = 0) -> list[dict[str, float]]:
    """K points of `space`, quasi-random: the first K of a scrambled Halton sequence (fixed seed),
    so any K points cover the space evenly and the same K are drawn on every invocation."""
    unit = qmc.Halton(d=len(space), scramble=True, seed=seed).random(k)
    return [{d.field: d.value(float(u)) for d, u in zip(space, row, strict=True)} for row in unit]
