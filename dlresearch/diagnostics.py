"""Per-layer diagnostics of the classic ablations, measured in a compiled function on a train batch.

- gradient norm of every parameterised layer (vanishing gradients: Glorot & Bengio 2010, Fig. 7),
- norm of the back-propagated signal: the gradient of the loss w.r.t. every hidden layer's
  pre-activations (unlike a weight gradient, not scaled by the layer's fan-in or input size),
- mean and std of every hidden layer's activations, the fraction of saturated units for bounded
  activations (within 0.02 of a bound) and of dead units for ReLU (zero on the whole batch),
- the 15th/50th/85th percentiles of one unit's pre-activation (BatchNorm paper, Fig. 1b-c), and
  with `diagnostics.all_units` those of every unit of its layer (`diag/units_p{q}/{unit}`).

The models `sow` every hidden layer's pre-activation (the input of its nonlinearity) into the
"intermediates" collection and `perturb` it (adding a zero "perturbations" variable whose gradient
is the signal); layers are reported in the order the forward pass meets them.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from dlresearch import models
from dlresearch.errors import ConfigError
from dlresearch.rng import Stream

# Bounded activations: (lower, upper) of their range, for the saturation fraction.
BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0)}
SATURATION_MARGIN = 0.02
PERCENTILES = (15, 50, 85)


def ordered_leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) in insertion order, i.e. the order of the forward pass (not sorted by name)."""
    leaves = []
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves += ordered_leaves(value, f"{prefix}{key}/")
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


def forward_order(layer: str) -> tuple[int, tuple[int, ...], bool]:
    """Sort key that puts the layer names of `dlresearch.models` in forward order.

    Needed on the host: a jitted function returns its dicts sorted by key, which puts hidden_10
    before hidden_2. Order: the stem, conv_i, hidden_i and stage{s}_block{b} by their numbers
    (each layer before its norm layer), the output last.
    """
    if layer.startswith("stem"):
        group = 0
    elif layer == "output":
        group = 3
    else:
        group = 1 if layer.startswith("conv") else 2
    return group, tuple(int(n) for n in re.findall(r"\d+", layer)), "norm" in layer


def hidden_layers(model: nn.Module) -> list[tuple[str, int]]:
    """(name, width) of the hidden layers `model` sows, in forward order (what diagnostics measure)."""
    # Abstract shapes only; the layer count and widths do not depend on the image size.
    variables = jax.eval_shape(
        functools.partial(model.init, train=False, mutable=True),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32),
    )
    layers = ordered_leaves(variables.get("intermediates", {}))
    layers.sort(key=lambda layer: forward_order(layer[0]))
    return [(name.removesuffix("_preact"), sown[0].shape[-1]) for name, sown in layers]


def check(config: ml_collections.ConfigDict, model: nn.Module) -> None:
    """Raise `ConfigError` unless the `diagnostics` section's layer and unit are in `model`
    (when diagnostics are on)."""
    d = config.diagnostics
    if not d.every_steps:
        return
    layers = hidden_layers(model)
    if not -len(layers) <= d.layer < len(layers):
        raise ConfigError(
            f"diagnostics.layer={d.layer} is out of range: the model has {len(layers)} hidden "
            f"layers; allowed: {-len(layers)} to {len(layers) - 1}"
        )
    name, width = layers[d.layer]
    if d.unit >= width:
        raise ConfigError(
            f"diagnostics.unit={d.unit} is out of range: layer {d.layer} ({name}) has {width} "
            f"units; allowed: 0 to {width - 1}"
        )


