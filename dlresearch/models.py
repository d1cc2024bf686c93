"""Flax Linen models for controlled ablations: MLP, configurable CNN and CIFAR ResNet.

Every architectural choice is a name in a `Registry`, so one config override switches it:
`model.activation`, `model.kernel_init`, `model.normalization`, `model.name`,
`model.cnn_preset`. `build` turns the `model` config section into a module.

All models take float32 images [B, H, W, C], compute in `dtype` (bfloat16 for mixed precision),
keep float32 parameters and return float32 logits [B, num_classes].
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.typing import Dtype, Initializer

from dlresearch.errors import ConfigError
from dlresearch.registry import Registry

Activation = Callable[[jax.Array], jax.Array]
# Makes the normalisation layer named `name` for one call; `train` selects batch statistics.
NormFactory = Callable[[bool, str], Callable[[jax.Array], jax.Array]]

ACTIVATIONS: Registry[Activation] = Registry("model.activation")
INITIALIZERS: Registry[Callable[[ml_collections.ConfigDict], Initializer]] = Registry(
    "model.kernel_init"
)
NORMALIZATIONS: Registry[Callable[[ml_collections.ConfigDict, str | None, Dtype], NormFactory]] = (
    Registry("model.normalization")
)
MODELS: Registry[Callable[..., nn.Module]] = Registry("model.name")


def _identity(x: jax.Array) -> jax.Array:
    return x


for _name, _fn in {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": nn.tanh,
    "softsign": nn.soft_sign,
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.01),
    # The exact (erf) form of Hendrycks & Gimpel, not Flax's default tanh approximation.
    "gelu": functools.partial(nn.gelu, approximate=False),
    "elu": nn.elu,
    "selu": nn.selu,
    "swish": nn.swish,
    "silu": nn.silu,
    "identity": _identity,
    "linear": _identity,
}.items():
    ACTIVATIONS.add(_name, _fn)

for _name, _init in {
    "he_normal": nn.initializers.he_normal(),
    "he_uniform": nn.initializers.he_uniform(),
    "xavier_normal": nn.initializers.glorot_normal(),
    "xavier_uniform": nn.initializers.glorot_uniform(),
    "lecun_normal": nn.initializers.lecun_normal(),
    "lecun_uniform": nn.initializers.lecun_uniform(),
    # Glorot & Bengio (2010) eq. 1: U[-1/sqrt(fan_in), 1/sqrt(fan_in)]. A uniform variance
    # scaling with scale s has limit sqrt(3 s / fan_in), so s = 1/3 gives 1/sqrt(fan_in).
    "standard": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
}.items():
    INITIALIZERS.add(_name, lambda config, init=_init: init)


@INITIALIZERS.register("small_normal")
def _small_normal(config: ml_collections.ConfigDict) -> Initializer:
    """N(0, init_std^2), the "small Gaussian" of the BatchNorm paper's baselines."""
    return nn.initializers.normal(stddev=config.init_std)


@NORMALIZATIONS.register("none")
def _no_norm(config: ml_collections.ConfigDict, axis_name: str | None, dtype: Dtype) -> NormFactory:
    return lambda train, name: _identity


