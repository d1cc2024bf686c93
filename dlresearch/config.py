"""The run config: defaults, validation of its fields, and its JSON form.

Every config file in `configs/` starts from `base_config()` and overrides what it needs, so the
resolved config written to `WORKDIR/config.json` always has every field. `validate` checks every
field's type and range and the rules across fields; the `model` section's names, and the
diagnostics' layer and unit, are checked against the module a run builds, where it is built
(`train.check`, which `train.run` calls before any work).
"""

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from dlresearch import data, optim
from dlresearch.errors import ConfigError

PARALLEL_MODES = ("single", "shard_map", "pmap")
DTYPES = ("float32", "bfloat16")
# The hyperparameters each member's state carries (`program.init_states`): with the seed, what a
# sweep can vary.
HPARAMS = (*optim.INJECTED, "init_scale")
SWEEP_AXES = ("seed", *HPARAMS)


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
    # > 0: this fraction of the training set (its last examples, the nearest whole number of them)
    # becomes the evaluation (validation) split, e.g. 1/6: 10,000 of MNIST's 60,000.
    c.data.holdout = 0.0
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
    # Adam's (and adamw's, and a plug-in's that takes them): Kingma & Ba (2015) Algorithm 1.
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
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
    # Targets whose first crossing is recorded at step resolution ("train/accuracy>=0.75",
    # "train/loss<=0.3"): the first step, from train.reach_window on, at which the mean of the
    # per-step metric over the trailing train.reach_window steps reaches it (metrics.jsonl key
    # "first_reach/<target>", logged at that step).
    c.train.reach_targets = ()
    c.train.reach_window = 20

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 500
    c.eval.batch_size = 500
    # Also evaluate (eval mode) on this many training examples, a fixed subset (all when the
    # training split is smaller): "train_eval/loss", "train_eval/accuracy". 0 = off.
    c.eval.train_examples = 10_000

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
    # The 'members' axis of the ('members', 'data') mesh: the devices form this many rows, each
    # running whole members of a sweep; a row's devices split each batch. 1 = every device runs
    # every member (pure data parallelism). Divides the devices and the members; shard_map only.
    c.parallel.member_shards = 1
    # Split the dataset over the 'data' axis instead of holding all of it on every device (each
    # step then gathers its batch across the row: same batches, same numbers). shard_map only.
    c.parallel.shard_dataset = False
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
    # Axes listed here vary together instead of crossed: their tuples have one length and member i
    # takes element i of each (a set of points, e.g. quasi-random tuning points), crossed with the
    # other axes.
    c.sweep.zipped = ()
    return c


# -- validation: what every field accepts, declared once --------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts: a type, and for numbers a finite value within bounds.

    `kind` is "int", "float" (ints accepted), "bool", "str" or "choice" (one of `choices()`, a
    callable so that registries are read when validating, after every plug-in registered). With
    `sequence` the field is a tuple or list whose every element follows the rule.
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    choices: Callable[[], Sequence[str]] | None = None
    sequence: bool = False

    def error(self, field: str, value: Any) -> str:
        """The one-line complaint about a `value` this rule does not accept."""
        if self.kind == "choice":
            return f"{field}={value!r} is not known; allowed values: {', '.join(self.choices())}"
        what = {"int": "an integer", "float": "a finite number", "bool": "True or False"}.get(
            self.kind, "a string"
        )
        if self.low > -math.inf and self.high < math.inf:
            what += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            what += ")" if self.high_open else "]"
        elif self.low > -math.inf:
            what += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.sequence:
            what = f"a tuple of values, each {what}"
        return f"{field}={value!r} is not valid; allowed: {what}"

    def accepts(self, value: Any) -> bool:
        if self.sequence:
            return isinstance(value, tuple | list) and all(map(self._accepts_one, value))
        return self._accepts_one(value)

    def _accepts_one(self, value: Any) -> bool:
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices()
        if self.kind in ("bool", "str"):
            return isinstance(value, bool if self.kind == "bool" else str)
        numeric = int if self.kind == "int" else int | float
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (value < self.high if self.high_open else value <= self.high)


