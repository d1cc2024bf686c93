"""The ('members', 'data') mesh on 8 CPU devices: every shape gives each member's single-device run."""

import logging
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_config
from processes import ROOT, finish, main_command, start_processes

from dlresearch import checkpoint, config, train
from dlresearch.errors import ConfigError
from dlresearch.metrics import read_jsonl

SEEDS = (0, 1, 2, 3)
# Synced BatchNorm and momentum SGD: the step's collectives (gradient mean, BatchNorm statistics)
# all show in the numbers if they ran over the wrong axis.
BN = {
    "model.normalization": "batchnorm",
    "optim.name": "momentum",
    "optim.lr": 0.1,
    "train.steps": 20,
}


def _mesh(member_shards: int, **overrides: object) -> dict:
    return {
        "parallel.mode": "shard_map",
        "parallel.member_shards": member_shards,
        "sweep.seed": SEEDS,
        **BN,
        **overrides,
    }


def _params_and_eval(overrides: dict, steps: int = 20) -> tuple[dict, np.ndarray]:
    trainer = train.Trainer(small_config(**overrides))
    state, _ = trainer.train_chunk(trainer.init_state(), steps)
    return trainer.par.fetch(state.params), trainer.evaluate(state)["loss"]


@pytest.fixture(scope="module")
def solo_runs() -> list[tuple[dict, np.ndarray]]:
    """Each seed on its own, on one device."""
    return [_params_and_eval({**BN, "seed": seed}) for seed in SEEDS]


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


@pytest.mark.parametrize(
    ("member_shards", "shard_dataset"), [(4, False), (2, False), (2, True), (1, True)]
)
def test_every_mesh_shape_matches_each_members_single_device_run(
    solo_runs: list, member_shards: int, shard_dataset: bool
) -> None:
    params, eval_loss = _params_and_eval(
        _mesh(member_shards, **{"parallel.shard_dataset": shard_dataset})
    )
    for i, (solo_params, solo_loss) in enumerate(solo_runs):
        member = jax.tree.map(lambda x, i=i: x[i], params)
        solo = jax.tree.map(lambda x: x[0], solo_params)
        worst = max(jax.tree.leaves(jax.tree.map(_relative_difference, member, solo)))
        assert worst <= 1e-5, (i, worst)
        assert _relative_difference(eval_loss[i], solo_loss[0]) <= 1e-5


