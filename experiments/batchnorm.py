"""Batch normalization: Ioffe & Szegedy (2015), §4.1 and Fig. 1.

    python -m experiments.batchnorm --preset=quick --workdir=/tmp/bn --data_dir=../shared/data/mnist

Parts:
- `fig1`: the paper's 784-100-100-100-10 sigmoid MLP with small Gaussian weights, batch 60, with and
  without BatchNorm: test accuracy over training, and the 15/50/85th percentiles of the input of one
  last-hidden-layer sigmoid (Fig. 1b-c). Rule: reproduced when the BatchNorm net's mean test accuracy
  is at least the baseline's at every evaluation after the first 10% of training, AND the median of
  its unit's input drifts less (drift = range of the median over training / final 15-85% spread).
- `deep`: a deep sigmoid MLP (Glorot init) that does not train without BatchNorm, each net at the
  best rate of a small grid. Rule: reproduced when the baseline's final test accuracy stays below
  20% (chance is 10%) and the BatchNorm net's exceeds 90%.
"""

import numpy as np

from dlresearch import ablation

# preset -> (fig1 steps, deep steps, deep depth, width, batch, deep learning-rate grid)
SIZES = {
    "test": (60, 40, 6, 16, 32, (0.1, 1.0)),
    "quick": (5_000, 1_500, 20, 100, 60, (0.1, 1.0)),
    "paper": (50_000, 5_000, 20, 100, 60, (0.03, 0.1, 0.3, 1.0)),
}
# The paper states neither the learning rate nor the optimizer beyond SGD; 1.0 is the rate at which
# the baseline trains fastest in a 5,000-step grid of 0.25-4 (measured; BN is fast at all of them).
LEARNING_RATE = 1.0
VARIANTS = (
    ablation.Variant("baseline", {"model.normalization": "none"}, "without BatchNorm"),
    ablation.Variant("batchnorm", {"model.normalization": "batchnorm"}, "with BatchNorm"),
)


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    steps, deep_steps, deep_depth, width, batch, deep_lrs = SIZES[preset]
    common = {
        **dirs.mnist(),
        "model.width": width,
        "model.activation": "sigmoid",
        "optim.name": "sgd",
        "train.batch_size": batch,
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
        ablation.cadence(steps, logs=50, evals=25, diagnostics=25),
    )
    deep = ablation.make_config(
        common,
        {"model.depth": deep_depth, "model.kernel_init": "xavier_uniform", "sweep.lr": deep_lrs},
        ablation.cadence(deep_steps, logs=30, evals=5),
    )
    fewer = "" if preset == "paper" else f" This preset trains {steps:,} steps, not 50,000."
    return [
        ablation.Part(
            name="fig1",
            title="(a) Faster, steadier training of a sigmoid MLP (Fig. 1)",
            claim="With Batch Normalization the 3x100 sigmoid MLP reaches higher test accuracy "
            "faster, and the distribution of a sigmoid's input stays stable over training "
            "instead of drifting (internal covariate shift).",
            source="Ioffe & Szegedy 2015, §4.1 and Fig. 1",
            rule="reproduced if the BatchNorm net's mean test accuracy is >= the baseline's at "
            "every evaluation after the first 10% of training, and the drift of its unit's median "
            "input (range of the median over training / final 85th-15th percentile spread, mean "
            "over seeds) is smaller than the baseline's.",
            config=fig1,
            variants=VARIANTS,
            judge=judge_fig1,
            differences="The paper gives no learning rate; we use plain SGD at "
            f"{LEARNING_RATE:g} for both nets and N(0, 0.01^2) weights (its 'small random "
            f"Gaussian values').{fewer}",
        ),
        ablation.Part(
            name="deep",
            title=f"(b) BatchNorm trains a {deep_depth}-layer sigmoid MLP that does not train "
            "without it",
            claim="Batch Normalization makes saturating nonlinearities trainable in deep "
            "networks, by keeping their inputs out of the saturated regime.",
            source="Ioffe & Szegedy 2015, §3.3",
            rule="at each net's best learning rate of the grid (lowest mean final training "
            "loss), reproduced if the baseline's final test accuracy is below 20% (chance: 10%) "
            "and the BatchNorm net's is above 90%, both as means over seeds.",
            config=deep,
            variants=VARIANTS,
            judge=judge_deep,
            differences="Not an experiment of the paper (its deep nets are Inception "
            f"ImageNet models): a direct test of the §3.3 argument, {deep_depth} sigmoid layers "
            "with Glorot (xavier_uniform) weights, plain SGD at each rate of "
            f"{', '.join(f'{lr:g}' for lr in deep_lrs)}.",
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
    late = steps >= 0.1 * base.run.config.train.steps
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
        f"BatchNorm behind at {behind} of {int(late.sum())} evaluations after the first 10%; "
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
        ablation.Verdict(acc_base < 0.2 and acc_bn > 0.9, reason),
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
