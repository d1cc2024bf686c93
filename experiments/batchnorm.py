"""Batch normalization: Ioffe & Szegedy (2015), §4.1 and Fig. 1.

    python -m experiments.batchnorm --preset=quick --workdir=/tmp/bn --data_dir=../shared/data/mnist

Both nets of each part get the same learning-rate tuning (`FIG1_GRID`, `DEEP_GRID`: every rate on a
tuning seed with a held-out validation split, the lowest final validation error selected), then
train the evaluation seeds at their selected rate. Parts (each part's `rule`, printed in its report,
states the thresholds defined below):
- `fig1`: the paper's 784-100-100-100-10 sigmoid MLP with small Gaussian weights, batch 60, with and
  without BatchNorm: test accuracy over training, and the 15/50/85th percentiles of the input of
  every last-hidden-layer sigmoid (Fig. 1b-c shows one). Rule: reproduced when both (1) the test
  error without BatchNorm minus with it (paired over seeds, with test-set noise) and (2) the ratio
  of the median-input drift without / with BatchNorm (drift = the mean over the layer's units of
  the range of a unit's median input over training / its final 15-85% spread) have 95% intervals
  above no effect; not reproduced when either is significantly the other way.
- `deep`: a deep sigmoid MLP (Glorot init). Rule: reproduced when the test error without
  BatchNorm minus with it has a 95% interval above 0. A sanity check reports whether the baseline
  trains above chance at its selected rate (otherwise the comparison is with a net that did not
  train at any rate of the grid).
"""

import dataclasses

import numpy as np

from dlresearch import ablation
from dlresearch.ablation import stats


@dataclasses.dataclass(frozen=True)
class Sizes:
    fig1_steps: int
    deep_steps: int
    deep_depth: int
    width: int
    batch: int


SIZES = {
    "test": Sizes(fig1_steps=60, deep_steps=40, deep_depth=6, width=16, batch=32),
    "quick": Sizes(fig1_steps=2_500, deep_steps=750, deep_depth=20, width=100, batch=60),
    "paper": Sizes(fig1_steps=50_000, deep_steps=5_000, deep_depth=20, width=100, batch=60),
}
# The learning-rate grids every net of a part is tuned on (the paper gives no rate).
FIG1_GRID = ablation.log_grid(0.05, 5.0)
DEEP_GRID = ablation.log_grid(0.03, 3.0)
# deep: the sanity check that the baseline trains: its mean test accuracy at least ABOVE_CHANCE
# above chance (MNIST and digits have 10 classes).
CHANCE = 0.1
ABOVE_CHANCE = 0.05
VARIANTS = (
    ablation.Variant("baseline", {"model.normalization": "none"}, "without BatchNorm"),
    ablation.Variant("batchnorm", {"model.normalization": "batchnorm"}, "with BatchNorm"),
)


def validation_error(run: ablation.Run, members: tuple[int, ...]) -> float:
    """Tuning score: the mean final validation error of `members` (a diverged one counts as 1)."""
    return float(np.mean(_errors(run.final("validation/accuracy")[list(members)])))


def _tuning(grid: tuple[float, ...]) -> ablation.Tuning:
    return ablation.Tuning(grid=grid, score=validation_error, metric="final validation error")


def _grid_text(grid: tuple[float, ...]) -> str:
    return ", ".join(f"{lr:g}" for lr in grid)


ERROR_RULE = (
    "the test error without BatchNorm minus with it (paired over seeds, 95% interval from the "
    "seeds' spread and the test set's binomial noise) is above 0"
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
            "diagnostics.layer": -1,
            "diagnostics.unit": 0,
            "diagnostics.all_units": True,
        },
        ablation.cadence(sizes.fig1_steps, logs=50, evals=25, diagnostics=25),
    )
    deep = ablation.make_config(
        common,
        {"model.depth": sizes.deep_depth, "model.kernel_init": "xavier_uniform"},
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
            rule=f"reproduced if both (1) {ERROR_RULE} and (2) the ratio of the median-input "
            "drift without / with BatchNorm is above 1 (paired t on log ratios over seeds); "
            "drift = mean over all units of the last hidden layer of (range of the unit's median "
            "input over training) / (its final 85th-15th percentile spread). Not reproduced if "
            "either is significantly in the other direction; inconclusive otherwise. "
            + ablation.CONVERGENCE_RULE,
            config=fig1,
            variants=VARIANTS,
            judge=judge_fig1,
            tuning=_tuning(FIG1_GRID),
            differences="The paper gives no learning rate: both nets are tuned on the same grid "
            f"({_grid_text(FIG1_GRID)}) of plain SGD; N(0, 0.01^2) weights (its 'small random "
            "Gaussian values'). The drift is measured over every unit of the last hidden layer "
            f"(the paper plots one).{fewer}",
        ),
        ablation.Part(
            name="deep",
            title=f"(b) BatchNorm and a {sizes.deep_depth}-layer sigmoid MLP",
            claim="Batch Normalization makes saturating nonlinearities trainable in deep "
            "networks, by keeping their inputs out of the saturated regime.",
            source="Ioffe & Szegedy 2015, §3.3",
            rule=f"reproduced if {ERROR_RULE}; not reproduced if it is significantly below 0. "
            "Sanity check (not a verdict condition): the baseline's mean test accuracy is at "
            f"least {ABOVE_CHANCE:.0%} above chance ({CHANCE:.0%}), i.e. the comparison is with "
            f"a net that trains. {ablation.CONVERGENCE_RULE}",
            config=deep,
            variants=VARIANTS,
            judge=judge_deep,
            tuning=_tuning(DEEP_GRID),
            differences="Not an experiment of the paper (its deep nets are Inception "
            f"ImageNet models): a direct test of the §3.3 argument, {sizes.deep_depth} sigmoid "
            "layers with Glorot (xavier_uniform) weights, plain SGD, both nets tuned on the grid "
            f"{_grid_text(DEEP_GRID)}.",
        ),
    ]


