"""Your own model and loss on the project's loop: `train.run(config, workdir, model=, loss=)`, and
every run of an `ablation.Comparison` that declares them."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_config

from dlresearch import ablation, checkpoint, data, program, train
from dlresearch.ablation import runner, spec
from dlresearch.errors import ConfigError
from dlresearch.metrics import member_records, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SWEEP = {"sweep.seed": (0, 1), "parallel.mode": "shard_map", "model.width": 24}


class Tiny(nn.Module):
    """Not one of `models`: a dense layer, dropout, and the logits."""

    num_classes: int
    width: int

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        x = nn.relu(nn.Dense(self.width)(images.reshape(images.shape[0], -1)))
        x = nn.Dropout(0.3, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def tiny(model_config, num_classes: int, *, axis_name: str | None, dtype) -> nn.Module:
    return Tiny(num_classes, width=model_config.width)


def smoothed(logits: jax.Array, labels: jax.Array) -> jax.Array:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), 0.2)
    return optax.softmax_cross_entropy(logits, targets)


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]


def _restored(workdir: Path) -> tuple[train.Trainer, program.TrainState]:
    trainer = train.Trainer(small_config(**SWEEP), model=tiny, loss=smoothed)
    with checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=2) as ckpt:
        return trainer, trainer.restore(ckpt).state


def test_own_model_and_loss_train_a_sweep_that_resumes_exactly(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    result = train.run(small_config(**SWEEP), str(full), model=tiny, loss=smoothed)
    assert result.step == 40 and len(result.final) == 2
    # An interruption after step 20's checkpoint: the later one gone, the metrics ahead of it.
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "40")
    assert train.run(small_config(**SWEEP), str(resumed), model=tiny, loss=smoothed).step == 40
    assert _without_timing(read_jsonl(resumed / "metrics.jsonl")) == _without_timing(
        read_jsonl(full / "metrics.jsonl")
    )
    trainer, state = _restored(full)
    params = trainer.par.fetch(state.params)
    jax.tree.map(
        np.testing.assert_array_equal, params, trainer.par.fetch(_restored(resumed)[1].params)
    )
    # The module trained is Tiny (two dense layers of its own names), one per seed, and they differ.
    assert sorted(params) == ["Dense_0", "Dense_1"]
    assert params["Dense_0"]["kernel"].shape == (2, 64, 24)
    assert not np.array_equal(params["Dense_0"]["kernel"][0], params["Dense_0"]["kernel"][1])
    # The logged test loss is the injected loss of the final state, not cross-entropy.
    dataset = trainer.dataset
    images = data.normalize(jnp.asarray(dataset.test_images), dataset.mean, dataset.std)
    for member, records in enumerate(member_records(str(full / "metrics.jsonl"), 2)):
        logged = [r["test/loss"] for r in records if "test/loss" in r][-1]
        member_params = jax.tree.map(lambda p, m=member: p[m], params)
        logits = Tiny(10, 24).apply({"params": member_params}, images, train=False)
        labels = jnp.asarray(dataset.test_labels, jnp.int32)
        np.testing.assert_allclose(logged, float(smoothed(logits, labels).mean()), rtol=1e-5)
        assert abs(logged - float(program.cross_entropy(logits, labels).mean())) > 1e-3


def _readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    head = re.search(rf"^#+ {heading}$", readme, re.M)
    assert head, f"no heading {heading!r}"
    block = re.compile(r"^```python\n(.*?)^```", re.M | re.S).search(readme, head.end())
    assert block
    return block.group(1)


def test_the_readme_example_of_an_own_model_and_loss_runs(tmp_path: Path) -> None:
    script = tmp_path / "my_model.py"
    script.write_text(_readme_block("Your own model and loss"))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "runs" / "my_model" / "metrics.jsonl")
    assert {r["member"] for r in records if "member" in r} == {0, 1}
    assert any("test/accuracy" in r for r in records)


def test_config_validates_without_the_models_module() -> None:
    """The model's names are checked where the model is built (`train.check`), not by config."""
    code = (
        "import sys; from dlresearch import config; config.validate(config.base_config()); "
        "assert 'dlresearch.models' not in sys.modules, 'models imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with pytest.raises(ConfigError, match=r"^model\.activation='relu6' is not known; allowed"):
        train.check(small_config(**{"model.activation": "relu6"}))


def test_the_checks_of_a_run_are_those_of_its_own_model() -> None:
    """Diagnostics read the layers a model sows: an own model that sows none is refused with one
    line, before any data is loaded; a bad name of the config's model does not concern it."""
    config = small_config(**{"diagnostics.every_steps": 10})
    with pytest.raises(ConfigError, match=r"^diagnostics\.layer=-1 is out of range: .* 0 hidden"):
        train.check(config, model=tiny)
    train.check(small_config(**{"diagnostics.every_steps": 10}))  # the config's MLP sows its layers
    train.check(small_config(**{"model.name": "transformer"}), model=tiny)


class Silent(nn.Module):
    """A dense layer's logits times zero: a uniform prediction, whatever it trains."""

    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        return 0.0 * nn.Dense(self.num_classes)(images.reshape(images.shape[0], -1))


def test_a_comparison_trains_every_run_with_its_own_model_and_loss(tmp_path: Path) -> None:
    """Each arm's tuning and evaluation runs: the injected loss of the injected model's uniform
    logits is 100 + log(10) at every step (the config's MLP and cross-entropy give neither)."""
    widths = []

    def silent(model_config, num_classes: int, *, axis_name: str | None, dtype) -> nn.Module:
        widths.append(model_config.width)
        return Silent(num_classes)

    def offset(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return program.cross_entropy(logits, labels) + 100.0

    comparison = ablation.Comparison(
        name="own",
        title="Own model",
        claim="a claim",
        source="none",
        base={"data.name": "digits", "model.width": 16, "train.batch_size": 32},
        arms=(ablation.Variant("a"), ablation.Variant("b", {"model.width": 8})),
        budget=ablation.Budget(steps=dict.fromkeys(spec.PRESETS, 20)),
        measure=ablation.test_error(),
        direction="lower",
        tuning=ablation.Tuning(
            grid=ablation.log_grid(0.01, 1.0),
            score=ablation.test_error().score,
            metric="held-out error",
            extensions=0,
        ),
        model=silent,
        loss=offset,
    )
    runner.run_experiment(
        comparison.experiment(),
        preset="test",
        workdir=str(tmp_path),
        seeds=(0, 1),
        overrides={"parallel.mode": "single"},
        log=lambda line: None,
    )
    assert set(widths) == {16, 8}  # the builder gets each arm's model section
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.glob("**/metrics.jsonl"))
    assert files == [
        f"{kind}/own/{arm}/metrics.jsonl" for kind in ("runs", "tuning") for arm in "ab"
    ]
    losses = [
        r[key]
        for f in files
        for r in read_jsonl(tmp_path / f)
        for key in ("train/loss", "test/loss", "validation/loss")
        if key in r
    ]
    assert len(losses) > 8
    np.testing.assert_allclose(losses, 100 + np.log(10), rtol=1e-5)
