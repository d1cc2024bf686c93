"""Optax optimizers and learning-rate schedules from the `optim` config section.

The base learning rate, weight decay, momentum and Adam's b1, b2 and eps are injected
hyperparameters (`INJECTED`, `optax.inject_hyperparams`): they live in the optimizer state, so a
vmapped sweep gives each member its own values in one compiled program. Besides the registered
optimizers, `optim.name` may be any optax optimizer (`optax.lion`) or a function of your own
(`module:factory`), a `PlugIn` taking `learning_rate` and, where it has them, the other injected
hyperparameters. The schedule is a multiplier on the base rate, applied after
the optimizer, so it stays the same function for every member. `describe` states every
hyperparameter in force, the fixed ones (`CONSTANTS`) included, for the reports.
"""

import functools
import importlib
import inspect
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


# The injected hyperparameters: the config field of each (`optim.<field>`, `sweep.<field>`) and
# the keyword an optax factory takes it as. Every builder takes all of them; each uses its own.
INJECTED: dict[str, str] = {
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "momentum": "momentum",
    "b1": "b1",
    "b2": "b2",
    "eps": "eps",
}
# The hyperparameters besides the learning rate that each built-in optimizer reads (weight decay:
# every one).
USES: dict[str, tuple[str, ...]] = {
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adam": ("b1", "b2", "eps"),  # Kingma & Ba (2015) Algorithm 1: 0.9, 0.999, 1e-8
    "adamw": ("b1", "b2", "eps"),
}

# The hyperparameters the config does not set, passed explicitly so `describe` states what runs.
CONSTANTS: dict[str, dict[str, float]] = {
    "rmsprop": {"decay": 0.9, "eps": 1e-8},  # optax's defaults
    "adagrad": {"initial_accumulator_value": 0.1, "eps": 1e-7},  # optax's defaults
    "adadelta": {"rho": 0.95, "eps": 1e-6},  # Zeiler (2012) section 4 (optax's rho is 0.9)
}

Hyper = dict[str, Any]  # the injected values by config field, "lr" left out

# Each builder takes the learning rate and the other injected hyperparameters.
# Weight decay is L2 added to the gradient (as in the ResNet paper), except in adamw (decoupled).
_WITH_L2: dict[str, Callable[[Any, Hyper], optax.GradientTransformation]] = {
    "sgd": lambda lr, h: optax.sgd(lr),
    "momentum": lambda lr, h: optax.sgd(lr, h["momentum"]),
    "nesterov": lambda lr, h: optax.sgd(lr, h["momentum"], nesterov=True),
    "rmsprop": lambda lr, h: optax.rmsprop(lr, **CONSTANTS["rmsprop"]),
    "adagrad": lambda lr, h: optax.adagrad(lr, **CONSTANTS["adagrad"]),
    "adadelta": lambda lr, h: optax.adadelta(lr, **CONSTANTS["adadelta"]),
    "adam": lambda lr, h: optax.adam(lr, b1=h["b1"], b2=h["b2"], eps=h["eps"]),
}


def _l2_then(
    base: Callable[[Any, Hyper], optax.GradientTransformation],
) -> Callable[..., optax.GradientTransformation]:
    def make(
        learning_rate: Any, weight_decay: Any, momentum: Any, b1: Any, b2: Any, eps: Any
    ) -> optax.GradientTransformation:
        others = {"momentum": momentum, "b1": b1, "b2": b2, "eps": eps}
        return optax.chain(optax.add_decayed_weights(weight_decay), base(learning_rate, others))

    return make


for _name, _base in _WITH_L2.items():
    OPTIMIZERS.add(_name, _l2_then(_base))
OPTIMIZERS.add(
    "adamw",
    lambda learning_rate, weight_decay, momentum, b1, b2, eps: optax.adamw(
        learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, eps=eps
    ),
)

PLUG_INS = "optax.<name> (e.g. optax.lion), module:factory"


class PlugIn(NamedTuple):
    """An optimizer named `optax.<name>` or `module:factory`: a function of `learning_rate` whose
    other arguments all have defaults; those of `INJECTED` with numeric defaults are tunable."""

    factory: Callable[..., optax.GradientTransformation]
    defaults: dict[str, float]  # the tunable hyperparameters (config fields) and their defaults


def _unknown(name: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"optim.name={name!r} is not known{why}; allowed values: "
        f"{', '.join(OPTIMIZERS.names())}, {PLUG_INS}"
    )


def _import(name: str) -> Any:
    """The object `optax.<name>` or `module:factory` names."""
    module_name, attribute = name.split(":", 1) if ":" in name else ("optax", name[len("optax.") :])
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise _unknown(name, f" (cannot import {module_name!r}: {error})") from None
    if not hasattr(module, attribute):
        raise _unknown(name, f" ({module_name!r} has no {attribute!r})")
    return getattr(module, attribute)


