"""Values a mutation test found unpinned, pinned with expectations written by hand: divergence kept
across a resume and recorded at its exact step, BatchNorm's train-mode formula, and the boundary
values of config rules (not drawn from `config.RULES`, so a rule changed by mistake shows)."""

import math
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_config

from dlresearch import checkpoint, models, train
from dlresearch import config as config_lib
from dlresearch.errors import ConfigError
from dlresearch.metrics import read_jsonl

SWEEP = {"sweep.lr": (1e-3, 1e9), "optim.name": "sgd"}  # member 1 diverges within a few steps


def _params(workdir: Path, config) -> dict:
    trainer = train.Trainer(config)
    with checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=2) as ckpt:
        return jax.device_get(trainer.restore(ckpt).state.params)


def _comparable(workdir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "examples_per_sec"}
        for r in read_jsonl(workdir / "metrics.jsonl")
    ]


def test_a_member_diverged_before_a_checkpoint_stays_diverged_and_frozen_after_a_resume(
    tmp_path: Path,
) -> None:
    config = small_config(**SWEEP)
    full = train.run(config, str(tmp_path / "full"))
    assert full.diverged_at[0] is None and full.diverged_at[1] < 20
    # The same run resumed from its checkpoint at step 20, after member 1 diverged.
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "40")
    at_20 = _params(tmp_path / "resumed", config)
    resumed = train.run(config, str(tmp_path / "resumed"))
    assert resumed.diverged_at == full.diverged_at
    final = _params(tmp_path / "resumed", config)
    for leaf_20, leaf_40, leaf_full in zip(
        jax.tree.leaves(at_20),
        jax.tree.leaves(final),
        jax.tree.leaves(_params(tmp_path / "full", config)),
        strict=True,
    ):
        np.testing.assert_array_equal(leaf_40[1], leaf_20[1])  # frozen from 20 to 40
        np.testing.assert_array_equal(leaf_40, leaf_full)
    assert _comparable(tmp_path / "resumed") == _comparable(tmp_path / "full")


def test_diverged_at_is_the_first_step_with_a_non_finite_loss(tmp_path: Path) -> None:
    config = small_config(
        **{
            "optim.name": "sgd",
            "optim.lr": 1e9,
            "halt_on_nan": False,
            "train.log_every_steps": 1,
            "train.steps_per_call": 1,
            "train.steps": 20,
        }
    )
    result = train.run(config, str(tmp_path))
    records = read_jsonl(tmp_path / "metrics.jsonl")
    losses = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
    assert sorted(losses) == list(range(1, 21))  # one line per step
    first = min(s for s, loss in losses.items() if not math.isfinite(float(loss)))
    assert result.diverged_at == [first]
    assert [r["step"] for r in records if r.get("diverged")] == [first]


def test_batchnorm_in_train_mode_normalises_with_the_batch_statistics_and_epsilon_1e_5() -> None:
    config = small_config(**{"model.normalization": "batchnorm", "model.depth": 1}).model
    model = models.build(config, num_classes=10)
    # Features of small variance, so that epsilon matters: 1e-3 instead of 1e-5 would show.
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8)) * 0.01
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    _, state = model.apply(
        variables,
        x,
        train=True,
        capture_intermediates=True,
        mutable=["batch_stats", "intermediates"],
    )
    dense = state["intermediates"]["hidden_0"]["__call__"][0]
    normed = state["intermediates"]["hidden_norm_0"]["__call__"][0]
    d = np.asarray(dense, np.float64)
    mean = d.mean(axis=0)
    var = ((d - mean) ** 2).mean(axis=0)  # the biased batch variance
    expected = (d - mean) / np.sqrt(var + 1e-5)  # scale 1, bias 0 at init
    np.testing.assert_allclose(np.asarray(normed), expected, rtol=1e-4, atol=1e-5)
    assert var.max() < 1e-2  # epsilon is not negligible against these variances


@pytest.mark.parametrize(
    ("field", "value", "refused"),
    [
        ("optim.lr", 0.0, True),  # a rate must be positive
        ("optim.lr", 1e-12, False),
        ("model.dropout", 1.0, True),  # dropping everything trains nothing
        ("model.dropout", 0.0, False),
        ("model.dropout", 0.99, False),
        ("optim.momentum", 1.0, True),  # no decay: the velocity never forgets
        ("optim.momentum", 0.0, False),
        ("model.depth", 0, True),  # an MLP has at least one hidden layer
        ("model.depth", 1, False),
    ],
)
def test_config_boundaries(field: str, value: float, refused: bool) -> None:
    config = small_config(**{field: value})
    if refused:
        with pytest.raises(ConfigError, match=rf"^{field}={value!r}"):
            config_lib.validate(config)
    else:
        config_lib.validate(config)
