"""Vectorised sweeps: members trained together equal members trained alone."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_config

from dlresearch import config as config_lib
from dlresearch import train
from dlresearch.errors import ConfigError
from dlresearch.metrics import read_jsonl


def _train(config, steps: int) -> train.TrainState:
    trainer = train.Trainer(config)
    state, _ = trainer.train_chunk(trainer.init_state(), steps)
    return trainer.par.fetch(state)


def test_members_are_the_product_of_the_sweep_axes() -> None:
    config = small_config(**{"sweep.seed": (0, 1), "sweep.lr": (0.1, 0.01, 0.001)})
    members = config_lib.sweep_members(config)
    assert len(members) == 6
    assert members[1] == {
        "seed": 0,
        "lr": 0.01,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "init_scale": 1.0,
    }
    assert config_lib.swept_axes(config) == ["seed", "lr"]


@pytest.mark.parametrize("mode", ["single", "shard_map"])
def test_vmapped_members_equal_solo_runs(mode: str) -> None:
    sweep = {
        "sweep.seed": (3, 4),
        "sweep.lr": (1e-3, 3e-3),
        "optim.name": "momentum",
        "parallel.mode": mode,
    }
    together = _train(small_config(**sweep), 10)
    for i, member in enumerate(config_lib.sweep_members(small_config(**sweep))):
        solo = _train(
            small_config(
                **{
                    "seed": member["seed"],
                    "optim.lr": member["lr"],
                    "optim.name": "momentum",
                    "parallel.mode": mode,
                }
            ),
            10,
        )
        member_params = jax.tree.map(lambda x, i=i: x[i], together.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6),
            member_params,
            solo.params,
        )


def test_groups_of_members_run_as_concurrent_calls_equal_one_call(monkeypatch) -> None:
    # On a one-device CPU, Trainer runs a group of members per core (here groups of 1 and 2, so
    # two compiled sizes): chunks (the second of the same length as the first but across an epoch
    # boundary, so with two epochs' permutations), epoch permutations, evaluation. The results
    # must be those of one call for all members, up to the last bits (a vmap of another width).
    config = small_config(**{"sweep.seed": (0, 1, 2)})
    results = []
    for cores in (1, 2):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        trainer = train.Trainer(config)
        assert len(trainer.par.member_groups(3)) == cores
        length = trainer.program.pipeline.steps_per_epoch - 5
        assert 2 * length > trainer.program.pipeline.steps_per_epoch
        state, first = trainer.train_chunk(trainer.init_state(), length)
        state, second = trainer.train_chunk(state, length)
        state, last = trainer.train_chunk(state, 1)
        fetched = trainer.par.fetch((state, first, second, last))
        results.append((fetched, trainer.evaluate(state)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results)


def test_init_scale_multiplies_every_kernel() -> None:
    trainer = train.Trainer(small_config(**{"sweep.init_scale": (1.0, 2.0)}))
    params = jax.device_get(trainer.init_state().params)
    for layer in ("hidden_0", "output"):
        np.testing.assert_allclose(
            params[layer]["kernel"][1], 2 * params[layer]["kernel"][0], rtol=1e-6
        )
        np.testing.assert_array_equal(params[layer]["bias"][1], params[layer]["bias"][0])


def test_a_diverging_member_does_not_disturb_the_others(tmp_path: Path) -> None:
    sweep = {"sweep.lr": (1e-3, 1e6), "optim.name": "sgd", "model.activation": "relu"}
    result = train.run(small_config(**sweep), str(tmp_path / "sweep"))
    assert result.diverged_at[0] is None and result.diverged_at[1] is not None
    solo = train.run(
        small_config(**{"optim.lr": 1e-3, "optim.name": "sgd"}), str(tmp_path / "solo")
    )
    records = read_jsonl(tmp_path / "sweep" / "metrics.jsonl")
    assert any(r.get("diverged") and r["member"] == 1 for r in records)
    member0 = [r for r in records if r.get("member") == 0 and "test/loss" in r]
    assert member0[-1]["test/loss"] == pytest.approx(solo.final[0]["test/loss"], rel=1e-5)
    assert member0[-1]["sweep/lr"] == 1e-3


def test_zipped_axes_are_points_crossed_with_the_seeds(make_config) -> None:
    config = make_config(
        **{
            "optim.name": "adam",
            "sweep.seed": (0, 1),
            "sweep.lr": (0.1, 0.2, 0.3),
            "sweep.b1": (0.5, 0.6, 0.7),
            "sweep.zipped": ("lr", "b1"),
        }
    )
    config_lib.validate(config)
    members = config_lib.sweep_members(config)
    assert [(m["seed"], m["lr"], m["b1"]) for m in members] == [
        (s, lr, b1) for s in (0, 1) for lr, b1 in ((0.1, 0.5), (0.2, 0.6), (0.3, 0.7))
    ]
    assert {m["eps"] for m in members} == {config.optim.eps}


def test_zipped_axes_of_unequal_lengths_are_rejected(make_config) -> None:
    config = make_config(**{"optim.name": "adam", "sweep.lr": (0.1, 0.2), "sweep.eps": (1.0,)})
    config.sweep.zipped = ("lr", "eps")
    with pytest.raises(ConfigError, match=r"sweep\.zipped=\('lr', 'eps'\) .*lr 2, eps 1"):
        config_lib.validate(config)


def test_sweeping_a_hyperparameter_the_optimizer_ignores_is_rejected(make_config) -> None:
    config = make_config(**{"optim.name": "sgd", "sweep.b1": (0.5, 0.9)})
    with pytest.raises(ConfigError, match=r"sweep\.b1=\(0\.5, 0\.9\) has no effect .*'sgd'"):
        config_lib.validate(config)