@NORMALIZATIONS.register("batchnorm")
def _batchnorm(
    config: ml_collections.ConfigDict, axis_name: str | None, dtype: Dtype
) -> NormFactory:
    # Without bn_sync every device normalises with its own shard's statistics.
    sync_axis = axis_name if config.bn_sync else None
    return lambda train, name: nn.BatchNorm(
        use_running_average=not train,
        momentum=config.bn_momentum,
        epsilon=1e-5,
        axis_name=sync_axis,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


@NORMALIZATIONS.register("layernorm")
def _layernorm(
    config: ml_collections.ConfigDict, axis_name: str | None, dtype: Dtype
) -> NormFactory:
    # Ba et al. (2016): statistics over all of an example's features (H, W and C for feature
    # maps), with a learned scale and shift per channel.
    def factory(train: bool, name: str) -> Callable[[jax.Array], jax.Array]:
        return lambda x: nn.LayerNorm(
            epsilon=1e-5,
            reduction_axes=tuple(range(1, x.ndim)),
            dtype=dtype,
            param_dtype=jnp.float32,
            name=name,
        )(x)

    return factory


def _dropout(rate: float, x: jax.Array, train: bool) -> jax.Array:
    """Dropout that is absent (and needs no "dropout" rng) when rate is 0."""
    return nn.Dropout(rate, deterministic=not train)(x) if rate > 0 else x


def _activate(module: nn.Module, preact: jax.Array, name: str) -> jax.Array:
    """Applies `module.activation`, first sowing its input into "intermediates" and adding a
    "perturbations" variable to it, so diagnostics can measure every hidden layer and the gradient
    of the loss w.r.t. its input (both no-ops unless those collections are passed or mutable)."""
    module.sow("intermediates", name, preact)
    return module.activation(module.perturb(name, preact))


class MLP(nn.Module):
    """`depth` hidden layers Dense -> norm -> activation -> dropout, then a Dense output layer.

    With `residual`, every hidden layer after the first (whose width may differ from the input)
    adds an identity skip: x = x + block(x).
    """

    num_classes: int
    depth: int
    width: int
    activation: Activation
    kernel_init: Initializer
    norm: NormFactory
    use_bias: bool = True  # of the hidden layers (each followed by `norm`)
    residual: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dense = functools.partial(
            nn.Dense, kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=jnp.float32
        )
        x = x.reshape((x.shape[0], -1))
        x = _dropout(self.input_dropout, x, train)
        for i in range(self.depth):
            y = dense(self.width, use_bias=self.use_bias, name=f"hidden_{i}")(x)
            y = self.norm(train, f"hidden_norm_{i}")(y)
            y = _activate(self, y, f"hidden_{i}_preact")
            y = _dropout(self.dropout, y, train)
            x = x + y if self.residual and i > 0 else y
        return dense(self.num_classes, name="output")(x).astype(jnp.float32)


class CnnArch(NamedTuple):
    """A conv stack: one conv (+ norm, activation, max-pool) per entry of `channels`, then
    hidden Dense layers of widths `dense`."""

    channels: tuple[int, ...]
    dense: tuple[int, ...]
    kernel_size: int
    pool_window: int
    pool_stride: int


CNN_PRESETS: Registry[Callable[[ml_collections.ConfigDict], CnnArch]] = Registry("model.cnn_preset")


@CNN_PRESETS.register("custom")
def _custom_cnn(config: ml_collections.ConfigDict) -> CnnArch:
    """`model.channels` 3x3 convs, each followed by a 2x2 max-pool, then `model.dense`."""
    return CnnArch(tuple(config.channels), tuple(config.dense), 3, 2, 2)


@CNN_PRESETS.register("krizhevsky2012")
def _krizhevsky2012(config: ml_collections.ConfigDict) -> CnnArch:
    """The four-layer CIFAR-10 net of Krizhevsky et al. (2012) Fig. 1 (ReLU vs tanh).

    The paper does not specify it; this is OUR choice, after the cuda-convnet CIFAR-10 layout
    without local response normalisation: conv5x5-32, conv5x5-32, conv5x5-64, each followed by
    a 3x3 stride-2 max-pool, then the output layer (four learned layers).
    """
    return CnnArch((32, 32, 64), (), 5, 3, 2)


@CNN_PRESETS.register("adam2015")
def _adam2015(config: ml_collections.ConfigDict) -> CnnArch:
    """Kingma & Ba (2015) §6.3, c64-c64-c128-1000: three 5x5 convs each followed by a 3x3
    stride-2 max-pool, a 1000-unit hidden layer, then the output layer."""
    return CnnArch((64, 64, 128), (1000,), 5, 3, 2)


class CNN(nn.Module):
    """Conv -> norm -> activation -> max-pool per conv layer, then MLP-style hidden layers.

    `dropout` is applied to the flattened conv features and to every hidden Dense output.
    """

    num_classes: int
    arch: CnnArch
    activation: Activation
    kernel_init: Initializer
    norm: NormFactory
    use_bias: bool = True  # of the conv and hidden layers (each followed by `norm`)
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        layer_kwargs = dict(kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=jnp.float32)
        hidden_kwargs = dict(use_bias=self.use_bias, **layer_kwargs)
        arch = self.arch
        x = _dropout(self.input_dropout, x, train)
        for i, channels in enumerate(arch.channels):
            k = arch.kernel_size
            x = nn.Conv(channels, (k, k), padding="SAME", name=f"conv_{i}", **hidden_kwargs)(x)
            x = _activate(self, self.norm(train, f"conv_norm_{i}")(x), f"conv_{i}_preact")
            # SAME pooling: 32 -> 16 -> 8 -> 4 for the presets, and tiny inputs never vanish.
            x = nn.max_pool(
                x,
                (arch.pool_window, arch.pool_window),
                strides=(arch.pool_stride, arch.pool_stride),
                padding="SAME",
            )
        x = _dropout(self.dropout, x.reshape((x.shape[0], -1)), train)
        for i, width in enumerate(arch.dense):
            x = nn.Dense(width, name=f"hidden_{i}", **hidden_kwargs)(x)
            x = _activate(self, self.norm(train, f"hidden_norm_{i}")(x), f"hidden_{i}_preact")
            x = _dropout(self.dropout, x, train)
        return nn.Dense(self.num_classes, name="output", **layer_kwargs)(x).astype(jnp.float32)


def _shortcut_a(x: jax.Array, filters: int, strides: int) -> jax.Array:
    """He et al. (2016) option A: subsample, then zero-pad the new channels (no parameters)."""
    x = x[:, ::strides, ::strides, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, filters - x.shape[-1])))