def _errors(accuracy: np.ndarray) -> np.ndarray:
    """Error fractions from accuracies; a member that diverged (no finite accuracy) counts as 1."""
    return 1 - np.nan_to_num(accuracy, nan=0.0)


def _test_errors(group: ablation.Group) -> np.ndarray:
    return _errors(group.final(f"{group.run.eval_split}/accuracy"))


def _error_verdict(base: ablation.Group, bn: ablation.Group) -> stats.Verdict:
    effect = stats.error_difference(
        _test_errors(base),
        _test_errors(bn),
        base.run.num_eval,
        name=f"{base.run.eval_split} error without minus with BatchNorm",
    )
    return stats.verdict(effect, claim="greater")


def drift(group: ablation.Group) -> np.ndarray:
    """Per seed: the mean over the tracked layer's units of (range of the unit's median input over
    training) / (its final 85th-15th percentile spread)."""
    run = group.run
    units = sorted(
        {k.rsplit("/", 1)[1] for r in run.history[0] for k in r if k.startswith("diag/units_p50/")},
        key=int,
    )
    out = []
    for m in group.members:
        per_unit = []
        for u in units:
            p15, p50, p85 = (run.series(f"diag/units_p{q}/{u}", m)[1] for q in (15, 50, 85))
            per_unit.append((p50.max() - p50.min()) / (p85[-1] - p15[-1]))
        out.append(np.mean(per_unit))
    return np.asarray(out)


def judge_fig1(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    base, bn = by_name["baseline"], by_name["batchnorm"]
    drift_effect = stats.paired_ratio(
        drift(base), drift(bn), name="median-input drift, without / with BatchNorm"
    )
    verdict = ablation.unless_unconverged(
        stats.combine([_error_verdict(base, bn), stats.verdict(drift_effect, claim="greater")]),
        [base, bn],
    )
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
            "Fig. 1b-c: the distribution of one sigmoid's input over training, first seed "
            "(the drift in the table is over every unit of the layer).",
        ),
    ]
    table = ablation.summary_table(
        [base, bn],
        extra={"median drift (all units)": lambda g: ablation.mean_std(drift(g), ".2f")},
    )
    return ablation.Findings(
        verdict,
        [table],
        plots,
        notes=[ablation.convergence_note([base, bn]), *ablation.tuning_edge_notes(runs)],
        judged=ablation.judged_members(by_name),
    )


def judge_deep(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    base, bn = by_name["baseline"], by_name["batchnorm"]
    split = base.run.eval_split
    depth = base.run.config.model.depth
    accuracy = float(np.mean(1 - _test_errors(base)))
    trains = accuracy >= CHANCE + ABOVE_CHANCE
    check = ablation.Check(
        "the baseline trains above chance at its selected rate",
        trains,
        f"mean {split} accuracy {accuracy:.4f}, chance {CHANCE:.0%}, "
        f"required >= {CHANCE + ABOVE_CHANCE:.0%}",
    )
    notes = [ablation.convergence_note([base, bn]), *ablation.tuning_edge_notes(runs)]
    if not trains:
        notes.append(
            "The baseline did not train at its selected rate, the best of the grid on the tuning "
            "seed (the tuning table gives its validation error at every rate): the comparison is "
            "with a net that did not train at any rate of the grid."
        )
    plot = ablation.plot_curves(
        outdir,
        "batchnorm_deep_loss.png",
        [base, bn],
        "train/loss",
        title=f"{depth}-layer sigmoid MLP",
        ylabel="training loss",
        log_y=True,
    )
    return ablation.Findings(
        ablation.unless_unconverged(_error_verdict(base, bn), [base, bn]),
        [ablation.summary_table([base, bn])],
        [
            ablation.Plot(
                plot, f"Training loss of the {depth}-layer sigmoid MLP, mean ± std over seeds."
            )
        ],
        notes=notes,
        checks=[check],
        judged=ablation.judged_members(by_name),
    )


EXPERIMENT = ablation.Experiment("batchnorm", "Batch normalization (Ioffe & Szegedy 2015)", parts)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
