"""Data parallelism on 8 CPU devices: every mode matches one device on the same global batch."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import small_config
from processes import ROOT, finish, main_command, start_processes

from dlresearch import checkpoint, train, workdir
from dlresearch.errors import ConfigError
from dlresearch.metrics import read_jsonl

MNIST = ROOT.parent / "shared" / "data" / "mnist"
MODES = ("single", "shard_map", "pmap")


def _train(config, steps: int) -> dict:
    """Params after `steps` steps of a fresh state, as host numpy."""
    trainer = train.Trainer(config)
    state, _ = trainer.train_chunk(trainer.init_state(), steps)
    return trainer.par.fetch(state.params)


def _max_abs_diff(a: dict, b: dict) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def test_eight_devices_are_forced() -> None:
    assert jax.device_count() == 8


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_one_step_matches_single_device(mode: str) -> None:
    # Plain SGD: its step is proportional to the gradient, so a gradient 8x off (a misplaced
    # mean over devices) shows; Adam's first step is sign(gradient) * lr and would hide it.
    sgd = {"optim.name": "sgd", "optim.lr": 0.5}
    initial = jax.device_get(train.Trainer(small_config(**sgd)).init_state().params)
    reference = _train(small_config(**sgd), 1)
    params = _train(small_config(**sgd, **{"parallel.mode": mode}), 1)
    assert _max_abs_diff(params, reference) <= 1e-3 * _max_abs_diff(reference, initial)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_twenty_batchnorm_steps_match_single_device(mode: str) -> None:
    # Momentum SGD, not Adam: Adam rescales the ~1e-9 rounding noise of the Dense biases' gradients
    # (BatchNorm cancels them) to full-sized steps, which would compare noise, not the algorithm.
    bn = {
        "model.normalization": "batchnorm",
        "model.activation": "sigmoid",
        "optim.name": "momentum",
        "optim.lr": 0.1,
    }
    reference = _train(small_config(**bn), 20)
    params = _train(small_config(**bn, **{"parallel.mode": mode}), 20)
    assert _max_abs_diff(params, reference) <= 1e-5


def test_ghost_batchnorm_uses_per_device_statistics() -> None:
    bn = {
        "model.normalization": "batchnorm",
        "model.bn_sync": False,
        "train.batch_size": 64,
        "optim.name": "momentum",
        "optim.lr": 0.1,
    }
    single = _train(small_config(**bn), 5)
    shard_map = _train(small_config(**bn, **{"parallel.mode": "shard_map"}), 5)
    pmap = _train(small_config(**bn, **{"parallel.mode": "pmap"}), 5)
    # Batches of 8 per device normalise differently from one batch of 64; both modes agree.
    assert _max_abs_diff(shard_map, single) > 1e-3
    assert _max_abs_diff(shard_map, pmap) <= 1e-5


def test_batch_not_divisible_by_devices_names_both_numbers() -> None:
    with pytest.raises(
        ConfigError, match=r"train\.batch_size=36 is not divisible by the 8 devices"
    ):
        train.Trainer(small_config(**{"parallel.mode": "shard_map", "train.batch_size": 36}))


@pytest.mark.parametrize(("first", "second"), [("shard_map", "single"), ("single", "pmap")])
def test_checkpoint_restores_onto_another_device_count(
    tmp_path: Path, first: str, second: str
) -> None:
    """Resuming at step 20 of a run written on another device count == 40 steps on this one."""
    train.run(small_config(**{"parallel.mode": first}), str(tmp_path / "run"))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "40")
    config = small_config(**{"parallel.mode": second})
    trainer = train.Trainer(config)
    with checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), keep=2) as ckpt:
        state = trainer.restore(ckpt).state
    # Step 20, written on the other device count, placed on this mode's devices.
    assert int(trainer.par.fetch(state.step)[0]) == 20
    assert state.params["hidden_0"]["kernel"].devices() == set(trainer.par.mesh.devices.flat)
    assert trainer.par.num_devices == (1 if second == "single" else 8)
    assert train.run(config, str(tmp_path / "run")).step == 40
    with checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), keep=2) as ckpt:
        resumed = trainer.par.fetch(trainer.restore(ckpt).state.params)
    assert _max_abs_diff(resumed, _train(config, 40)) <= 1e-5


def test_two_processes_match_one_process_with_as_many_devices(tmp_path: Path) -> None:
    cmd, env = main_command(tmp_path / "one", devices=4)
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=300, capture_output=True)
    procs = start_processes(tmp_path / "two")
    outputs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    one = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    two = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        for key in ("train/loss", "test/loss", "test/accuracy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert (
        json.loads((tmp_path / "two" / "config.json").read_text())["parallel"]["num_processes"] == 2
    )


def test_a_refused_multi_host_run_exits_2_on_every_process(tmp_path: Path) -> None:
    """Process 0 finds the workdir locked; the other process learns it too (no hang at a barrier)."""
    with workdir.lock(str(tmp_path / "two")):
        procs = start_processes(tmp_path / "two")
        errors = finish(procs, timeout=180)
    assert [p.returncode for p in procs] == [2, 2], errors
    for error in errors:
        assert f"is in use by pid {os.getpid()}" in error and "Traceback" not in error
    assert os.listdir(tmp_path / "two") == []


def test_data_missing_on_one_host_exits_2_on_every_process(tmp_path: Path) -> None:
    """`data.dir` is relative: process 0's working directory holds MNIST, process 1's does not."""
    hosts = [tmp_path / "host0", tmp_path / "host1"]
    for host in hosts:
        host.mkdir()
    (hosts[0] / "mnist").symlink_to(MNIST)
    procs = start_processes(
        tmp_path / "two",
        lambda i: ("--config.data.name=mnist", "--config.data.dir=mnist"),
        cwd_of=lambda i: hosts[i],
    )
    errors = finish(procs, timeout=180)
    assert [p.returncode for p in procs] == [2, 2], errors
    assert "data.dir='mnist'" in errors[1] and "process 1: data.dir='mnist'" in errors[0]
    assert all("Traceback" not in e for e in errors)
    assert not (tmp_path / "two").exists()
