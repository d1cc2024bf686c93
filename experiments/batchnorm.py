"""Batch normalization: Ioffe & Szegedy (2015), §4.1 and Fig. 1.

    python -m experiments.batchnorm --preset=quick --workdir=/tmp/bn --data_dir=../shared/data/mnist

Parts (each part's `rule`, printed in its report, states the thresholds defined below):
- `fig1`: the paper's 784-100-100-100-10 sigmoid MLP with small Gaussian weights, batch 60, with and
  without BatchNorm: test accuracy over training, and the 15/50/85th percentiles of the input of one
  last-hidden-layer sigmoid (Fig. 1b-c). Rule: reproduced when the BatchNorm net's mean test
  accuracy is never behind the baseline's after an initial stretch of training, AND the median of
  its unit's input drifts less (drift = range of the median over training / final 15-85% spread).
- `deep`: a deep sigmoid MLP (Glorot init) that does not train without BatchNorm, each net at the
  best rate of a small grid. Rule: reproduced when the baseline's final test accuracy stays near
  chance and the BatchNorm net's is high.
"""

import dataclasses

import numpy as np

from dlresearch import ablation


@dataclasses.dataclass(frozen=True)
class Sizes:
    fig1_steps: int
    deep_steps: int
    deep_depth: int
    width: int
    batch: int
    deep_lrs: tuple[float, ...]  # the deep part's learning-rate grid


SIZES = {
    "test": Sizes(
        fig1_steps=60, deep_steps=40, deep_depth=6, width=16, batch=32, deep_lrs=(0.1, 1.0)
    ),
    "quick": Sizes(
        fig1_steps=5_000, deep_steps=1_500, deep_depth=20, width=100, batch=60, deep_lrs=(0.1, 1.0)
    ),
    "paper": Sizes(
        fig1_steps=50_000,
        deep_steps=5_000,
        deep_depth=20,
        width=100,
        batch=60,
        deep_lrs=(0.03, 0.1, 0.3, 1.0),
    ),
}
# fig1: the fraction of training after which the BatchNorm net must never be behind.
FIG1_AFTER = 0.1
# deep: the baseline's final test accuracy must stay below the first (chance: 10%), the BatchNorm
# net's exceed the second.
DEEP_BASELINE_BELOW = 0.2
DEEP_BATCHNORM_ABOVE = 0.9
# The paper states neither the learning rate nor the optimizer beyond SGD; 1.0 is the rate at which
# the baseline trains fastest in a 5,000-step grid of 0.25-4 (measured; BN is fast at all of them).
LEARNING_RATE = 1.0
VARIANTS = (
    ablation.Variant("baseline", {"model.normalization": "none"}, "without BatchNorm"),
    ablation.Variant("batchnorm", {"model.normalization": "batchnorm"}, "with BatchNorm"),
)


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    sizes = SIZES[preset]
    common = {
        **dirs.mnist(),
        "model.width": sizes.width,
        "model.activation": "sigmoid",
        "optim.name": "sgd",
        "train.batch_size": sizes.batch,
    }
    fig1 = ablation.make_config(
        common,
        {
            "model.depth": 3,
            "model.kernel_init": "small_normal",
            "model.init_std": 0.01,
            "optim.lr": LEARNING_RATE,
            "diagnostics.layer": -1,
            "diagnostics.unit": 0,
        },
        ablation.cadence(sizes.fig1_steps, logs=50, evals=25, diagnostics=25),
    )
    deep = ablation.make_config(
        common,
        {
            "model.depth": sizes.deep_depth,
            "model.kernel_init": "xavier_uniform",
            "sweep.lr": sizes.deep_lrs,
        },
        ablation.cadence(sizes.deep_steps, logs=30, evals=5),
    )
    fewer = (
        ""
        if preset == "paper"
        else f" This preset trains {sizes.fig1_steps:,} steps, not {SIZES['paper'].fig1_steps:,}."
    )
    return [
        ablation.Part(
            name="fig1",
            title="(a) Faster, steadier training of a sigmoid MLP (Fig. 1)",
            claim="With Batch Normalization the 3x100 sigmoid MLP reaches higher test accuracy "
            "faster, and the distribution of a sigmoid's input stays stable over training "
            "instead of drifting (internal covariate shift).",
            source="Ioffe & Szegedy 2015, §4.1 and Fig. 1",
            rule="reproduced if the BatchNorm net's mean test accuracy is >= the baseline's at "
            f"every evaluation after the first {FIG1_AFTER:.0%} of training, and the drift of its "
            "unit's median input (range of the median over training / final 85th-15th percentile "
            "spread, mean over seeds) is smaller than the baseline's.",
            config=fig1,
            variants=VARIANTS,
            judge=judge_fig1,
            differences="The paper gives no learning rate; we use plain SGD at "
            f"{LEARNING_RATE:g} for both nets and N(0, 0.01^2) weights (its 'small random "
            f"Gaussian values').{fewer}",
        ),
        ablation.Part(
            name="deep",
            title=f"(b) BatchNorm trains a {sizes.deep_depth}-layer sigmoid MLP that does not "
            "train without it",
            claim="Batch Normalization makes saturating nonlinearities trainable in deep "
            "networks, by keeping their inputs out of the saturated regime.",
            source="Ioffe & Szegedy 2015, §3.3",
            rule="at each net's best learning rate of the grid (lowest mean final training "
            f"loss), reproduced if the baseline's final test accuracy is below "
            f"{DEEP_BASELINE_BELOW:.0%} (chance: 10%) and the BatchNorm net's is above "
            f"{DEEP_BATCHNORM_ABOVE:.0%}, both as means over seeds.",
            config=deep,
            variants=VARIANTS,
            judge=judge_deep,
            differences="Not an experiment of the paper (its deep nets are Inception "
            f"ImageNet models): a direct test of the §3.3 argument, {sizes.deep_depth} sigmoid "
            "layers with Glorot (xavier_uniform) weights, plain SGD at each rate of "
            f"{', '.join(f'{lr:g}' for lr in sizes.deep_lrs)}.",
        ),
    ]