def _count(low: int = 0) -> Rule:
    return Rule("int", low=low)


def _rate(sequence: bool = False) -> Rule:
    """A fraction in [0, 1): dropout rates, momenta."""
    return Rule("float", low=0, high=1, high_open=True, sequence=sequence)


def _nonnegative(sequence: bool = False) -> Rule:
    return Rule("float", low=0, sequence=sequence)


def _positive(sequence: bool = False) -> Rule:
    return Rule("float", low=0, low_open=True, sequence=sequence)


def _names(registry: Any) -> Rule:
    return Rule("choice", choices=registry.names)


def _text() -> Rule:
    return Rule("str")


RULES: dict[str, Rule] = {
    "seed": _count(),
    "halt_on_nan": Rule("bool"),
    "dtype": Rule("choice", choices=lambda: DTYPES),
    "data.name": _names(data.DATASETS),
    "data.dir": _text(),
    "data.tfds_name": _text(),
    "data.tfds_download": Rule("bool"),
    "data.holdout": _rate(),
    "data.augment": _text(),  # a name data.load checks before it reads anything
    "data.scale": _text(),  # likewise
    # The model's names: models.build checks them (a run's own model may read none of them).
    "model.name": _text(),
    "model.depth": _count(1),
    "model.width": _count(1),
    "model.activation": _text(),
    "model.kernel_init": _text(),
    "model.init_std": _positive(),
    "model.normalization": _text(),
    "model.residual": Rule("bool"),
    "model.dropout": _rate(),
    "model.input_dropout": _rate(),
    "model.bn_sync": Rule("bool"),
    "model.bn_momentum": _rate(),
    "model.cnn_preset": _text(),
    "model.channels": Rule("int", low=1, sequence=True),
    "model.dense": Rule("int", low=1, sequence=True),
    "optim.name": _text(),  # a registered name or a plug-in, which optim.build checks
    "optim.lr": _positive(),
    "optim.momentum": _rate(),
    "optim.b1": _rate(),
    "optim.b2": _rate(),
    "optim.eps": _nonnegative(),
    "optim.weight_decay": _nonnegative(),
    "optim.grad_clip_norm": _nonnegative(),
    "optim.schedule": _names(optim.SCHEDULES),
    "optim.warmup_steps": _count(),
    "optim.boundaries": Rule("int", low=1, sequence=True),
    "optim.decay_factor": _positive(),
    "train.steps": _count(1),
    "train.batch_size": _count(1),
    "train.steps_per_call": _count(1),
    "train.log_every_steps": _count(1),
    "train.reach_targets": Rule("str", sequence=True),
    "train.reach_window": _count(1),
    "eval.every_steps": _count(),
    "eval.batch_size": _count(1),
    "eval.train_examples": _count(),
    "checkpoint.every_steps": _count(),
    "checkpoint.keep": _count(1),
    "diagnostics.every_steps": _count(),
    "diagnostics.layer": Rule("int"),  # and within the model's hidden layers: diagnostics.check
    "diagnostics.unit": _count(),  # and below that layer's width
    "diagnostics.all_units": Rule("bool"),
    "parallel.mode": Rule("choice", choices=lambda: PARALLEL_MODES),
    "parallel.member_shards": _count(1),
    "parallel.shard_dataset": Rule("bool"),
    "parallel.coordinator": _text(),
    "parallel.num_processes": _count(1),
    "parallel.process_id": _count(),
    "sweep.seed": Rule("int", low=0, sequence=True),
    "sweep.lr": _positive(sequence=True),
    "sweep.weight_decay": _nonnegative(sequence=True),
    "sweep.momentum": _rate(sequence=True),
    "sweep.b1": _rate(sequence=True),
    "sweep.b2": _rate(sequence=True),
    "sweep.eps": _nonnegative(sequence=True),
    "sweep.init_scale": _positive(sequence=True),
    "sweep.zipped": Rule("choice", choices=lambda: HPARAMS, sequence=True),
}


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
    for part in field.split("."):
        config = config[part]
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first bad field, its value and what is allowed.

    Pure Python (no device is touched): callable before `jax.distributed.initialize` and before
    anything is written. The fields a model reads are checked where it is built: `train.check`.
    """
    _check_keys(config, base_config(), "")
    for field, rule in RULES.items():
        value = _get(config, field)
        if not rule.accepts(value):
            raise ConfigError(rule.error(field, value))
    for check in _CROSS_FIELD_RULES:
        check(config)


def _check_optimizer(config: ml_collections.ConfigDict) -> None:
    """The rules the optimizer's builder owns (a known name, piecewise needs boundaries, ...)."""
    optim.build(config.optim, total_steps=config.train.steps)