@functools.cache
def plug_in(name: str) -> PlugIn:
    """The optimizer `name` names (`optax.<name>` or `module:factory`); `ConfigError` if none."""
    if not (name.startswith("optax.") or ":" in name):
        raise _unknown(name)
    factory = _import(name)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        raise _unknown(name, " (not a function)") from None
    required = [
        p.name
        for p in parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if "learning_rate" not in parameters or required not in ([], ["learning_rate"]):
        raise ConfigError(
            f"optim.name={name!r} must be a function of learning_rate whose other arguments have "
            f"defaults; it takes ({', '.join(parameters)}), required: {', '.join(required)}"
        )
    defaults = {
        field: float(parameters[keyword].default)
        for field, keyword in INJECTED.items()
        if field != "lr"
        and keyword in parameters
        and isinstance(parameters[keyword].default, int | float)
        and not isinstance(parameters[keyword].default, bool)
    }
    return PlugIn(factory, defaults)


def _plug_in_builder(name: str) -> Callable[..., optax.GradientTransformation]:
    found = plug_in(name)

    def make(
        learning_rate: Any, weight_decay: Any, momentum: Any, b1: Any, b2: Any, eps: Any
    ) -> optax.GradientTransformation:
        values = {"weight_decay": weight_decay, "momentum": momentum, "b1": b1, "b2": b2}
        values["eps"] = eps
        tunable = {INJECTED[field]: values[field] for field in found.defaults}
        return found.factory(learning_rate, **tunable)

    return make


def factory(name: str) -> Callable[..., optax.GradientTransformation]:
    """The builder of optimizer `name` (registered, `optax.<name>` or `module:factory`): a
    function of every `INJECTED` hyperparameter by its optax keyword."""
    return OPTIMIZERS.get(name) if name in OPTIMIZERS else _plug_in_builder(name)


def uses(name: str) -> tuple[str, ...]:
    """The injected hyperparameters (config fields) besides `lr` that optimizer `name` reads."""
    if name in OPTIMIZERS:
        return ("weight_decay", *USES.get(name, ()))
    return tuple(plug_in(name).defaults)


def defaults(name: str) -> dict[str, float]:
    """The values optimizer `name` uses where none is given: a plug-in's own defaults, else the
    config's (`config.base_config().optim`)."""
    return {} if name in OPTIMIZERS else dict(plug_in(name).defaults)


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
    make = factory(config.name)
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
            **{keyword: float(config[field]) for field, keyword in INJECTED.items()}
        ),
        optax.scale_by_schedule(schedule),
    )
    return Optimizer(tx, schedule)


def set_hyperparams(opt_state: Any, **values: jax.Array) -> Any:
    """The optimizer state with injected hyperparameters (learning_rate, ...) replaced."""
    return optax.tree_utils.tree_set(opt_state, **values)


def injected(hparams: dict[str, Any]) -> dict[str, Any]:
    """The `INJECTED` hyperparameters of `hparams` (by config field) by their optax keywords, as
    `set_hyperparams` takes them."""
    return {keyword: hparams[field] for field, keyword in INJECTED.items()}


def learning_rate(optimizer: Optimizer, opt_state: Any, step: jax.Array) -> jax.Array:
    """The learning rate in effect at `step`: the injected base rate times the schedule."""
    base = optax.tree_utils.tree_get(opt_state, "learning_rate")
    return jnp.asarray(base) * optimizer.schedule(step)


def describe(config: ml_collections.ConfigDict) -> str:
    """The `optim` section as a report states it, every hyperparameter that acts included.

    E.g. 'nesterov (momentum 0.9), lr 0.1, weight decay 0.0001 x params added to the gradient,
    lr x0.1 at steps 32,000, 48,000, linear warm-up over the first 400 steps'; a plug-in states
    every argument it is given: 'optax.lion (weight_decay 0.001, b1 0.9, b2 0.99), lr 0.0003'.
    """
    SCHEDULES.get(config.schedule)
    builtin = config.name in OPTIMIZERS
    settings = {f: config[f] for f in uses(config.name) if f != "weight_decay" or not builtin}
    settings |= CONSTANTS.get(config.name, {})
    text = config.name
    if settings:
        text += f" ({', '.join(f'{key} {value:g}' for key, value in settings.items())})"
    text += f", lr {config.lr:g}"
    if builtin and config.weight_decay:
        text += (
            f", decoupled weight decay {config.weight_decay:g}"
            if config.name == "adamw"
            else f", weight decay {config.weight_decay:g} x params added to the gradient"
        )
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