def _drift(group: ablation.Group) -> np.ndarray:
    """Per seed: range of the unit's median input over training / its final 15-85% spread."""
    out = []
    for m in group.members:
        _, p15 = group.run.series("diag/unit_p15", m)
        _, p50 = group.run.series("diag/unit_p50", m)
        _, p85 = group.run.series("diag/unit_p85", m)
        out.append((p50.max() - p50.min()) / (p85[-1] - p15[-1]))
    return np.asarray(out)


def _mean_accuracy(group: ablation.Group) -> tuple[np.ndarray, np.ndarray]:
    split = group.run.eval_split
    steps, values = zip(
        *(group.run.series(f"{split}/accuracy", m) for m in group.members), strict=True
    )
    return steps[0], np.mean(values, axis=0)


def judge_fig1(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    base, bn = by_name["baseline"], by_name["batchnorm"]
    steps, acc_base = _mean_accuracy(base)
    _, acc_bn = _mean_accuracy(bn)
    late = steps >= FIG1_AFTER * base.run.config.train.steps
    ahead = bool(np.all(acc_bn[late] >= acc_base[late]))
    drift_base, drift_bn = _drift(base).mean(), _drift(bn).mean()
    steady = drift_bn < drift_base
    split = base.run.eval_split
    plots = [
        ablation.Plot(
            ablation.plot_curves(
                outdir,
                "batchnorm_fig1a_accuracy.png",
                [base, bn],
                f"{split}/accuracy",
                title="(a) test accuracy",
                ylabel=f"{split} accuracy",
            ),
            f"Fig. 1a: {split} accuracy of the 3x100 sigmoid MLP, mean ± std over seeds.",
        ),
        ablation.Plot(
            ablation.plot_percentiles(
                outdir,
                "batchnorm_fig1bc_percentiles.png",
                [base, bn],
                title="input of one last-hidden-layer sigmoid: 15th, 50th, 85th percentiles",
            ),
            "Fig. 1b-c: the distribution of one sigmoid's input over training, first seed.",
        ),
    ]
    table = ablation.summary_table(
        [base, bn],
        extra={"median drift": lambda g: ablation.mean_std(_drift(g), ".2f")},
    )
    behind = int(np.sum(acc_bn[late] < acc_base[late]))
    reason = (
        f"final {split} accuracy {acc_bn[-1]:.4f} with BatchNorm vs {acc_base[-1]:.4f} without, "
        f"BatchNorm behind at {behind} of {int(late.sum())} evaluations after the first "
        f"{FIG1_AFTER:.0%}; "
        f"median drift {drift_bn:.2f} with vs {drift_base:.2f} without"
    )
    return ablation.Findings(ablation.Verdict(ahead and steady, reason), [table], plots)


def judge_deep(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    best = ablation.best_groups(runs, "lr", ablation.final_score("train/loss"))
    base, bn = best["baseline"], best["batchnorm"]
    split = base.run.eval_split
    acc_base = float(np.nanmean(base.final(f"{split}/accuracy")))
    acc_bn = float(np.nanmean(bn.final(f"{split}/accuracy")))
    depth = base.run.config.model.depth
    plot = ablation.plot_curves(
        outdir,
        "batchnorm_deep_loss.png",
        [base, bn],
        "train/loss",
        title=f"{depth}-layer sigmoid MLP",
        ylabel="training loss",
        log_y=True,
    )
    reason = (
        f"{depth}-layer sigmoid MLP: final {split} accuracy {acc_bn:.4f} with BatchNorm vs "
        f"{acc_base:.4f} without"
    )
    return ablation.Findings(
        ablation.Verdict(acc_base < DEEP_BASELINE_BELOW and acc_bn > DEEP_BATCHNORM_ABOVE, reason),
        [ablation.summary_table(ablation.groups_by(runs, "lr"))],
        [
            ablation.Plot(
                plot, f"Training loss of the {depth}-layer sigmoid MLP, mean ± std over seeds."
            )
        ],
    )


EXPERIMENT = ablation.Experiment("batchnorm", "Batch normalization (Ioffe & Szegedy 2015)", parts)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
