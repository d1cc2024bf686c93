"""Optax optimizers and learning-rate schedules from the `optim` config section.

The base learning rate, weight decay and momentum are injected hyperparameters
(`optax.inject_hyperparams`): they live in the optimizer state, so a vmapped sweep gives each member
its own values in one compiled program. The schedule is a multiplier on the base rate, applied after
the optimizer, so it stays the same function for every member. `describe` states every
hyperparameter in force, the fixed ones (`CONSTANTS`) included, for the reports.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dlresearch.errors import ConfigError
from dlresearch.registry import Registry

Schedule = Callable[[jax.Array], jax.Array]

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optim.name")
SCHEDULES: Registry[Callable[[ml_collections.ConfigDict, int], Schedule]] = Registry(
    "optim.schedule"
)


class Optimizer(NamedTuple):
    tx: optax.GradientTransformation
    schedule: Schedule  # multiplier of the base learning rate at a step


# The hyperparameters the config does not set, passed explicitly so `describe` states what runs.
CONSTANTS: dict[str, dict[str, float]] = {
    "rmsprop": {"decay": 0.9, "eps": 1e-8},  # optax's defaults
    "adagrad": {"initial_accumulator_value": 0.1, "eps": 1e-7},  # optax's defaults
    "adadelta": {"rho": 0.95, "eps": 1e-6},  # Zeiler (2012) section 4 (optax's rho is 0.9)
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},  # Kingma & Ba (2015) Algorithm 1
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
}

# Each builder takes the injected hyperparameters (learning_rate, weight_decay, momentum).
# Weight decay is L2 added to the gradient (as in the ResNet paper), except in adamw (decoupled).
_WITH_L2: dict[str, Callable[[float, float], optax.GradientTransformation]] = {
    "sgd": lambda lr, momentum: optax.sgd(lr),
    "momentum": lambda lr, momentum: optax.sgd(lr, momentum),
    "nesterov": lambda lr, momentum: optax.sgd(lr, momentum, nesterov=True),
    "rmsprop": lambda lr, momentum: optax.rmsprop(lr, **CONSTANTS["rmsprop"]),
    "adagrad": lambda lr, momentum: optax.adagrad(lr, **CONSTANTS["adagrad"]),
    "adadelta": lambda lr, momentum: optax.adadelta(lr, **CONSTANTS["adadelta"]),
    "adam": lambda lr, momentum: optax.adam(lr, **CONSTANTS["adam"]),
}


def _l2_then(
    base: Callable[[float, float], optax.GradientTransformation],
) -> Callable[..., optax.GradientTransformation]:
    def make(
        learning_rate: float, weight_decay: float, momentum: float
    ) -> optax.GradientTransformation:
        return optax.chain(optax.add_decayed_weights(weight_decay), base(learning_rate, momentum))

    return make


for _name, _base in _WITH_L2.items():
    OPTIMIZERS.add(_name, _l2_then(_base))
OPTIMIZERS.add(
    "adamw",
    lambda learning_rate, weight_decay, momentum: optax.adamw(
        learning_rate, weight_decay=weight_decay, **CONSTANTS["adamw"]
    ),
)


def _with_warmup(config: ml_collections.ConfigDict, schedule: Schedule) -> Schedule:
    """A linear ramp from 0 over the warm-up, then `schedule` counting steps from its end."""
    if config.warmup_steps <= 0:
        return schedule
    warmup = optax.linear_schedule(0.0, 1.0, config.warmup_steps)
    return optax.join_schedules([warmup, schedule], [config.warmup_steps])


@SCHEDULES.register("constant")
def _constant(config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    return optax.constant_schedule(1.0)


@SCHEDULES.register("piecewise")
def _piecewise(config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    if not config.boundaries:
        raise ConfigError("optim.schedule='piecewise' needs optim.boundaries, e.g. (32000, 48000)")
    warmup = max(0, config.warmup_steps)
    if min(config.boundaries) <= warmup:
        raise ConfigError(
            f"optim.boundaries={tuple(config.boundaries)!r} must all be after "
            f"optim.warmup_steps={config.warmup_steps!r}"
        )
    # The boundaries are absolute steps; after a warm-up this schedule counts from its end.
    return optax.piecewise_constant_schedule(
        1.0, {int(b) - warmup: config.decay_factor for b in config.boundaries}
    )


@SCHEDULES.register("cosine")
def _cosine(config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    return optax.cosine_decay_schedule(1.0, max(1, total_steps - config.warmup_steps))


@SCHEDULES.register("linear")
def _linear(config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    return optax.linear_schedule(1.0, 0.0, max(1, total_steps - config.warmup_steps))


def build(config: ml_collections.ConfigDict, total_steps: int) -> Optimizer:
    """The optimizer of the `optim` section; hyperparameters start at the config's values."""
    make = OPTIMIZERS.get(config.name)
    schedule = _with_warmup(config, SCHEDULES.get(config.schedule)(config, total_steps))
    if config.lr <= 0:
        raise ConfigError(f"optim.lr={config.lr!r} must be > 0")
    if config.grad_clip_norm < 0:
        raise ConfigError(f"optim.grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0 = off)")
    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm)
        if config.grad_clip_norm > 0
        else optax.identity(),
        optax.inject_hyperparams(make)(
            learning_rate=float(config.lr),
            weight_decay=float(config.weight_decay),
            momentum=float(config.momentum),
        ),
        optax.scale_by_schedule(schedule),
    )
    return Optimizer(tx, schedule)


def set_hyperparams(opt_state: Any, **values: jax.Array) -> Any:
    """The optimizer state with injected hyperparameters (learning_rate, ...) replaced."""
    return optax.tree_utils.tree_set(opt_state, **values)


def learning_rate(optimizer: Optimizer, opt_state: Any, step: jax.Array) -> jax.Array:
    """The learning rate in effect at `step`: the injected base rate times the schedule."""
    base = optax.tree_utils.tree_get(opt_state, "learning_rate")
    return jnp.asarray(base) * optimizer.schedule(step)


def describe(config: ml_collections.ConfigDict) -> str:
    """The `optim` section as a report states it, every hyperparameter that acts included.

    E.g. 'nesterov (momentum 0.9), lr 0.1, weight decay 0.0001 x params added to the gradient,
    lr x0.1 at steps 32,000, 48,000, linear warm-up over the first 400 steps'.
    """
    OPTIMIZERS.get(config.name)
    SCHEDULES.get(config.schedule)
    settings = {"momentum": config.momentum} if config.name in ("momentum", "nesterov") else {}
    settings |= CONSTANTS.get(config.name, {})
    text = config.name
    if settings:
        text += f" ({', '.join(f'{key} {value:g}' for key, value in settings.items())})"
    text += f", lr {config.lr:g}"
    if config.weight_decay and config.name == "adamw":
        text += f", decoupled weight decay {config.weight_decay:g}"
    elif config.weight_decay:
        text += f", weight decay {config.weight_decay:g} x params added to the gradient"
    if config.schedule == "piecewise":
        steps = ", ".join(f"{int(b):,}" for b in config.boundaries)
        text += f", lr x{config.decay_factor:g} at steps {steps}"
    elif config.schedule != "constant":
        text += f", {config.schedule} decay to 0 by the last step"
    if config.warmup_steps > 0:
        text += f", linear warm-up over the first {config.warmup_steps:,} steps"
    if config.grad_clip_norm > 0:
        text += f", gradients clipped to global norm {config.grad_clip_norm:g}"
    return text