def test_diagnostics_on_a_mesh_match_one_device() -> None:
    """Their collectives (gradient mean, signal norms, the gathered percentiles) run over 'data'."""

    def measure(overrides: dict) -> dict:
        trainer = train.Trainer(small_config(**{"model.activation": "tanh", **overrides}))
        return trainer.measure(trainer.init_state())

    single = measure({**BN, "sweep.seed": SEEDS})
    mesh = measure(_mesh(2, **{"parallel.shard_dataset": True, "model.activation": "tanh"}))
    assert single.keys() == mesh.keys()
    for key in single:
        np.testing.assert_allclose(mesh[key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_members_are_placed_on_rows_and_the_dataset_split_over_data() -> None:
    trainer = train.Trainer(small_config(**_mesh(4, **{"parallel.shard_dataset": True})))
    assert trainer.par.layout == "members x data = 4 x 2"
    kernel = trainer.init_state().params["hidden_0"]["kernel"]
    # 4 members over 4 rows: each device holds one member's kernel.
    assert {shard.data.shape[0] for shard in kernel.addressable_shards} == {1}
    num_train = trainer.program.pipeline.num_train
    rows = {shard.data.shape[0] for shard in trainer.arrays.train_images.addressable_shards}
    assert rows == {-(-num_train // 2)}


def test_a_replicated_dataset_is_whole_on_every_device() -> None:
    trainer = train.Trainer(small_config(**_mesh(4)))
    rows = {shard.data.shape[0] for shard in trainer.arrays.train_images.addressable_shards}
    assert rows == {trainer.program.pipeline.num_train}


def test_members_not_divisible_by_member_shards_is_one_clear_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^parallel\.member_shards=4 does not divide the sweep's 6 member\(s\); use one of 1, 2, 3, 6",
    ) as error:
        train.Trainer(small_config(**_mesh(4, **{"sweep.seed": (0, 1, 2, 3, 4, 5)})))
    assert "\n" not in str(error.value)


def test_member_shards_not_dividing_the_devices_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"member_shards=3 does not divide the 8 device\(s\)"):
        train.Trainer(small_config(**_mesh(3, **{"sweep.seed": (0, 1, 2)})))


@pytest.mark.parametrize(
    ("field", "value"), [("parallel.member_shards", 2), ("parallel.shard_dataset", True)]
)
def test_pmap_keeps_its_one_dimensional_form(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}={value} needs parallel.mode='shard_map'"):
        config.validate(small_config(**{"parallel.mode": "pmap", field: value}))


def test_main_refuses_member_shards_with_pmap_in_one_line(tmp_path: Path) -> None:
    cmd, env = main_command(
        tmp_path / "run",
        "--config.parallel.mode=pmap",
        "--config.parallel.member_shards=2",
        devices=2,
    )
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: parallel.member_shards=2 needs parallel.mode='shard_map' (pmap runs every member "
        "on every device: member_shards=1)"
    ]
    assert not (tmp_path / "run").exists()


def test_the_start_line_names_the_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        train.run(small_config(**_mesh(2, **{"train.steps": 10})), str(tmp_path / "run"))
    assert "4 member(s), mode shard_map on 8 device(s), members x data = 2 x 4" in caplog.text


def test_resume_is_exact_on_a_mesh(tmp_path: Path) -> None:
    overrides = _mesh(4, **{"parallel.shard_dataset": True, "train.steps": 40})
    train.run(small_config(**overrides), str(tmp_path / "run"))
    trainer = train.Trainer(small_config(**overrides))
    with checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), keep=2) as ckpt:
        uninterrupted = trainer.par.fetch(trainer.restore(ckpt).state)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "40")
    assert train.run(small_config(**overrides), str(tmp_path / "run")).step == 40
    with checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), keep=2) as ckpt:
        resumed = trainer.par.fetch(trainer.restore(ckpt).state)
    jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)


@pytest.mark.parametrize(
    "second",
    [{"parallel.member_shards": 1}, {"parallel.mode": "single", "parallel.member_shards": 1}],
)
def test_checkpoint_restores_onto_another_mesh_shape_and_device_count(
    tmp_path: Path, second: dict
) -> None:
    """Step 20 written at members x data = 4 x 2 (dataset split), resumed at 1 x 8 or on one
    device, == 40 steps there."""
    first = _mesh(4, **{"parallel.shard_dataset": True, "train.steps": 40})
    train.run(small_config(**first), str(tmp_path / "run"))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "40")
    config_two = small_config(**{**first, "parallel.shard_dataset": False, **second})
    assert train.run(config_two, str(tmp_path / "run")).step == 40
    trainer = train.Trainer(config_two)
    with checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), keep=2) as ckpt:
        resumed = trainer.par.fetch(trainer.restore(ckpt).state.params)
    state, _ = trainer.train_chunk(trainer.init_state(), 40)
    fresh = trainer.par.fetch(state.params)
    worst = max(jax.tree.leaves(jax.tree.map(_relative_difference, resumed, fresh)))
    assert worst <= 1e-5


def test_members_spread_over_two_hosts_match_one_process(tmp_path: Path) -> None:
    """2 processes x 2 CPU devices at members x data = 2 x 2 (each host one row of members, the
    dataset split over 'data') log what one process with 4 devices logs."""
    sweep = ("--config.sweep.seed=0,1,2,3", "--config.parallel.member_shards=2")
    split = "--config.parallel.shard_dataset=True"
    cmd, env = main_command(tmp_path / "one", *sweep, devices=4)
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=300, capture_output=True)
    procs = start_processes(tmp_path / "two", lambda i: (*sweep, split))
    outputs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "members x data = 2 x 2" in outputs[0]
    one = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    two = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [(r["step"], r.get("member")) for r in one] == [
        (r["step"], r.get("member")) for r in two
    ]
    assert {r["member"] for r in two if "test/loss" in r} == {0, 1, 2, 3}
    for a, b in zip(one, two, strict=True):
        for key in ("train/loss", "test/loss", "test/accuracy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), key
