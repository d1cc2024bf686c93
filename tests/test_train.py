"""The training core: a run writes its outputs, resumes exactly, and is deterministic."""

import json
import shutil
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_config
from tensorboardX.proto.event_pb2 import Event, SessionLog

from dlresearch import checkpoint, data, metrics, models, pipeline, program, train
from dlresearch.errors import ConfigError
from dlresearch.metrics import MetricWriter, read_jsonl


def _final_params(workdir: Path) -> dict:
    """The params of the newest checkpoint in `workdir`, as host numpy."""
    config = small_config()
    ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=config.checkpoint.keep)
    state = train.Trainer(config).restore(ckpt).state
    ckpt.close()
    return jax.device_get(state.params)


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]


def _tensorboard_scalars(logdir: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar TensorBoard shows: event files in the order written, a
    session START at step s hiding what earlier files logged at steps >= s (a resumed run's purge)."""
    scalars = []
    for path in sorted(logdir.iterdir()):
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecord: length, its crc, the record, its crc
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + length])
            i += 16 + length
            if event.session_log.status == SessionLog.START:
                scalars = [s for s in scalars if s[1] < event.step]
            scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return [s for s in scalars if s[0] != "examples_per_sec"]


def test_run_writes_config_metrics_and_checkpoints(tmp_path: Path) -> None:
    result = train.run(small_config(), str(tmp_path))
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 32
    train_lines = [r for r in records if "train/loss" in r]
    eval_lines = [r for r in records if "test/accuracy" in r]
    assert [r["step"] for r in train_lines] == [10, 20, 30, 40]
    assert [r["step"] for r in eval_lines] == [20, 40]
    for key in ("train/accuracy", "lr", "grad_norm", "examples_per_sec"):
        assert key in train_lines[-1]
    assert isinstance(train_lines[0]["step"], int)
    assert train_lines[-1]["train/loss"] < train_lines[0]["train/loss"]
    assert eval_lines[-1]["test/accuracy"] > 0.5
    assert result.final[0]["test/accuracy"] == eval_lines[-1]["test/accuracy"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "20",
        "40",
    ]
    assert list((tmp_path / "tensorboard").iterdir())


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train.run(small_config(), str(full))
    # The state of an interruption after step 20's checkpoint: later checkpoint gone, metrics ahead.
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "40")
    result = train.run(small_config(), str(resumed))
    assert result.step == 40
    assert _without_timing(read_jsonl(resumed / "metrics.jsonl")) == _without_timing(
        read_jsonl(full / "metrics.jsonl")
    )
    a, b = _final_params(full), _final_params(resumed)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # TensorBoard shows each step once: the resumed run hid what it recomputed.
    scalars = _tensorboard_scalars(resumed / "tensorboard")
    assert len({s[:2] for s in scalars}) == len(scalars)
    assert sorted(scalars) == sorted(_tensorboard_scalars(full / "tensorboard"))


def test_same_config_gives_identical_metrics(tmp_path: Path) -> None:
    train.run(small_config(), str(tmp_path / "a"))
    train.run(small_config(), str(tmp_path / "b"))
    assert _without_timing(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == _without_timing(
        read_jsonl(tmp_path / "b" / "metrics.jsonl")
    )


def test_different_config_on_used_workdir_is_refused(tmp_path: Path) -> None:
    train.run(small_config(), str(tmp_path))
    with pytest.raises(ConfigError, match=r"model\.width: 32 -> 16"):
        train.run(small_config(**{"model.width": 16}), str(tmp_path))
    train.run(small_config(**{"model.width": 16}), str(tmp_path), overwrite=True)
    assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 16


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.name": "cnn", "model.channels": (8, 8), "model.dense": (16,)},
        {"model.name": "resnet_cifar", "model.depth": 8, "dtype": "bfloat16"},
        {"model.name": "mlp", "model.dropout": 0.5, "model.normalization": "layernorm"},
    ],
    ids=["cnn", "resnet_cifar-bfloat16", "mlp-dropout-layernorm"],
)
def test_every_model_trains_through_the_trainer(overrides: dict) -> None:
    trainer = train.Trainer(small_config(**overrides))
    state, metrics = trainer.train_chunk(trainer.init_state(), 3)
    assert np.all(np.isfinite(trainer.par.fetch(metrics)["train/loss"]))
    params = trainer.par.fetch(state.params)
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
    assert np.isfinite(trainer.evaluate(state)["loss"]).all()


