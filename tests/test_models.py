"""Tests for dlresearch.models: every registry entry trains one step; paper facts hold."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import traverse_util

from dlresearch import models
from dlresearch.errors import ConfigError

NUM_CLASSES = 10


# Each test compiles a small program and runs it once, so XLA's optimisation passes would
# dominate the run time.
fast_jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)


def model_config(**overrides) -> ml_collections.ConfigDict:
    """A full `model` config section with small defaults; keyword arguments override fields."""
    config = ml_collections.ConfigDict(
        dict(
            name="mlp",
            depth=2,
            width=16,
            activation="relu",
            kernel_init="he_normal",
            init_std=0.01,
            normalization="none",
            residual=False,
            dropout=0.0,
            input_dropout=0.0,
            bn_sync=False,
            bn_momentum=0.9,
            cnn_preset="",
            channels=(4, 8),
            dense=(16,),
        )
    )
    config.update(overrides)
    return config


def init(model, x):
    return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)


def check_sgd_step(model, x):
    """Init, then the cross-entropy and its gradient in train mode (dropout on, batch stats
    updated): the inputs of one SGD step, which must be finite."""
    labels = jnp.arange(x.shape[0]) % NUM_CLASSES

    # One compiled program per model is far cheaper on CPU than op-by-op dispatch.
    @fast_jit
    def step(x):
        variables = init(model, x)

        def loss_fn(params):
            logits, _ = model.apply(
                {**variables, "params": params},
                x,
                train=True,
                rngs={"dropout": jax.random.key(2)},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return logits, loss, grads

    logits, loss, grads = step(x)
    assert logits.shape == (x.shape[0], NUM_CLASSES)
    assert logits.dtype == jnp.float32
    assert jnp.isfinite(loss)
    assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))


def images(shape=(2, 8, 8, 1)):
    return jax.random.normal(jax.random.key(3), shape)


@pytest.mark.parametrize("activation", models.ACTIVATIONS.names())
def test_activation_trains(activation):
    config = model_config(activation=activation, dropout=0.1, input_dropout=0.2)
    check_sgd_step(models.build(config, NUM_CLASSES), images())


@pytest.mark.parametrize("kernel_init", models.INITIALIZERS.names())
def test_initializer_trains(kernel_init):
    config = model_config(kernel_init=kernel_init)
    check_sgd_step(models.build(config, NUM_CLASSES), images())


# A Dense and a 5x5 conv kernel, both with fan_in 400.
@pytest.mark.parametrize("shape", [(400, 300), (5, 5, 16, 64)])
def test_standard_init_is_glorot_bengio_uniform(shape):
    fan_in = 400
    kernel = models.INITIALIZERS.get("standard")(model_config())(jax.random.key(0), shape)
    limit = 1 / math.sqrt(fan_in)
    assert jnp.all(jnp.abs(kernel) <= limit)
    # U[-a, a] has std a / sqrt(3).
    np.testing.assert_allclose(jnp.std(kernel), 1 / math.sqrt(3 * fan_in), rtol=0.02)


def test_small_normal_uses_init_std_and_biases_are_zero():
    model = models.build(model_config(kernel_init="small_normal", init_std=0.5), NUM_CLASSES)
    params = fast_jit(functools.partial(init, model))(images())
    kernel = params["params"]["hidden_0"]["kernel"]
    np.testing.assert_allclose(jnp.std(kernel), 0.5, rtol=0.15)
    assert not jnp.any(params["params"]["hidden_0"]["bias"])


def tiny_model_config(name: str, **overrides) -> ml_collections.ConfigDict:
    # depth 8 is n=1, the smallest valid CIFAR ResNet.
    return model_config(name=name, depth=8 if name == "resnet_cifar" else 2, **overrides)


@pytest.mark.parametrize("normalization", models.NORMALIZATIONS.names())
@pytest.mark.parametrize("name", models.MODELS.names())
def test_model_and_normalization_train(name, normalization):
    config = tiny_model_config(name, normalization=normalization, dropout=0.1)
    check_sgd_step(models.build(config, NUM_CLASSES), images((2, 8, 8, 3)))


@pytest.mark.parametrize("preset", models.CNN_PRESETS.names())
def test_cnn_preset_trains(preset):
    config = model_config(name="cnn", cnn_preset=preset, dropout=0.1)
    check_sgd_step(models.build(config, NUM_CLASSES), images((2, 32, 32, 3)))


def test_empty_cnn_preset_is_custom():
    config = model_config(name="cnn", channels=(3, 5), dense=(7,))
    assert models.build(config, NUM_CLASSES).arch == models.CnnArch((3, 5), (7,), 3, 2, 2)


def test_mlp_residual_trains_and_keeps_layer_names():
    config = model_config(depth=3, residual=True, normalization="batchnorm")
    model = models.build(config, NUM_CLASSES)
    check_sgd_step(model, images())
    params = jax.eval_shape(functools.partial(init, model), images())["params"]
    hidden = {f"hidden_{i}" for i in range(3)} | {f"hidden_norm_{i}" for i in range(3)}
    assert set(params) == hidden | {"output"}


def test_mlp_residual_adds_skips_to_the_same_layers():
    residual = models.build(model_config(depth=3, residual=True), NUM_CLASSES)
    plain = models.build(model_config(depth=3, residual=False), NUM_CLASSES)

    @fast_jit
    def logits(x):
        variables = init(plain, x)
        return residual.apply(variables, x, train=False), plain.apply(variables, x, train=False)

    with_skips, without = logits(images())
    assert not jnp.allclose(with_skips, without)


def resnet_param_count(depth: int, **overrides) -> int:
    model = models.build(
        model_config(name="resnet_cifar", depth=depth, normalization="batchnorm", **overrides),
        NUM_CLASSES,
    )
    shapes = jax.eval_shape(functools.partial(init, model), jnp.zeros((1, 32, 32, 3)))
    return models.count_params(shapes["params"])


@pytest.mark.parametrize(
    ("depth", "millions", "tolerance"),
    [(20, 0.27, 0.005), (32, 0.46, 0.005), (44, 0.66, 0.005), (56, 0.85, 0.005), (110, 1.7, 0.05)],
)
def test_resnet_param_counts_match_he_2016_table_6(depth, millions, tolerance):
    assert abs(resnet_param_count(depth) / 1e6 - millions) < tolerance


def test_plain_resnet_has_same_param_count_as_residual():
    assert resnet_param_count(20, residual=False) == resnet_param_count(20, residual=True)


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("model.name", {}),
        ("model.activation", {}),
        ("model.kernel_init", {}),
        ("model.normalization", {}),
        ("model.cnn_preset", {"name": "cnn"}),
    ],
)
def test_unknown_name_lists_allowed_values(field, overrides):
    config = model_config(**overrides)
    config[field.removeprefix("model.")] = "bogus"
    with pytest.raises(ConfigError, match=rf"{field}='bogus' is not known; allowed values: \w"):
        models.build(config, NUM_CLASSES)


def test_bad_resnet_depth():
    with pytest.raises(ConfigError, match=r"model\.depth=21 .*6n\+2"):
        models.build(model_config(name="resnet_cifar", depth=21), NUM_CLASSES)


def test_bad_dropout_rate():
    with pytest.raises(ConfigError, match=r"model\.dropout=1\.0"):
        models.build(model_config(dropout=1.0), NUM_CLASSES)


@pytest.mark.parametrize("name", models.MODELS.names())
def test_bfloat16_computes_in_bf16_with_float32_params_and_logits(name):
    config = tiny_model_config(name, normalization="batchnorm")
    model = models.build(config, NUM_CLASSES, dtype=jnp.bfloat16)
    x = images((2, 8, 8, 3))
    variables = jax.eval_shape(functools.partial(init, model), x)
    # Perturbations (zeros for the diagnostics' gradient w.r.t. each pre-activation) have the
    # activations' dtype; the train state keeps only params and batch stats.
    stored = {k: v for k, v in variables.items() if k != "perturbations"}
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(stored))
    logits, state = jax.eval_shape(
        functools.partial(model.apply, train=False, capture_intermediates=True), variables, x
    )
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["output"]["__call__"][0].dtype == jnp.bfloat16


@pytest.mark.parametrize("bn_sync", [True, False])
def test_batchnorm_statistics_sync_over_axis_name(bn_sync):
    # momentum 0: the running mean after one step is exactly the batch mean.
    config = model_config(depth=1, width=4, normalization="batchnorm", bn_momentum=0.0)
    config.bn_sync = bn_sync
    model = models.build(config, NUM_CLASSES, axis_name="data")
    shards = images((2, 3, 8, 8, 1))
    variables = fast_jit(functools.partial(init, model))(shards[0])

    def step(x):
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return updates["batch_stats"]["hidden_norm_0"]["mean"]

    running_mean = fast_jit(jax.vmap(step, axis_name="data"))(shards)

    hidden = variables["params"]["hidden_0"]
    pre_activations = shards.reshape(2, 3, -1) @ hidden["kernel"]  # no bias before BatchNorm
    per_shard = pre_activations.mean(axis=1)
    expected = jnp.broadcast_to(per_shard.mean(axis=0), per_shard.shape) if bn_sync else per_shard
    # The shards' own means differ, so the check tells synchronised from per-shard statistics.
    assert not jnp.allclose(per_shard[0], per_shard[1])
    np.testing.assert_allclose(running_mean, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "preacts"),
    [
        ("mlp", ["hidden_0_preact", "hidden_1_preact"]),
        ("cnn", ["conv_0_preact", "conv_1_preact", "hidden_0_preact"]),
        (
            "resnet_cifar",
            ["stem_preact"] + [f"stage{s}_block0/preact_{i}" for s in range(3) for i in range(2)],
        ),
    ],
)
def test_every_hidden_preactivation_is_sown(name, preacts):
    model = models.build(tiny_model_config(name), NUM_CLASSES)
    x = images((2, 8, 8, 3))
    variables = jax.eval_shape(functools.partial(init, model), x)
    _, state = jax.eval_shape(
        functools.partial(model.apply, train=False, mutable=["intermediates"]), variables, x
    )
    # Compare names only: pytree transforms (eval_shape, grad, jit) return dicts sorted by key.
    assert set(traverse_util.flatten_dict(state["intermediates"], sep="/")) == set(preacts)


def test_resnet_downsampling_conv_is_centred_on_the_shortcut_pixels():
    # The paper's pad-1 3x3 stride-2 conv: output (i, j) = sum_{a,b} x(2i+a-1, 2j+b-1) k(a, b).
    # A delta at the even pixel (2, 4) reaches only output (1, 2), through the kernel centre
    # k(1, 1): the pixel where the shortcut x[:, ::2, ::2] puts it. ("SAME" padding is (0, 1)
    # at stride 2: the delta would reach outputs (0..1, 1..2) through the kernel corners.)
    model = models.build(tiny_model_config("resnet_cifar", normalization="batchnorm"), NUM_CLASSES)
    x = images((1, 8, 8, 3))
    variables = fast_jit(functools.partial(init, model))(x)
    delta = jnp.zeros((1, 8, 8, 16)).at[0, 2, 4, 0].set(1.0)
    outputs = []

    def feed_delta_to_the_downsampling_conv(next_fun, args, kwargs, context):
        module = context.module
        if module.name == "conv_0" and module.parent.name == "stage1_block0":
            outputs.append(next_fun(delta))
            return outputs[-1]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(feed_delta_to_the_downsampling_conv):
        model.apply(variables, x, train=False)
    kernel = variables["params"]["stage1_block0"]["conv_0"]["kernel"]
    expected = jnp.zeros((1, 4, 4, 32)).at[0, 1, 2].set(kernel[1, 1, 0])
    (output,) = outputs
    np.testing.assert_allclose(output, expected, atol=1e-6)


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm", "none"])
@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("mlp", {"hidden_0", "hidden_1"}),
        ("cnn", {"conv_0", "conv_1", "hidden_0"}),
        (
            "resnet_cifar",
            {"stem_conv"} | {f"stage{s}_block0/conv_{i}" for s in range(3) for i in range(2)},
        ),
    ],
)
def test_only_layers_followed_by_batchnorm_drop_their_bias(name, layers, normalization):
    # BatchNorm subtracts the batch mean, which cancels a bias; LayerNorm does not.
    model = models.build(tiny_model_config(name, normalization=normalization), NUM_CLASSES)
    params = jax.eval_shape(functools.partial(init, model), images((2, 8, 8, 3)))["params"]
    paths = traverse_util.flatten_dict(params, sep="/")
    kernels = {path.removesuffix("/kernel") for path in paths if path.endswith("/kernel")}
    assert kernels == layers | {"output"}
    biased = {layer for layer in kernels if f"{layer}/bias" in paths}
    assert biased == ({"output"} if normalization == "batchnorm" else kernels)


# The registry's names against independent references (jax.nn and the papers' formulas).
ACTIVATION_REFERENCES = {
    "relu": lambda x: jnp.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + jnp.exp(-x)),
    "tanh": jnp.tanh,
    "softsign": lambda x: x / (1 + jnp.abs(x)),
    "leaky_relu": lambda x: jnp.where(x >= 0, x, 0.01 * x),
    "gelu": lambda x: x * 0.5 * (1 + jax.scipy.special.erf(x / jnp.sqrt(2.0))),
    "elu": lambda x: jnp.where(x > 0, x, jnp.expm1(x)),
    "selu": jax.nn.selu,
    "swish": lambda x: x / (1 + jnp.exp(-x)),
    "silu": lambda x: x / (1 + jnp.exp(-x)),
    "identity": lambda x: x,
    "linear": lambda x: x,
}


def test_every_activation_has_a_reference():
    assert set(ACTIVATION_REFERENCES) == set(models.ACTIVATIONS.names())


@pytest.mark.parametrize("name", sorted(ACTIVATION_REFERENCES))
def test_activation_matches_its_reference(name):
    x = jnp.linspace(-6.0, 6.0, 241)
    np.testing.assert_allclose(
        models.ACTIVATIONS.get(name)(x), ACTIVATION_REFERENCES[name](x), rtol=1e-5, atol=1e-6
    )


# Kernel variance of each initializer for fan_in 400, fan_out 300 (He 2015; Glorot & Bengio 2010;
# LeCun 1998): normal ones truncated in Flax, but with the variance preserved.
INIT_VARIANCES = {
    "he_normal": 2 / 400,
    "he_uniform": 2 / 400,
    "xavier_normal": 2 / 700,
    "xavier_uniform": 2 / 700,
    "lecun_normal": 1 / 400,
    "lecun_uniform": 1 / 400,
    "standard": 1 / (3 * 400),
    "small_normal": 0.01**2,
}


def test_every_initializer_has_a_variance():
    assert set(INIT_VARIANCES) == set(models.INITIALIZERS.names())


@pytest.mark.parametrize("name", sorted(INIT_VARIANCES))
def test_initializer_variance(name):
    kernel = models.INITIALIZERS.get(name)(model_config())(jax.random.key(0), (400, 300))
    # 120,000 draws: the sample variance is within ~1% of the true one.
    np.testing.assert_allclose(jnp.var(kernel), INIT_VARIANCES[name], rtol=0.03)
    assert abs(float(jnp.mean(kernel))) < 0.05 * math.sqrt(INIT_VARIANCES[name])


def resnet_cifar_params_by_hand(depth: int) -> int:
    """He et al. (2016) §4.2 with option-A shortcuts: 3x3 convs without bias, BatchNorm scale and
    shift per channel, 16/32/64 filters, a 64 -> 10 Dense output."""
    n = (depth - 2) // 6
    total = 3 * 3 * 3 * 16 + 2 * 16  # stem conv + its BatchNorm
    channels_in = 16
    for filters in (16, 32, 64):
        for _ in range(n):
            total += 9 * channels_in * filters + 9 * filters * filters + 2 * 2 * filters
            channels_in = filters
    return total + 64 * 10 + 10


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_resnet_param_count_is_exactly_the_hand_count(depth):
    assert resnet_param_count(depth) == resnet_cifar_params_by_hand(depth)


def test_resnet20_hand_count_is_the_papers_027m():
    assert round(resnet_cifar_params_by_hand(20) / 1e6, 2) == 0.27
