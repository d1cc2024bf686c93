"""Weight initialisation: Glorot & Bengio (2010) Table 1 and He et al. (2015) §2.2.

    python -m experiments.initialization --preset=quick --workdir=/tmp/init --data_dir=../shared/data/mnist

Parts (each part's `rule`, printed in its report, states the thresholds defined below):
- `glorot` (MNIST) and, in the paper preset, `glorot_cifar` (CIFAR-10, needs --cifar_dir): 5 hidden
  layers, batch 10, plain SGD; tanh, sigmoid and softsign with the "standard" init U[±1/sqrt(fan_in)]
  and tanh and softsign with the "normalized" init (`xavier_uniform`), each at the learning rate of a
  grid with the lowest final training loss (picking on test error would leak the test set). Rule:
  reproduced when normalized init gives tanh a lower mean test error than standard init (by more
  than the seeds' standard deviations), sigmoid has the highest test error of the five, and at
  initialisation tanh's activation spread (std) shrinks from the first to the last hidden layer by
  a larger factor with standard init than with normalized.
- `he`: plain ReLU MLPs 22 and 30 layers deep (the paper's depths), Xavier vs He init, the same
  SGD. Rule: reproduced when, in the deeper net, every seed with He init reaches the training
  accuracy target and none with Xavier init does (it stalls), and in the shallower net He init gets
  there no later than Xavier.
"""

import dataclasses

import ml_collections
import numpy as np

from dlresearch import ablation

GLOROT_VARIANTS = (
    ablation.Variant(
        "softsign", {"model.activation": "softsign", "model.kernel_init": "standard"}, "Softsign"
    ),
    ablation.Variant(
        "softsign_n",
        {"model.activation": "softsign", "model.kernel_init": "xavier_uniform"},
        "Softsign N",
    ),
    ablation.Variant("tanh", {"model.activation": "tanh", "model.kernel_init": "standard"}, "Tanh"),
    ablation.Variant(
        "tanh_n", {"model.activation": "tanh", "model.kernel_init": "xavier_uniform"}, "Tanh N"
    ),
    ablation.Variant(
        "sigmoid", {"model.activation": "sigmoid", "model.kernel_init": "standard"}, "Sigmoid"
    ),
)
# Table 1 of Glorot & Bengio (2010): test error (%) per variant.
PAPER_ERRORS = {
    "mnist": {"softsign": 1.64, "softsign_n": 1.72, "tanh": 1.76, "tanh_n": 1.64, "sigmoid": 2.21},
    "cifar10": {
        "softsign": 55.78,
        "softsign_n": 53.8,
        "tanh": 55.9,
        "tanh_n": 52.92,
        "sigmoid": 57.28,
    },
}
MNIST_ERRORS = PAPER_ERRORS["mnist"]
HE_TARGET = ablation.Target("train/accuracy", 0.9)
# At 0.01 the 30-layer He-init net is unstable in 2 of 3 seeds (measured); 0.003 trains it.
HE_LR = 0.003
PAPER_HE_DEPTHS = (22, 30)  # He et al.'s ImageNet nets
# Test error (%) above which sigmoid has not left chance level (90%): the report says so.
NEAR_CHANCE_ERROR = 50


@dataclasses.dataclass(frozen=True)
class Sizes:
    glorot_width: int
    glorot_steps: int
    glorot_lrs: tuple[float, ...]  # the glorot parts' learning-rate grid
    he_depths: tuple[int, int]  # shallow, deep
    he_width: int
    he_steps: int