@pytest.mark.parametrize("mode", ["single", "shard_map"])
def test_evaluation_with_padding_equals_one_unpadded_batch(mode: str) -> None:
    # 7 x 8 devices does not divide the digits test split: the padded examples must not count.
    padded = train.Trainer(small_config(**{"eval.batch_size": 7, "parallel.mode": mode}))
    assert len(padded.dataset.test_labels) % (7 * padded.par.num_devices)
    whole = train.Trainer(small_config(**{"eval.batch_size": len(padded.dataset.test_labels)}))
    assert float(np.asarray(padded.arrays.eval.mask).sum()) == len(padded.dataset.test_labels)
    a = padded.evaluate(padded.init_state())
    b = whole.evaluate(whole.init_state())
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_array_equal(a["accuracy"], b["accuracy"])


def test_evaluation_log_line_prints_numbers_not_a_list() -> None:
    names = ["lr=0.1", "lr=1", "lr=10"]
    assert metrics.across_members([0.99171], names[:1], higher_is_better=True) == "0.9917"
    # A sweep: the best and the worst member by name; a diverged (nan) member is the worst.
    assert (
        metrics.across_members([0.9, 1.0, float("nan")], names, higher_is_better=True)
        == "best 1.0000 (lr=1), worst nan (lr=10)"
    )
    assert (
        metrics.across_members([0.5, 0.2, 0.3], names, higher_is_better=False)
        == "best 0.2000 (lr=1), worst 0.5000 (lr=0.1)"
    )


def test_a_resumed_run_never_reuses_an_event_file(tmp_path: Path) -> None:
    # tensorboardX names event files by the second and host: a run resumed within the same second
    # as its predecessor used to write into (and clobber) the same file.
    for resume_step in (0, 20):
        with MetricWriter(str(tmp_path), resume_step=resume_step) as writer:
            writer.write(resume_step + 1, {"train/loss": 1.0})
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2


TRAIN_EVAL_MODES = [
    {"parallel.mode": "single"},
    {"parallel.mode": "shard_map"},
    {"parallel.mode": "pmap"},
    {
        "parallel.mode": "shard_map",
        "parallel.shard_dataset": True,
        "parallel.member_shards": 2,
        "sweep.seed": (0, 1),
    },
]


@pytest.mark.parametrize(
    "overrides", TRAIN_EVAL_MODES, ids=["single", "shard_map", "pmap", "sharded-members"]
)
def test_train_eval_is_eval_mode_on_a_fixed_training_subset(overrides: dict) -> None:
    """Dropout off and BatchNorm's running averages, on the subset `train_eval_subset` names."""
    config = small_config(
        **{
            "model.dropout": 0.5,
            "model.normalization": "batchnorm",
            "eval.train_examples": 500,
            **overrides,
        }
    )
    trainer = train.Trainer(config)
    state, _ = trainer.train_chunk(trainer.init_state(), 5)
    results = trainer.evaluate(state, "train_eval")
    dataset = trainer.dataset
    subset = pipeline.train_eval_subset(len(dataset.train_labels), 500)
    assert len(set(subset.tolist())) == 500
    images = data.normalize(jnp.asarray(dataset.train_images[subset]), dataset.mean, dataset.std)
    labels = jnp.asarray(dataset.train_labels[subset], jnp.int32)
    model = models.build(config.model, dataset.num_classes)
    params, batch_stats = trainer.par.fetch((state.params, state.batch_stats))
    for member in range(len(trainer.members)):
        variables = jax.tree.map(
            lambda x, m=member: x[m], {"params": params, "batch_stats": batch_stats}
        )
        logits = model.apply(variables, images, train=False)
        np.testing.assert_allclose(
            results["loss"][member], program.cross_entropy(logits, labels).mean(), rtol=1e-4
        )
        np.testing.assert_allclose(
            results["accuracy"][member], jnp.mean(jnp.argmax(logits, -1) == labels), atol=1e-6
        )


def test_train_eval_is_logged_beside_the_evaluation_split(tmp_path: Path) -> None:
    train.run(small_config(**{"eval.train_examples": 100}), str(tmp_path / "on"))
    records = read_jsonl(tmp_path / "on" / "metrics.jsonl")
    evaluated = [r for r in records if "test/accuracy" in r]
    assert [r["step"] for r in evaluated] == [20, 40]
    assert all({"train_eval/accuracy", "train_eval/loss"} <= set(r) for r in evaluated)
    train.run(small_config(**{"eval.train_examples": 0}), str(tmp_path / "off"))
    assert not any("train_eval/loss" in r for r in read_jsonl(tmp_path / "off" / "metrics.jsonl"))


def test_train_eval_subset_is_spread_and_bounded_by_the_training_split() -> None:
    np.testing.assert_array_equal(pipeline.train_eval_subset(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(pipeline.train_eval_subset(3, 10), [0, 1, 2])
    assert len(pipeline.train_eval_subset(10, 0)) == 0
    with pytest.raises(ConfigError, match=r"^eval\.train_examples=-1 is not valid"):
        train.Trainer(small_config(**{"eval.train_examples": -1}))
