"""The benchmarks' harness: datasets read once per process, the benchmark configs, and timing of
the training system (`train.Trainer`, chunked, fetched and evaluated as `train.run` does)."""

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from dlresearch import data, train
from dlresearch.config import base_config
from dlresearch.metrics import TRAIN_LOSS

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


# -- datasets, read once per process -------------------------------------------------------------
@functools.cache
def read(name: str, directory: str) -> data.Splits:
    """The splits of the registered dataset `name`, read from `directory` once per process."""
    return data.DATASETS.get(name)(ml_collections.ConfigDict({"name": name, "dir": directory}))


@functools.cache
def synthetic_cifar10() -> data.Splits:
    """Uniform random pixels and labels in CIFAR-10's shapes (50,000 + 10,000 32x32x3 images)."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, 32, 32, 3), np.uint8), rng.integers(0, 10, n)

    return data.Splits(*split(50_000), *split(10_000), num_classes=10, augment=True)


# Benchmark-only data.name values. Each Trainer reads its dataset; these return splits read once,
# so that K sequential runs are not charged K file reads that have nothing to do with training.
for _name in ("mnist", "digits"):
    data.DATASETS.add(f"cached_{_name}", lambda config, name=_name: read(name, config.dir))
data.DATASETS.add("synthetic_cifar10", lambda config: synthetic_cifar10())


# -- configs ---------------------------------------------------------------------------------------
def bn_mlp_config(data_dir: str) -> ml_collections.ConfigDict:
    """The BatchNorm paper's MNIST network (Ioffe & Szegedy 2015, §4.1), without BatchNorm.

    3 hidden layers of 100 sigmoid units, N(0, 0.01^2) weights, SGD on batches of 60. The paper
    does not give the learning rate; 1.0 is the one experiments/batchnorm.py measured as best for
    the baseline. An empty `data_dir` means the embedded digits.
    """
    config = base_config()
    config.data.name = "cached_mnist" if data_dir else "cached_digits"
    config.data.dir = data_dir
    config.model.name = "mlp"
    config.model.depth = 3
    config.model.width = 100
    config.model.activation = "sigmoid"
    config.model.kernel_init = "small_normal"
    config.model.init_std = 0.01
    config.optim.name = "sgd"
    config.optim.lr = 1.0
    config.train.batch_size = 60
    # One device: the workload is one small batch; a mesh of several would only split it.
    config.parallel.mode = "single"
    return config


def resnet20_config(dtype: str, batch_size: int) -> ml_collections.ConfigDict:
    """ResNet-20 as in He et al. (2016) §4.2: BatchNorm, ReLU, momentum SGD, crop+flip augmentation."""
    config = base_config()
    config.data.name = "synthetic_cifar10"
    config.model.name = "resnet_cifar"
    config.model.depth = 20
    config.model.normalization = "batchnorm"
    config.optim.name = "momentum"
    config.optim.lr = 0.1
    config.optim.weight_decay = 1e-4
    config.train.batch_size = batch_size
    config.parallel.mode = "single"
    config.dtype = dtype
    return config


# -- timing the training system --------------------------------------------------------------------
@dataclasses.dataclass
class Timing:
    """Where the wall time of one or more runs went, summed over the runs."""

    setup_s: float = 0.0  # Trainer construction: config checks, dataset statistics, data to device
    init_s: float = 0.0  # state initialisation, compiled on first use
    first_chunk_s: float = 0.0  # the first chunk of each run: compilation (if not cached) + steps
    steady_s: float = 0.0  # every later chunk: compiled steps only
    eval_s: float = 0.0  # evaluations, compilation of the first included
    steady_model_steps: int = 0  # member-steps done in steady_s

    @property
    def total_s(self) -> float:
        return self.setup_s + self.init_s + self.first_chunk_s + self.steady_s + self.eval_s

    def to_json(self) -> dict[str, float]:
        values = {k: round(v, 4) for k, v in dataclasses.asdict(self).items()}
        values["total_s"] = round(self.total_s, 4)
        values["steady_model_steps_per_sec"] = round(
            self.steady_model_steps / self.steady_s if self.steady_s else 0.0, 1
        )
        training_s = self.first_chunk_s + self.steady_s
        values["eval_fraction"] = round(self.eval_s / training_s if training_s else 0.0, 4)
        return values


def timed(timing: Timing, field: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    setattr(timing, field, getattr(timing, field) + time.perf_counter() - start)
    return result


def preload(config: ml_collections.ConfigDict, chunk: int) -> None:
    """Chunks of `chunk` steps and no other boundaries (the benchmarks evaluate on their own); reads
    the (cached) dataset of `config` now, before anything is timed."""
    config.train.steps_per_call = config.train.log_every_steps = chunk
    config.eval.every_steps = config.checkpoint.every_steps = 0
    data.DATASETS.get(config.data.name)(config.data)


def start(config: ml_collections.ConfigDict, timing: Timing) -> tuple[train.Trainer, Any]:
    """A Trainer and its initial state, as `train.run` makes them without a checkpoint."""
    trainer = timed(timing, "setup_s", lambda: train.Trainer(config))
    state = timed(timing, "init_s", lambda: jax.block_until_ready(trainer.init_state()))
    return trainer, state


def timed_chunks(
    trainer: train.Trainer, state: Any, chunk: int, count: int
) -> tuple[Any, list[np.ndarray], float]:
    """`count` chunks of `chunk` steps (`train.steps_per_call` = `chunk`), each one's metrics
    fetched as the run loop does. Returns the state, each chunk's train losses and the wall time."""
    start = time.perf_counter()
    step = int(trainer.par.fetch(state.step)[0])
    losses = []
    for _, state, metrics in trainer.chunks(state, until=step + chunk * count):  # noqa: B007, B020
        losses.append(metrics[TRAIN_LOSS])
    return state, losses, time.perf_counter() - start


def run_timed(
    trainer: train.Trainer, state: Any, steps: int, timing: Timing, eval_every: int = 0
) -> tuple[Any, list[tuple[int, np.ndarray]]]:
    """`steps` steps in the chunks of `train.run` (`Trainer.chunks`), without its files, an
    evaluation every `eval_every` steps and at the end. Returns the state and
    (step, test accuracy per member) of each evaluation."""
    curve = []
    previous, start = 0, time.perf_counter()
    for step, state, _ in trainer.chunks(state, until=steps):  # noqa: B020
        seconds = time.perf_counter() - start
        if previous:
            timing.steady_s += seconds
            timing.steady_model_steps += (step - previous) * len(trainer.members)
        else:
            timing.first_chunk_s += seconds
        previous = step
        if step == steps or (eval_every and step % eval_every == 0):
            accuracy = timed(
                timing, "eval_s", lambda state=state: trainer.evaluate(state)["accuracy"]
            )
            curve.append((step, accuracy))
        start = time.perf_counter()
    return state, curve


def dataset(data_dir: str) -> dict[str, str]:
    """Which dataset the MLP benchmarks used, for the JSON."""
    if data_dir:
        return {"dataset": "mnist", "data_dir": data_dir}
    return {
        "dataset": "digits",
        "note": f"no MNIST at {DEFAULT_MNIST} and no --data_dir: the embedded 8x8 scikit-learn "
        "digits (1437 train / 360 test), so the accuracies are not comparable with the paper's",
    }