class BasicBlock(nn.Module):
    """Two 3x3 convs: conv -> norm -> act -> conv -> norm (+ shortcut) -> act."""

    filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: NormFactory
    activation: Activation
    residual: bool

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = self.conv(self.filters, strides=self.strides, name="conv_0")(x)
        y = _activate(self, self.norm(train, "norm_0")(y), "preact_0")
        y = self.conv(self.filters, name="conv_1")(y)
        y = self.norm(train, "norm_1")(y)
        if self.residual:
            y = y + _shortcut_a(x, self.filters, self.strides)
        return _activate(self, y, "preact_1")


class ResNetCifar(nn.Module):
    """The CIFAR-10 ResNet of He et al. (2016) §4.2, depth 6n+2; `residual=False` is the plain
    twin with the same layers. `dropout` (off in the paper) acts on the pooled features."""

    num_classes: int
    blocks_per_stage: int
    activation: Activation
    kernel_init: Initializer
    norm: NormFactory
    use_bias: bool = True  # of the convs (each followed by `norm`)
    residual: bool = True
    dropout: float = 0.0
    input_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(
            nn.Conv,
            kernel_size=(3, 3),
            # The paper's pad-1 convs. With stride 2, "SAME" would pad (0, 1) and centre output
            # (i, j) on input (2i+1, 2j+1), one pixel off the shortcut's x[:, ::2, ::2].
            padding=((1, 1), (1, 1)),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        x = _dropout(self.input_dropout, x, train)
        x = conv(16, name="stem_conv")(x)
        x = _activate(self, self.norm(train, "stem_norm")(x), "stem_preact")
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(self.blocks_per_stage):
                x = BasicBlock(
                    filters,
                    strides=2 if stage > 0 and block == 0 else 1,
                    conv=conv,
                    norm=self.norm,
                    activation=self.activation,
                    residual=self.residual,
                    name=f"stage{stage}_block{block}",
                )(x, train=train)
        x = _dropout(self.dropout, jnp.mean(x, axis=(1, 2)), train)
        x = nn.Dense(
            self.num_classes,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="output",
        )(x)
        return x.astype(jnp.float32)


@MODELS.register("mlp")
def _build_mlp(config: ml_collections.ConfigDict, num_classes: int, **layers) -> nn.Module:
    return MLP(
        num_classes, depth=config.depth, width=config.width, residual=config.residual, **layers
    )


@MODELS.register("cnn")
def _build_cnn(config: ml_collections.ConfigDict, num_classes: int, **layers) -> nn.Module:
    # An empty preset means the custom stack, so a config can leave the field blank.
    arch = CNN_PRESETS.get(config.cnn_preset or "custom")(config)
    return CNN(num_classes, arch=arch, **layers)


@MODELS.register("resnet_cifar")
def _build_resnet_cifar(config: ml_collections.ConfigDict, num_classes: int, **layers) -> nn.Module:
    depth = config.depth
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"model.depth={depth!r} is not valid for resnet_cifar: depth must be 6n+2 with n >= 1 "
            "(8, 20, 32, 44, 56, 110, ...)"
        )
    return ResNetCifar(
        num_classes, blocks_per_stage=(depth - 2) // 6, residual=config.residual, **layers
    )


def _check_rate(config: ml_collections.ConfigDict, field: str) -> float:
    rate = config[field]
    if not 0 <= rate < 1:
        raise ConfigError(f"model.{field}={rate!r} must be in [0, 1)")
    return rate


def build(
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    axis_name: str | None = None,
    dtype: Dtype = jnp.float32,
) -> nn.Module:
    """Builds the model described by the `model` config section.

    `axis_name` is the device axis BatchNorm statistics are averaged over when
    `config.bn_sync` is set (None in single-device mode); `dtype` is the compute dtype.
    """
    model_builder = MODELS.get(config.name)
    CNN_PRESETS.get(config.cnn_preset or "custom")  # checked whichever model reads it
    return model_builder(
        config,
        num_classes,
        activation=ACTIVATIONS.get(config.activation),
        kernel_init=INITIALIZERS.get(config.kernel_init)(config),
        norm=NORMALIZATIONS.get(config.normalization)(config, axis_name, dtype),
        # BatchNorm subtracts the batch mean and adds its own shift, so a bias before it is
        # redundant (the ResNet paper has none). LayerNorm subtracts a mean over the features,
        # which does not cancel a per-unit bias.
        use_bias=config.normalization != "batchnorm",
        dropout=_check_rate(config, "dropout"),
        input_dropout=_check_rate(config, "input_dropout"),
        dtype=dtype,
    )


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree (arrays or `jax.eval_shape` structs)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