SIZES = {
    "test": Sizes(
        glorot_width=16,
        glorot_steps=60,
        glorot_lrs=(0.03, 0.1),
        he_depths=(4, 6),
        he_width=16,
        he_steps=40,
    ),
    "quick": Sizes(
        glorot_width=256,
        glorot_steps=2_000,
        glorot_lrs=(0.03, 0.1),
        he_depths=PAPER_HE_DEPTHS,
        he_width=100,
        he_steps=1_000,
    ),
    "paper": Sizes(
        glorot_width=1_000,
        glorot_steps=250_000,
        glorot_lrs=(0.01, 0.03, 0.1, 0.3),
        he_depths=PAPER_HE_DEPTHS,
        he_width=100,
        he_steps=10_000,
    ),
}


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    sizes = SIZES[preset]
    glorot = {
        "model.depth": 5,
        "model.width": sizes.glorot_width,
        "optim.name": "sgd",
        "train.batch_size": 10,
        "sweep.lr": sizes.glorot_lrs,
        **ablation.cadence(sizes.glorot_steps, logs=20, evals=5, diagnostics=10),
    }
    fewer = (
        ""
        if preset == "paper"
        else f" {sizes.glorot_width} units per layer instead of "
        f"{SIZES['paper'].glorot_width:,}, and "
        f"{sizes.glorot_steps:,} steps ({sizes.glorot_steps * 10 / 60_000:.1f} epochs) instead of "
        "training to convergence, "
        "so the errors are far above the paper's; only their order is compared."
    )
    out = [_glorot_part("glorot", "MNIST", ablation.make_config(glorot, dirs.mnist()), fewer)]
    if preset == "paper":
        # The paper's CIFAR-10 numbers are without augmentation.
        cifar = ablation.make_config(glorot, dirs.cifar10(), {"data.augment": "none"})
        out.append(_glorot_part("glorot_cifar", "CIFAR-10", cifar, ""))
    he = ablation.make_config(
        dirs.mnist(),
        {
            "model.width": sizes.he_width,
            "model.activation": "relu",
            "optim.name": "momentum",
            "optim.lr": HE_LR,
            "train.batch_size": 128,
        },
        # A train log line every 50 steps: the resolution of the steps to the target.
        ablation.cadence(sizes.he_steps, logs=max(20, sizes.he_steps // 50), evals=5),
    )
    shallow, deep = sizes.he_depths
    he_variants = tuple(
        ablation.Variant(
            f"{init}_{depth}",
            {"model.depth": depth, "model.kernel_init": f"{init}_normal"},
            f"{depth} layers, {'Xavier' if init == 'xavier' else 'He'}",
        )
        for depth in sizes.he_depths
        for init in ("xavier", "he")
    )
    out.append(
        ablation.Part(
            name="he",
            title=f"(b) Xavier vs He init in {shallow}- and {deep}-layer ReLU nets",
            claim=f"With Xavier init a {deep}-layer ReLU net stalls while He init "
            f"(std sqrt(2/fan_in)) trains it; at {shallow} layers both converge, He init "
            "sooner.",
            source="He, Zhang, Ren & Sun 2015 (PReLU paper), §2.2 and Fig. 3",
            rule=f"reproduced if at {deep} layers every seed with He init reaches "
            f"{HE_TARGET.describe()} and none with Xavier init does in the run, and at "
            f"{shallow} layers He init reaches it no later than Xavier in the mean over seeds "
            "(a seed that never reaches it counts as the whole run).",
            config=he,
            variants=he_variants,
            judge=judge_he,
            differences=f"The paper's nets are {'- and '.join(map(str, PAPER_HE_DEPTHS))}-layer "
            f"ImageNet conv nets; here plain MLPs of {sizes.he_width} ReLU units per layer on "
            f"MNIST, no BatchNorm, momentum SGD at {HE_LR:g} for every net, {sizes.he_steps:,} "
            "steps. xavier_normal/he_normal: "
            "std sqrt(2/(fan_in+fan_out)) vs sqrt(2/fan_in).",
            target=HE_TARGET,
        )
    )
    return out


def _glorot_part(
    name: str, dataset: str, config: ml_collections.ConfigDict, fewer: str
) -> ablation.Part:
    return ablation.Part(
        name=name,
        title=f"(a) Standard vs normalized init, 5 x {config.model.width} MLP on {dataset} "
        "(Table 1)",
        claim="The normalized init U[±sqrt(6/(fan_in+fan_out))] keeps activations and "
        f"gradients alike across layers, which lowers tanh's test error (MNIST: Tanh "
        f"{MNIST_ERRORS['tanh']:.2f}% -> Tanh N {MNIST_ERRORS['tanh_n']:.2f}%), and sigmoid is "
        f"the worst of the activations (MNIST: {MNIST_ERRORS['sigmoid']:.2f}%).",
        source="Glorot & Bengio 2010, Table 1 and Figs. 6-7",
        rule="reproduced if Tanh N's mean test error is below Tanh's by more than the larger "
        "of their standard deviations over seeds, Sigmoid has the highest mean test error of "
        "the five, and at initialisation the std of tanh's "
        "activations falls from the first to the last hidden layer by a larger factor with "
        "the standard init than with the normalized one.",
        config=config,
        variants=GLOROT_VARIANTS,
        judge=judge_glorot,
        differences="Plain SGD at each variant's best rate of the grid by final training loss "
        "(the paper picks on validation error); no early stopping." + fewer,
        init_diagnostics=True,
    )


def _shrink(group: ablation.Group) -> float:
    """At init, mean over seeds of act_std(last hidden layer) / act_std(first hidden layer)."""
    _, values = ablation.layer_matrix(group, "diag/act_std", None)
    return float(np.mean(values[:, -1] / values[:, 0]))


def judge_glorot(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    best = ablation.best_groups(runs, "lr", ablation.final_score("train/loss"))
    split = next(iter(runs.values())).eval_split
    errors = {k: g.error_percent(f"{split}/accuracy") for k, g in best.items()}
    error = {k: float(np.nanmean(e)) for k, e in errors.items()}
    paper = PAPER_ERRORS.get(next(iter(runs.values())).config.data.name, {})
    shrink = {k: _shrink(best[k]) for k in ("tanh", "tanh_n")}
    table = ablation.markdown_table(
        [
            "variant",
            f"{split} error % (ours)",
            "paper test error %",
            "act. std last/first hidden layer at init",
            "top hidden layer saturated at the end",
            "final train loss",
        ],
        [
            [
                g.label,
                ablation.mean_std(errors[k], ".2f"),
                f"{paper[k]:.2f}" if k in paper else "n/a",
                f"{_shrink(g):.3f}",
                ablation.mean_std(
                    g.final(f"diag/saturated/hidden_{g.run.config.model.depth - 1}"), ".2f"
                ),
                ablation.mean_std(g.final("train/loss")),
            ]
            for k, g in best.items()
        ],
    )
    end = next(iter(runs.values())).config.train.steps
    rows = list(best.values())
    plots = [
        ablation.Plot(
            ablation.plot_layers(
                outdir,
                f"initialization_{runs['tanh'].part}_layers.png",
                [
                    ("activation std at init", "diag/act_std", [(g, None) for g in rows]),
                    (f"activation std at step {end:,}", "diag/act_std", [(g, end) for g in rows]),
                    ("gradient norm at init", "diag/grad_norm", [(g, None) for g in rows]),
                ],
            ),
            "Per-layer activation std and gradient norm (log scale), mean ± std over seeds; "
            "each variant at its best rate.",
        ),
        ablation.Plot(
            ablation.plot_curves(
                outdir,
                f"initialization_{runs['tanh'].part}_accuracy.png",
                rows,
                f"{split}/accuracy",
                title=f"{split} accuracy",
                ylabel=f"{split} accuracy",
            ),
            f"{split.capitalize()} accuracy over training, mean ± std over seeds.",
        ),
    ]
    order = max(error, key=error.get) == "sigmoid"
    lower = ablation.clearly_below(errors["tanh_n"], errors["tanh"])
    reproduced = lower and order and shrink["tanh"] < shrink["tanh_n"]
    reason = (
        f"{split} error Tanh {ablation.mean_std(errors['tanh'], '.2f')}% -> Tanh N "
        f"{ablation.mean_std(errors['tanh_n'], '.2f')}%"
        + ("" if lower else " (within the seeds' spread)")
        + f", Sigmoid {error['sigmoid']:.2f}% ({'the highest' if order else 'not the highest'}); tanh "
        f"activation std last/first layer at init {shrink['tanh']:.2f} (standard) vs "
        f"{shrink['tanh_n']:.2f} (normalized)"
    )
    notes = []
    if error["sigmoid"] > NEAR_CHANCE_ERROR:
        notes.append(
            f"Sigmoid is the highest by a gap the paper does not show: at {error['sigmoid']:.0f}% "
            "error it has not left chance level in this run (a deep sigmoid net with the "
            "standard init first sits on a plateau, Glorot & Bengio's Fig. 2; the paper trains "
            f"to convergence and ends at {MNIST_ERRORS['sigmoid']:.2f}%). The order is "
            "reproduced, the size of the gap is not."
        )
    return ablation.Findings(ablation.Verdict(reproduced, reason), [table], plots, notes)


def judge_he(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    rows = list(by_name.values())
    depths = sorted({g.run.config.model.depth for g in rows})
    shallow, deep = depths[0], depths[-1]
    total = rows[0].run.config.train.steps
    steps = {k: ablation.mean_steps(g.steps_to(HE_TARGET), total) for k, g in by_name.items()}
    reached = {k: any(s is not None for s in g.steps_to(HE_TARGET)) for k, g in by_name.items()}
    reproduced = (
        all(s is not None for s in by_name[f"he_{deep}"].steps_to(HE_TARGET))
        and not reached[f"xavier_{deep}"]
        and steps[f"he_{shallow}"] <= steps[f"xavier_{shallow}"]
    )

    def when(name: str) -> str:
        return ablation.steps_phrase(by_name[name].steps_to(HE_TARGET), total)

    reason = (
        f"steps to {HE_TARGET.threshold:.0%} training accuracy: {deep} layers He "
        f"{when(f'he_{deep}')} vs Xavier {when(f'xavier_{deep}')} (final training loss "
        f"{np.nanmean(by_name[f'xavier_{deep}'].final('train/loss')):.2f}); {shallow} layers He "
        f"{when(f'he_{shallow}')} vs Xavier {when(f'xavier_{shallow}')}"
    )
    plot = ablation.plot_curves(
        outdir,
        "initialization_he_loss.png",
        rows,
        "train/loss",
        title="ReLU MLPs: Xavier vs He init",
        ylabel="training loss",
        log_y=True,
    )
    return ablation.Findings(
        ablation.Verdict(reproduced, reason),
        [ablation.summary_table(rows, HE_TARGET)],
        [ablation.Plot(plot, "Training loss, mean ± std over seeds (log scale).")],
    )


EXPERIMENT = ablation.Experiment(
    "initialization", "Weight initialisation (Glorot & Bengio 2010; He et al. 2015)", parts
)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
