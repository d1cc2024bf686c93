"""The run config: defaults, validation against the registries, and its JSON form.

Every config file in `configs/` starts from `base_config()` and overrides what it needs, so the
resolved config written to `WORKDIR/config.json` always has every field.
"""

import itertools
import json
from collections.abc import Mapping
from typing import Any

import ml_collections

from dlresearch import data, models, optim
from dlresearch.registry import ConfigError

PARALLEL_MODES = ("single", "shard_map", "pmap")
DTYPES = ("float32", "bfloat16")
SWEEP_AXES = ("seed", "lr", "weight_decay", "momentum", "init_scale")


def base_config() -> ml_collections.ConfigDict:
    """Every field with its default; config files override a few."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Stop a member's training at its first non-finite loss (its params freeze, the run records it).
    c.halt_on_nan = True
    # Compute dtype; params and optimizer state stay float32.
    c.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.dir = ""
    c.data.tfds_name = ""
    # data.name="tfds": let TFDS download and prepare data.tfds_name into data.dir (or its default,
    # ~/tensorflow_datasets) when it is not prepared there. Most stock builders need tensorflow.
    c.data.tfds_download = False
    # > 0: the last `holdout` training examples become the evaluation (validation) split.
    c.data.holdout = 0
    c.data.augment = "auto"
    # "standardize": (x / 255 - mean) / std per channel; "center": x - 255 * mean (raw pixels).
    c.data.scale = "standardize"

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.depth = 2
    c.model.width = 128
    c.model.activation = "relu"
    c.model.kernel_init = "he_normal"
    c.model.init_std = 0.01
    c.model.normalization = "none"
    c.model.residual = False
    c.model.dropout = 0.0
    c.model.input_dropout = 0.0
    c.model.bn_sync = True
    c.model.bn_momentum = 0.9
    c.model.cnn_preset = ""
    c.model.channels = (32, 64)
    c.model.dense = (128,)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.optim.momentum = 0.9
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0  # 0 = no clipping
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.boundaries = ()  # piecewise: steps where lr is multiplied by decay_factor
    c.optim.decay_factor = 0.1

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 128
    # Steps per compiled call (lax.scan); small models are dispatch-bound without it.
    c.train.steps_per_call = 100
    c.train.log_every_steps = 100

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 500
    c.eval.batch_size = 500

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 2

    c.diagnostics = ml_collections.ConfigDict()
    c.diagnostics.every_steps = 0  # 0 = off
    # The unit whose pre-activation percentiles are tracked (BatchNorm paper Fig. 1b-c): layer -1 = last hidden.
    c.diagnostics.layer = -1
    c.diagnostics.unit = 0
    # Also the percentiles of every unit of that layer (e.g. the drift of a whole layer's inputs).
    c.diagnostics.all_units = False

    c.parallel = ml_collections.ConfigDict()
    c.parallel.mode = "shard_map"
    # Multi-host: "" = single process, "auto" = jax.distributed.initialize() detects (e.g. SLURM),
    # "host:port" = explicit coordinator with num_processes and process_id.
    c.parallel.coordinator = ""
    c.parallel.num_processes = 1
    c.parallel.process_id = 0

    # Vectorised sweep: each non-empty tuple is an axis; members are their cartesian product and train
    # together as one vmapped program. Empty everywhere = one member (seed, optim.lr, ...).
    c.sweep = ml_collections.ConfigDict()
    for axis in SWEEP_AXES:
        c.sweep[axis] = ()
    return c


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not known; allowed values: {', '.join(allowed)}")


def _check_positive(
    config: ml_collections.ConfigDict, *fields: str, allow_zero: bool = False
) -> None:
    for field in fields:
        value = config
        for part in field.split("."):
            value = value[part]
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"{field}={value!r} must be {bound}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first bad field, its value and what is allowed."""
    expected = base_config()
    _check_keys(config, expected, "")
    data.DATASETS.get(config.data.name)
    # Building is cheap (no parameters yet) and checks every name and shape rule of the section.
    models.build(config.model, num_classes=10)
    optim.build(config.optim, total_steps=config.train.steps)
    _check_choice("parallel.mode", config.parallel.mode, PARALLEL_MODES)
    _check_choice("dtype", config.dtype, DTYPES)
    _check_positive(config, "train.steps", "train.batch_size", "train.steps_per_call")
    _check_positive(config, "train.log_every_steps", "eval.batch_size", "checkpoint.keep")
    _check_positive(config, "eval.every_steps", "checkpoint.every_steps", allow_zero=True)
    _check_positive(config, "diagnostics.every_steps", "data.holdout", allow_zero=True)
    for axis in SWEEP_AXES:
        if not isinstance(config.sweep[axis], tuple | list):
            raise ConfigError(f"sweep.{axis}={config.sweep[axis]!r} must be a tuple of values")


def _check_keys(
    config: ml_collections.ConfigDict, expected: ml_collections.ConfigDict, prefix: str
) -> None:
    for key, value in config.items():
        field = prefix + key
        if key not in expected:
            raise ConfigError(
                f"unknown config field {field!r}; allowed here: {', '.join(sorted(expected))}"
            )
        if isinstance(expected[key], ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"config field {field!r} must be a section, got {value!r}")
            _check_keys(value, expected[key], field + ".")


def sweep_members(config: ml_collections.ConfigDict) -> list[dict[str, float]]:
    """The members of the sweep: one dict per member with a value for every sweep axis."""
    base = {
        "seed": config.seed,
        "lr": config.optim.lr,
        "weight_decay": config.optim.weight_decay,
        "momentum": config.optim.momentum,
        "init_scale": 1.0,
    }
    values = [tuple(config.sweep[axis]) or (base[axis],) for axis in SWEEP_AXES]
    return [dict(zip(SWEEP_AXES, combo, strict=True)) for combo in itertools.product(*values)]


def swept_axes(config: ml_collections.ConfigDict) -> list[str]:
    return [axis for axis in SWEEP_AXES if len(config.sweep[axis]) > 0]


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted fields ("model.depth") set; unknown fields raise ConfigError."""
    config = ml_collections.ConfigDict(config.to_dict())
    for field, value in overrides.items():
        section = config
        *parents, leaf = field.split(".")
        try:
            for part in parents:
                section = section[part]
            if leaf not in section:
                raise KeyError(leaf)
        except (KeyError, TypeError):
            raise ConfigError(f"unknown config field {field!r}") from None
        section[leaf] = tuple(value) if isinstance(value, list) else value
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Fields that differ between two config dicts, as 'field: old -> new' lines."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff(a, b, prefix + key + ".")
        elif _normalise(a) != _normalise(b):
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value
