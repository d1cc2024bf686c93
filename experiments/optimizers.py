"""Adaptive optimizers: Kingma & Ba (2015), Adam, §6.2 Fig. 2 and §6.3 Fig. 3.

    python -m experiments.optimizers --preset=quick --workdir=/tmp/opt --data_dir=../shared/data/mnist

Each optimizer trains at every rate of a small grid; the rate with the lowest final validation
loss (`data.holdout` examples split off the training set) is the one compared. Parts:
- `mlp` (Fig. 2): MLP with 2 hidden layers of ReLUs and dropout, batch 128, on MNIST: SGD with
  Nesterov momentum, AdaGrad, RMSProp, AdaDelta and Adam.
- `cnn` (Fig. 3, paper preset, needs --cifar_dir): the c64-c64-c128-1000 CIFAR-10 net
  (`cnn_preset=adam2015`) with Adam, AdaGrad and SGD with Nesterov momentum.
Rule: reproduced when Adam's training cost over the last epoch (mean of the logged training losses,
then over seeds) is the lowest of the optimizers compared, below each other's by more than the
larger of the two standard deviations over seeds (a lead within the seeds' spread is a tie).
"""

import dataclasses

import ml_collections
import numpy as np

from dlresearch import ablation

GRIDS = {
    "nesterov": (0.01, 0.03, 0.1),
    "adagrad": (0.01, 0.03, 0.1),
    "rmsprop": (3e-4, 1e-3, 3e-3),
    "adadelta": (0.3, 1.0, 3.0),
    "adam": (3e-4, 1e-3, 3e-3),
}
NAMES = {
    "nesterov": "SGD Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSProp",
    "adadelta": "AdaDelta",
    "adam": "Adam",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    mlp_width: int
    mlp_epochs: int
    cnn_epochs: int = 0  # the cnn part is in the paper preset only


SIZES = {
    "test": Sizes(mlp_width=16, mlp_epochs=2),
    "quick": Sizes(mlp_width=100, mlp_epochs=6),
    "paper": Sizes(mlp_width=1_000, mlp_epochs=100, cnn_epochs=45),
}
# Training examples of each dataset, and how many of them are held out for validation.
TRAIN_SIZE = {"digits": 1_437, "mnist": 60_000, "cifar10": 50_000}
HOLDOUT = {"digits": 200, "mnist": 10_000, "cifar10": 5_000}


def _variants(names: tuple[str, ...]) -> tuple[ablation.Variant, ...]:
    return tuple(
        ablation.Variant(n, {"optim.name": n, "sweep.lr": GRIDS[n]}, NAMES[n]) for n in names
    )


def _epochs_config(dataset: dict, epochs: int, *overrides: dict) -> ml_collections.ConfigDict:
    """A config for `epochs` passes over the training split left after the hold-out."""
    holdout = HOLDOUT[dataset["data.name"]]
    steps = epochs * (TRAIN_SIZE[dataset["data.name"]] - holdout) // 128
    return ablation.make_config(
        dataset,
        {"data.holdout": holdout, "train.batch_size": 128, "model.activation": "relu"},
        *overrides,
        # About 20 training-cost points per epoch: the x-axis of the figure is epochs.
        ablation.cadence(steps, logs=20 * epochs, evals=2 * epochs),
    )


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    sizes = SIZES[preset]
    mlp = _epochs_config(
        dirs.mnist(),
        sizes.mlp_epochs,
        {"model.depth": 2, "model.width": sizes.mlp_width, "model.dropout": 0.5},
    )
    fewer = (
        ""
        if preset == "paper"
        else f" {sizes.mlp_width} instead of {SIZES['paper'].mlp_width:,} units per layer, and "
        f"{sizes.mlp_epochs} epochs instead of 200."
    )
    out = [
        ablation.Part(
            name="mlp",
            title=f"(a) MNIST MLP 2 x {sizes.mlp_width} with dropout (Fig. 2)",
            claim="On a multilayer ReLU net with dropout, Adam lowers the training cost faster "
            "than the other stochastic first-order methods (each at its best learning rate).",
            source="Kingma & Ba 2015, §6.2 and Fig. 2a",
            rule="at each optimizer's best rate of its grid (lowest mean final validation "
            "loss), reproduced if Adam's mean training cost over the last epoch is the lowest "
            "of the five, below each other's by more than the larger of the two standard "
            "deviations over seeds.",
            config=mlp,
            variants=_variants(tuple(GRIDS)),
            judge=judge,
            differences="Dropout 0.5 on the hidden layers (the paper does not give its rates); "
            "the learning-rate grids are three rates a factor ~3 apart around each method's "
            "usual default (the paper searched a dense grid); other hyperparameters at their "
            "defaults (momentum 0.9, Adam's betas 0.9/0.999)." + fewer,
        )
    ]
    if preset == "paper":
        cnn = _epochs_config(
            dirs.cifar10(),
            sizes.cnn_epochs,
            {
                "model.name": "cnn",
                "model.cnn_preset": "adam2015",
                "model.dropout": 0.5,
                "model.input_dropout": 0.2,
                "data.augment": "none",
            },
        )
        out.append(
            ablation.Part(
                name="cnn",
                title="(b) CIFAR-10 conv net c64-c64-c128-1000 (Fig. 3)",
                claim="On the CIFAR-10 conv net, Adam and SGD with Nesterov momentum lower the "
                "training cost much faster than AdaGrad; Adam is the fastest.",
                source="Kingma & Ba 2015, §6.3 and Fig. 3",
                rule="at each optimizer's best rate (lowest mean final validation loss), "
                "reproduced if Adam's mean training cost over the last epoch is the lowest of "
                "the three, below each other's by more than the larger of the two standard "
                "deviations over seeds.",
                config=cnn,
                variants=_variants(("nesterov", "adagrad", "adam")),
                judge=judge,
                differences="Per-channel standardisation instead of ZCA whitening; dropout 0.2 "
                "on the input and 0.5 on the features and the hidden layer; "
                f"{sizes.cnn_epochs} epochs.",
            )
        )
    return out


def _last_epoch_cost(group: ablation.Group) -> np.ndarray:
    """Per seed, the mean training loss logged over the last epoch (the figure's last point)."""
    run = group.run
    steps_per_epoch = run.num_train // run.config.train.batch_size
    out = []
    for m in group.members:
        steps, loss = run.series("train/loss", m)
        out.append(float(np.mean(loss[steps > steps[-1] - steps_per_epoch])))
    return np.asarray(out)


def judge(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    best = ablation.best_groups(runs, "lr", ablation.final_score("validation/loss"))
    costs = {name: _last_epoch_cost(g) for name, g in best.items()}
    mean = {name: float(np.mean(c)) for name, c in costs.items()}
    rows = list(best.values())
    plot = ablation.plot_curves(
        outdir,
        f"optimizers_{rows[0].run.part}_training_cost.png",
        rows,
        "train/loss",
        title="training cost at each optimizer's best rate",
        ylabel="training cost (cross-entropy, dropout on)",
        log_y=True,
        epochs=True,
    )
    table = ablation.summary_table(
        rows,
        extra={"last-epoch training cost": lambda g: ablation.mean_std(_last_epoch_cost(g), ".4f")},
    )
    grid = ablation.summary_table(ablation.groups_by(runs, "lr"))
    ranking = sorted(mean, key=mean.get)
    clear = all(ablation.clearly_below(costs["adam"], costs[o]) for o in costs if o != "adam")
    reason = "last-epoch training cost " + ", ".join(f"{NAMES[n]} {mean[n]:.4f}" for n in ranking)
    if ranking[0] == "adam" and not clear:
        reason += " (Adam's lead is within the seeds' spread)"
    return ablation.Findings(
        ablation.Verdict(ranking[0] == "adam" and clear, reason),
        ["At each optimizer's best rate:", "", table, "", "Every rate of the grids:", "", grid],
        [
            ablation.Plot(
                plot,
                "Training cost over epochs at each optimizer's best rate (log scale), "
                "mean ± std over seeds.",
            )
        ],
    )


EXPERIMENT = ablation.Experiment("optimizers", "Adaptive optimizers (Kingma & Ba 2015)", parts)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