def _stats(
    name: str, preact: jax.Array, activation: str, axis_name: str | None
) -> dict[str, jax.Array]:
    act = models.ACTIVATIONS.get(activation)(preact.astype(jnp.float32))
    units = act.reshape(-1, act.shape[-1])  # (examples x positions, channels)
    mean, sq = jnp.mean(units), jnp.mean(units**2)
    out = {}
    if activation in BOUNDS:
        low, high = BOUNDS[activation]
        near = (units < low + SATURATION_MARGIN) | (units > high - SATURATION_MARGIN)
        out[f"diag/saturated/{name}"] = jnp.mean(near)
    alive = jnp.any(units > 0, axis=0)
    if axis_name is not None:
        mean, sq, out = lax.pmean((mean, sq, out), axis_name)
        alive = lax.pmax(alive.astype(jnp.int32), axis_name) > 0
    if activation == "relu":
        out[f"diag/dead/{name}"] = 1.0 - jnp.mean(alive)
    out[f"diag/act_mean/{name}"] = mean
    out[f"diag/act_std/{name}"] = jnp.sqrt(jnp.maximum(sq - mean**2, 0.0))
    return out


def _signal_norms(signal: Any, axis_name: str | None) -> dict[str, jax.Array]:
    """Per hidden layer, the norm of d(mean loss over the global batch) / d(pre-activations)."""
    out = {}
    for name, grad in ordered_leaves(signal):
        squares = jnp.sum(jnp.square(grad.astype(jnp.float32)))
        if axis_name is not None:
            # Each device's loss is the mean over its shard: 1/devices of the global mean's.
            devices = lax.psum(1, axis_name)
            squares = lax.psum(squares, axis_name) / devices**2
        out[f"diag/signal_norm/{name.removesuffix('_preact')}"] = jnp.sqrt(squares)
    return out


def measure(
    program: Any,
    config: ml_collections.ConfigDict,
    state: Any,
    arrays: Any,
    *,
    axis_name: str | None,
) -> dict[str, jax.Array]:
    """Diagnostics of one member on the batch of its current step (see module docstring)."""
    images, labels = program.pipeline.batch_of_step(state, arrays, axis_name)
    params = state.params if axis_name is None else lax.pcast(state.params, axis_name, to="varying")

    variables = {"params": params, "batch_stats": state.batch_stats}
    rngs = {"dropout": jax.random.fold_in(state.rng, Stream.DIAGNOSTICS)}

    # A forward pass outside of jax.grad: the sown dict keeps the forward-pass order, and the
    # zero perturbations it creates are the points the signal's gradient is taken at.
    _, sown = program.model.apply(
        variables,
        images,
        train=True,
        rngs=rngs,
        mutable=["batch_stats", "intermediates", "perturbations"],
    )

    def loss_fn(params: Any, perturbations: Any) -> jax.Array:
        logits, _ = program.model.apply(
            {**variables, "params": params, "perturbations": perturbations},
            images,
            train=True,
            rngs=rngs,
            mutable=["batch_stats"],
        )
        return program.loss(logits, labels).mean()

    grads, signal = jax.grad(loss_fn, argnums=(0, 1))(params, sown["perturbations"])
    if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
    out = {f"diag/grad_norm/{layer}": optax.tree.norm(g) for layer, g in grads.items()}
    out.update(_signal_norms(signal, axis_name))

    intermediates = sown["intermediates"]
    preacts = [(name, leaf[0]) for name, leaf in ordered_leaves(intermediates)]
    for name, preact in preacts:
        out.update(_stats(name.removesuffix("_preact"), preact, config.model.activation, axis_name))
    # Percentiles of the tracked unit (with `all_units`, of every unit of its layer) over the whole
    # global batch (gathered over devices).
    _, preact = preacts[config.diagnostics.layer]
    units = preact.astype(jnp.float32).reshape(-1, preact.shape[-1])  # (examples, units)
    tracked = config.diagnostics.unit
    if not config.diagnostics.all_units:
        units, tracked = units[:, tracked : tracked + 1], 0
    if axis_name is not None:
        units = lax.all_gather(units, axis_name, tiled=True)
    percentiles = jnp.percentile(units, jnp.array(PERCENTILES), axis=0)  # (percentiles, units)
    if axis_name is not None:
        # Every device holds the same values; pmax (exact for equal values) types them replicated.
        percentiles = lax.pmax(percentiles, axis_name)
    for q, values in zip(PERCENTILES, percentiles, strict=True):
        out[f"diag/unit_p{q}"] = values[tracked]
        if config.diagnostics.all_units:
            out.update({f"diag/units_p{q}/{u}": v for u, v in enumerate(values)})
    return out
