"""The test problems of the benchmark: a base config, a budget per preset, and a target.

A problem is what an `ablation.Comparison` declares besides its arms and claim, in the same
terms: `base` (config overrides: dataset, model, batch size), an `ablation.Budget` and an
`ablation.Target`; plus the validation split its tuning runs hold out. Adding one takes a few
lines:

    PROBLEMS.add("mnist_wide", Problem(
        "MNIST MLP 2 x 1,000",
        {"data.name": "mnist", "model.width": 1000, "train.batch_size": 128},
        budget({"test": 20, "quick": 600, "standard": 3_000}, epochs={"paper": 100}),
        Target(TEST_ACCURACY, 0.97), holdout=10_000))

The `quick` and `standard` budgets are sized for a 2-core CPU; `paper` is the published budget of
the problem's source (DeepOBS for the conv nets; CIFAR-10 wants a GPU).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from dlresearch import models
from dlresearch.ablation.comparison import Budget
from dlresearch.ablation.spec import PRESETS, Target, cadence, make_config
from dlresearch.metrics import eval_key
from dlresearch.registry import Registry

TEST_ACCURACY = eval_key("test", "accuracy")
# The flag of the command line that gives each dataset's directory ('': none needed).
DATA_FLAGS = {
    "digits": "",
    "mnist": "data_dir",
    "fashion_mnist": "fashion_dir",
    "cifar10": "cifar_dir",
}


def budget(steps: Mapping[str, int], *, epochs: Mapping[str, float] | None = None) -> Budget:
    """An `ablation.Budget` of the presets in `spec.PRESETS` among those given (a problem names
    every preset a project may have; `Budget` takes exactly the project's)."""
    return Budget(
        steps={p: n for p, n in steps.items() if p in PRESETS},
        epochs={p: n for p, n in (epochs or {}).items() if p in PRESETS},
    )


@dataclasses.dataclass(frozen=True)
class Problem:
    """One test problem (module docstring); `target` is reached by the evaluation runs."""

    title: str
    base: Mapping[str, Any]  # config overrides, "data.name" and "train.batch_size" among them
    budget: Budget
    target: Target
    holdout: int  # training examples held out as the tuning runs' validation split
    source: str = ""

    @property
    def dataset(self) -> str:
        return self.base["data.name"]

    def config(self, preset: str, data_dir: str) -> ml_collections.ConfigDict:
        """The base config of the problem at `preset`, reading its data from `data_dir`."""
        steps = self.budget.of(preset, make_config(self.base))
        return make_config(
            self.base, {"data.dir": data_dir}, cadence(steps, logs=50, evals=10, checkpoints=5)
        )


PROBLEMS: Registry[Problem] = Registry("problems")

# DeepOBS's 2c2d (Schneider et al. 2019): two 5x5 convs (32, 64 channels) each followed by a 2x2
# max-pool, a 1,024-unit hidden layer, then the output.
models.CNN_PRESETS.add("deepobs_2c2d", lambda config: models.CnnArch((32, 64), (1024,), 5, 2, 2))
# DeepOBS's 3c3d: three convs (64, 96, 128 channels) each followed by a 3x3 stride-2 max-pool,
# hidden layers of 512 and 256, then the output. Here every conv is 5x5 with SAME padding
# (DeepOBS: 5x5, 3x3, 3x3, the first two VALID).
models.CNN_PRESETS.add(
    "deepobs_3c3d", lambda config: models.CnnArch((64, 96, 128), (512, 256), 5, 3, 2)
)
MLP = {"model.name": "mlp", "model.depth": 2}

PROBLEMS.add(
    "digits_mlp",
    Problem(
        "scikit-learn digits MLP 2 x 32 (seconds; for tests and trying the command)",
        {"data.name": "digits", **MLP, "model.width": 32, "train.batch_size": 32},
        budget({"test": 20, "quick": 200, "standard": 1_000, "paper": 1_000}),
        Target(TEST_ACCURACY, 0.9),
        holdout=300,
    ),
)
PROBLEMS.add(
    "mnist_mlp",
    Problem(
        "MNIST MLP 2 x 100 ReLU",
        {"data.name": "mnist", **MLP, "model.width": 100, "train.batch_size": 128},
        budget({"test": 20, "quick": 600, "standard": 3_000}, epochs={"paper": 100}),
        # Reached within the quick budget by a tuned baseline (0.96 at 600 steps).
        Target(TEST_ACCURACY, 0.95),
        holdout=10_000,
    ),
)
CONV = {"model.name": "cnn", "data.augment": "none", "train.batch_size": 128}
PROBLEMS.add(
    "fmnist_2c2d",
    Problem(
        "Fashion-MNIST 2c2d conv net (DeepOBS)",
        {"data.name": "fashion_mnist", **CONV, "model.cnn_preset": "deepobs_2c2d"},
        budget({"test": 10, "quick": 300, "standard": 2_000}, epochs={"paper": 100}),
        Target(TEST_ACCURACY, 0.85),
        holdout=10_000,
        source="DeepOBS fmnist_2c2d: batch 128, 100 epochs",
    ),
)
PROBLEMS.add(
    "cifar10_3c3d",
    Problem(
        "CIFAR-10 3c3d conv net (DeepOBS)",
        {"data.name": "cifar10", **CONV, "model.cnn_preset": "deepobs_3c3d"},
        budget({"test": 5, "quick": 300, "standard": 2_000}, epochs={"paper": 100}),
        Target(TEST_ACCURACY, 0.6),
        holdout=5_000,
        source="DeepOBS cifar10_3c3d: batch 128, 100 epochs (on a GPU)",
    ),
)