def _check_processes(config: ml_collections.ConfigDict) -> None:
    p = config.parallel
    if p.process_id >= p.num_processes:
        raise ConfigError(
            f"parallel.process_id={p.process_id} must be below parallel.num_processes="
            f"{p.num_processes}"
        )


def _check_mesh(config: ml_collections.ConfigDict) -> None:
    """pmap keeps its 1-D form: one row of devices, the dataset replicated."""
    p = config.parallel
    if p.mode == "pmap" and p.member_shards > 1:
        raise ConfigError(
            f"parallel.member_shards={p.member_shards} needs parallel.mode='shard_map' "
            "(pmap runs every member on every device: member_shards=1)"
        )
    if p.mode == "pmap" and p.shard_dataset:
        raise ConfigError(
            "parallel.shard_dataset=True needs parallel.mode='shard_map' (pmap holds the whole "
            "dataset on every device)"
        )


def _check_sweep_used(config: ml_collections.ConfigDict) -> None:
    """A swept hyperparameter the optimizer does not read would give identical members."""
    used = optim.uses(config.optim.name)
    for axis in ("momentum", "b1", "b2", "eps"):
        if config.sweep[axis] and axis not in used:
            raise ConfigError(
                f"sweep.{axis}={tuple(config.sweep[axis])!r} has no effect with optim.name="
                f"{config.optim.name!r} (its members would be identical); it reads: "
                + ", ".join(["lr", *used])
            )


def _check_sweep_zipped(config: ml_collections.ConfigDict) -> None:
    zipped = tuple(config.sweep.zipped)
    lengths = {axis: len(config.sweep[axis]) for axis in zipped}
    if len(set(zipped)) < len(zipped) or 0 in lengths.values() or len(set(lengths.values())) > 1:
        raise ConfigError(
            f"sweep.zipped={zipped!r} must name distinct swept axes of one length; their lengths: "
            + ", ".join(f"{axis} {n}" for axis, n in lengths.items())
        )


_CROSS_FIELD_RULES: tuple[Callable[[ml_collections.ConfigDict], None], ...] = (
    _check_processes,
    _check_mesh,
    _check_sweep_used,
    _check_sweep_zipped,
    _check_optimizer,
)


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
    """The members of the sweep: one dict per member with a value for every sweep axis.

    The product of the axes, those of `sweep.zipped` taken together as one axis (at the place of
    the first of them), in `SWEEP_AXES` order.
    """
    base = {"seed": config.seed, "init_scale": 1.0}
    base |= {field: config.optim[field] for field in optim.INJECTED}
    zipped = [axis for axis in SWEEP_AXES if axis in tuple(config.sweep.zipped)]
    groups = [(axis,) for axis in SWEEP_AXES if axis not in zipped]
    if zipped:
        groups.insert(SWEEP_AXES.index(zipped[0]), tuple(zipped))  # none before it is zipped
    values = [
        list(zip(*(tuple(config.sweep[axis]) or (base[axis],) for axis in group), strict=True))
        for group in groups
    ]
    flat = [axis for group in groups for axis in group]
    members = [dict(zip(flat, sum(combo, ()), strict=True)) for combo in itertools.product(*values)]
    return [{axis: member[axis] for axis in SWEEP_AXES} for member in members]


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
