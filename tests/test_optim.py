"""Every optimizer and schedule builds and takes a finite step; sweepable hyperparameters."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_config

from dlresearch import optim
from dlresearch.errors import ConfigError


def _quadratic_step(config) -> tuple[float, float]:
    opt = optim.build(config.optim, total_steps=100)
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = opt.tx.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2)
    for _ in range(3):
        grads = jax.grad(loss)(params)
        updates, state = opt.tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return float(loss(params)), float(optim.learning_rate(opt, state, jnp.asarray(3)))


@pytest.mark.parametrize("name", optim.OPTIMIZERS.names())
def test_every_optimizer_decreases_a_quadratic(name: str) -> None:
    config = small_config(**{"optim.name": name, "optim.lr": 0.1, "optim.weight_decay": 1e-4})
    if name == "adadelta":  # the update is scaled by an adaptive unit-less rate
        config.optim.lr = 1.0
    loss, lr = _quadratic_step(config)
    assert np.isfinite(loss) and loss < 14.0
    assert lr == pytest.approx(config.optim.lr)


@pytest.mark.parametrize("name", optim.SCHEDULES.names())
def test_every_schedule_multiplies_the_base_rate(name: str) -> None:
    config = small_config(**{"optim.schedule": name, "optim.boundaries": (50,), "optim.lr": 0.5})
    schedule = optim.build(config.optim, total_steps=100).schedule
    assert float(schedule(0)) == pytest.approx(1.0)
    assert 0.0 <= float(schedule(99)) <= 1.0
    if name != "constant":
        assert float(schedule(99)) < 1.0


def test_piecewise_divides_by_ten_at_each_boundary() -> None:
    config = small_config(**{"optim.schedule": "piecewise", "optim.boundaries": (32000, 48000)})
    schedule = optim.build(config.optim, total_steps=64000).schedule
    np.testing.assert_allclose(
        [schedule(31999), schedule(32001), schedule(48001)], [1, 0.1, 0.01], rtol=1e-6
    )


def test_warmup_ramps_linearly() -> None:
    config = small_config(**{"optim.warmup_steps": 10})
    schedule = optim.build(config.optim, total_steps=100).schedule
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10), schedule(50)], [0, 0.5, 1, 1]
    )


def test_injected_learning_rate_is_set_per_state_without_rebuilding() -> None:
    opt = optim.build(small_config(**{"optim.name": "sgd"}).optim, total_steps=10)
    params = {"w": jnp.ones(2)}
    states = jax.vmap(lambda lr: optim.set_hyperparams(opt.tx.init(params), learning_rate=lr))(
        jnp.array([0.1, 0.2])
    )
    updates, _ = jax.vmap(opt.tx.update, in_axes=(None, 0, None))(params, states, params)
    np.testing.assert_allclose(updates["w"][:, 0], [-0.1, -0.2], rtol=1e-6)


def test_unknown_names_list_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"optim\.name='lbfgs' is not known; allowed values: adadelta"
    ):
        optim.build(small_config(**{"optim.name": "lbfgs"}).optim, 10)
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        optim.build(small_config(**{"optim.schedule": "step"}).optim, 10)


def test_piecewise_boundaries_are_absolute_steps_after_a_warmup():
    config = small_config(
        **{"optim.schedule": "piecewise", "optim.boundaries": (30, 60), "optim.warmup_steps": 10}
    )
    schedule = optim.build(config.optim, total_steps=100).schedule
    steps = [0, 5, 10, 29, 30, 59, 60, 99]
    # Ramp 0 -> 1 over steps 0..10, then x0.1 from step 30 and again from step 60.
    expected = [0, 0.5, 1, 1, 0.1, 0.1, 0.01, 0.01]
    np.testing.assert_allclose([schedule(s) for s in steps], expected, rtol=1e-6)


def test_piecewise_boundaries_inside_the_warmup_are_rejected():
    config = small_config(
        **{"optim.schedule": "piecewise", "optim.boundaries": (10, 60), "optim.warmup_steps": 10}
    )
    with pytest.raises(ConfigError, match=r"optim\.boundaries=\(10, 60\) .*optim\.warmup_steps=10"):
        optim.build(config.optim, total_steps=100)


def test_adadelta_first_step_uses_zeilers_rho_and_eps():
    # Zeiler (2012) Algorithm 1 with rho 0.95, eps 1e-6, starting from E[g^2] = E[dx^2] = 0:
    # E[g^2] = (1 - rho) g^2 and dx = -sqrt(0 + eps) / sqrt(E[g^2] + eps) * g.
    config = small_config(**{"optim.name": "adadelta", "optim.lr": 1.0})
    opt = optim.build(config.optim, total_steps=10)
    params = {"w": jnp.array([1.0])}
    grads = {"w": jnp.array([2.0])}
    updates, _ = opt.tx.update(grads, opt.tx.init(params), params)
    expected = -math.sqrt(1e-6) / math.sqrt(0.05 * 2.0**2 + 1e-6) * 2.0
    np.testing.assert_allclose(updates["w"], [expected], rtol=1e-5)


def test_describe_states_every_hyperparameter_in_force():
    config = small_config(
        **{
            "optim.name": "nesterov",
            "optim.lr": 0.1,
            "optim.momentum": 0.9,
            "optim.weight_decay": 1e-4,
            "optim.schedule": "piecewise",
            "optim.boundaries": (32_000, 48_000),
            "optim.warmup_steps": 400,
        }
    )
    assert optim.describe(config.optim) == (
        "nesterov (momentum 0.9), lr 0.1, weight decay 0.0001 x params added to the gradient, "
        "lr x0.1 at steps 32,000, 48,000, linear warm-up over the first 400 steps"
    )
    adadelta = small_config(
        **{"optim.name": "adadelta", "optim.lr": 1.0, "optim.grad_clip_norm": 5.0}
    )
    assert optim.describe(adadelta.optim) == (
        "adadelta (rho 0.95, eps 1e-06), lr 1, gradients clipped to global norm 5"
    )
    adam = small_config(**{"optim.name": "adam", "optim.schedule": "cosine"})
    assert optim.describe(adam.optim) == (
        "adam (b1 0.9, b2 0.999, eps 1e-08), lr 0.01, cosine decay to 0 by the last step"
    )


@pytest.mark.parametrize("name", ["optax.lion", "optax.nadamw", "optax.sgd"])
def test_any_optax_optimizer_by_name_decreases_a_quadratic(name: str) -> None:
    config = small_config(**{"optim.name": name, "optim.lr": 0.1})
    for field, value in optim.defaults(name).items():
        config.optim[field] = value
    loss, lr = _quadratic_step(config)
    assert np.isfinite(loss) and loss < 14.0
    assert lr == pytest.approx(0.1)


def test_a_plug_in_takes_its_own_defaults_as_tunable_hyperparameters() -> None:
    # lion's b2 is 0.99 and its weight decay 1e-3, not Adam's; sgd's momentum=None is not numeric.
    assert optim.defaults("optax.lion") == {"weight_decay": 1e-3, "b1": 0.9, "b2": 0.99}
    assert optim.uses("optax.sgd") == ()
    assert optim.uses("adam") == ("weight_decay", "b1", "b2", "eps")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A researcher's module `myopt` on the path: `make(learning_rate)` and a bad `needs_beta`."""
    (tmp_path / "myopt_for_tests.py").write_text(
        "import optax\n\n"
        "def make(learning_rate):\n"
        "    return optax.sgd(learning_rate, momentum=0.95)\n\n"
        "def needs_beta(learning_rate, beta):\n"
        "    return optax.sgd(learning_rate, momentum=beta)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "myopt_for_tests"


def test_module_factory_is_an_optimizer_of_its_learning_rate(user_module) -> None:
    name = f"{user_module}:make"
    config = small_config(**{"optim.name": name, "optim.lr": 0.05})
    opt = optim.build(config.optim, total_steps=10)
    params = {"w": jnp.array([1.0])}
    grads = {"w": jnp.array([2.0])}
    state = opt.tx.init(params)
    first, state = opt.tx.update(grads, state, params)
    second, _ = opt.tx.update(grads, state, params)
    # Heavy ball with momentum 0.95: -lr g, then -lr (g + 0.95 g).
    np.testing.assert_allclose([first["w"][0], second["w"][0]], [-0.1, -0.1 * 1.95], rtol=1e-5)
    assert optim.describe(config.optim) == f"{name}, lr 0.05"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("adamm", r"optim\.name='adamm' is not known; allowed values: adadelta, .*module:factory"),
        ("optax.adamm", r"optim\.name='optax\.adamm' is not known \('optax' has no 'adamm'\)"),
        ("nosuchmodule_xyz:make", r"cannot import 'nosuchmodule_xyz'"),
        ("optax.chain", r"optim\.name='optax\.chain' must be a function of learning_rate"),
        (
            "{mod}:needs_beta",
            r"must be a function of learning_rate .*required: learning_rate, beta",
        ),
    ],
)
def test_bad_optimizer_names_say_what_is_allowed(user_module, name: str, match: str) -> None:
    config = small_config(**{"optim.name": name.format(mod=user_module)})
    with pytest.raises(ConfigError, match=match):
        optim.build(config.optim, 10)


def test_adam_betas_and_eps_are_injected_per_member() -> None:
    opt = optim.build(small_config(**{"optim.name": "adam", "optim.lr": 1.0}).optim, 10)
    params = {"w": jnp.ones(1)}
    grads = {"w": jnp.full(1, 0.5)}

    def first_update(b1, eps):
        state = optim.set_hyperparams(opt.tx.init(params), b1=b1, eps=eps)
        return opt.tx.update(grads, state, params)[0]["w"][0]

    got = jax.vmap(first_update)(jnp.array([0.9, 0.0]), jnp.array([1e-8, 0.5]))
    # Adam's first step is -lr * g / (|g| + eps) whatever b1 (bias correction): -1, then -0.5.
    np.testing.assert_allclose(got, [-1.0, -0.5], rtol=1e-4)
