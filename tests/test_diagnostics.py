"""Per-layer diagnostics: present for every hidden layer, sane, and the same on 1 and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_config

from dlresearch import diagnostics, models, train


def _measure(**overrides: object) -> dict[str, np.ndarray]:
    trainer = train.Trainer(small_config(**{"model.depth": 3, **overrides}))
    return trainer.measure(trainer.init_state())


def test_sigmoid_mlp_reports_every_layer() -> None:
    values = _measure(**{"model.activation": "sigmoid"})
    for layer in ("hidden_0", "hidden_1", "hidden_2"):
        assert values[f"diag/grad_norm/{layer}"][0] > 0
        assert 0 <= values[f"diag/saturated/{layer}"][0] <= 1
        assert 0 < values[f"diag/act_mean/{layer}"][0] < 1  # sigmoid outputs
        assert values[f"diag/act_std/{layer}"][0] >= 0
    assert "diag/grad_norm/output" in values
    assert values["diag/unit_p15"][0] <= values["diag/unit_p50"][0] <= values["diag/unit_p85"][0]


def test_relu_reports_dead_units_and_no_saturation() -> None:
    values = _measure(**{"model.activation": "relu"})
    assert 0 <= values["diag/dead/hidden_0"][0] <= 1
    assert not any(k.startswith("diag/saturated/") for k in values)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_diagnostics_match_one_device(mode: str) -> None:
    single = _measure(**{"model.activation": "tanh"})
    sharded = _measure(**{"model.activation": "tanh", "parallel.mode": mode})
    assert single.keys() == sharded.keys()
    for key in single:
        np.testing.assert_allclose(sharded[key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("mode", ["single", "shard_map"])
def test_all_units_gives_every_unit_of_the_layer_and_the_tracked_one_unchanged(mode: str) -> None:
    tracked = {"model.activation": "sigmoid", "diagnostics.unit": 2, "parallel.mode": mode}
    one = _measure(**tracked)
    every = _measure(**tracked, **{"diagnostics.all_units": True})
    width = small_config().model.width
    for q in diagnostics.PERCENTILES:
        units = [every[f"diag/units_p{q}/{u}"][0] for u in range(width)]
        assert len([k for k in every if k.startswith(f"diag/units_p{q}/")]) == width
        np.testing.assert_allclose(units[2], one[f"diag/unit_p{q}"][0], rtol=1e-6)
        np.testing.assert_allclose(every[f"diag/unit_p{q}"], one[f"diag/unit_p{q}"], rtol=1e-6)
    assert not any(k.startswith("diag/units_p") for k in one)
    assert len({float(every[f"diag/units_p50/{u}"][0]) for u in range(width)}) > 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "mlp", "depth": 12, "normalization": "batchnorm"},
        {"name": "cnn", "channels": (4, 4), "dense": (8, 8), "normalization": "batchnorm"},
        {"name": "resnet_cifar", "depth": 8, "normalization": "batchnorm"},
    ],
    ids=["mlp", "cnn", "resnet_cifar"],
)
def test_forward_order_restores_the_order_layers_are_created(overrides: dict) -> None:
    config = small_config().model
    config.update(overrides)
    model = models.build(config, num_classes=10)
    # Un-jitted, Flax keeps the params in creation order; a jitted function would sort them.
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
    created = list(params)
    assert sorted(created, key=diagnostics.forward_order) == created


def test_signal_norm_reports_every_hidden_layer_and_shrinks_through_sigmoids() -> None:
    # sigmoid' <= 1/4 and Glorot weights: the back-propagated signal shrinks toward the input.
    values = _measure(**{"model.activation": "sigmoid", "model.kernel_init": "xavier_uniform"})
    signal = [values[f"diag/signal_norm/hidden_{i}"][0] for i in range(3)]
    assert "diag/signal_norm/output" not in values
    assert 0 < signal[0] < signal[1] < signal[2]
