"""ReLU vs sigmoid vs tanh: Krizhevsky et al. (2012) Fig. 1 and the vanishing gradients of sigmoids.

    python -m experiments.activations --preset=quick --workdir=/tmp/act --data_dir=../shared/data/mnist

Parts (each part's `rule`, printed in its report, states the thresholds defined below):
- `speed`: steps to the paper's training-error target with ReLU, tanh and sigmoid units in an
  otherwise identical net, each at the learning rate of a small grid that gets there first. Paper
  preset: the four-layer CIFAR-10 conv net (`cnn_preset=krizhevsky2012`, needs --cifar_dir); quick
  preset: a four-layer MLP (3 hidden layers + output) on MNIST, with the paper's N(0, 0.01^2)
  weights and, as in the paper, the centred raw pixel values (0-255 minus the mean) as input.
  Rule: reproduced when ReLU gets there several times faster than tanh (a seed that never gets
  there counts as the whole run).
- `gradients`: a deep MLP with Glorot weights for every activation; per-layer gradient norms at
  initialisation and during training. Rule: reproduced when the first hidden layer's gradient norm
  is a small fraction of the last hidden layer's for sigmoid but not for ReLU, at initialisation
  and at the end of training (means over seeds).
"""

import dataclasses

import numpy as np

from dlresearch import ablation

ACTIVATIONS = ("relu", "tanh", "sigmoid")
TARGET = ablation.Target("train/accuracy", 0.75)
TARGET_ERROR = f"{1 - TARGET.threshold:.0%} training error"  # the paper's target
# speed: ReLU's mean steps to the target at most 1/MIN_SPEEDUP of tanh's.
MIN_SPEEDUP = 2
# gradients: first/last hidden-layer gradient norm below 1/SIGMOID_SHRINK for sigmoid, above
# 1/RELU_SHRINK for ReLU.
SIGMOID_SHRINK = 100
RELU_SHRINK = 10
GRADIENT_LR = 0.01


@dataclasses.dataclass(frozen=True)
class Sizes:
    speed_steps: int
    speed_lrs: tuple[float, ...]  # the speed part's learning-rate grid
    width: int
    gradients_depth: int
    gradients_steps: int


SIZES = {
    "test": Sizes(
        speed_steps=60, speed_lrs=(0.03, 0.1), width=16, gradients_depth=4, gradients_steps=40
    ),
    "quick": Sizes(
        speed_steps=1_500,
        speed_lrs=(0.003, 0.01, 0.03),
        width=100,
        gradients_depth=10,
        gradients_steps=1_000,
    ),
    "paper": Sizes(
        speed_steps=15_600,
        speed_lrs=(0.0003, 0.001, 0.003, 0.01, 0.03),
        width=100,
        gradients_depth=20,
        gradients_steps=10_000,
    ),
}


def _variants() -> tuple[ablation.Variant, ...]:
    return tuple(ablation.Variant(a, {"model.activation": a}) for a in ACTIVATIONS)


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    sizes = SIZES[preset]
    steps, width, depth = sizes.speed_steps, sizes.width, sizes.gradients_depth
    common = {"optim.name": "momentum", "optim.momentum": 0.9, "train.batch_size": 128}
    if preset == "paper":
        # 40 epochs of CIFAR-10 at batch 128: the paper's Fig. 1 spans 35.
        model = {"model.name": "cnn", "model.cnn_preset": "krizhevsky2012", **dirs.cifar10()}
        differences = (
            "The paper does not specify the net beyond 'four-layer convolutional'; "
            "`krizhevsky2012` is our cuda-convnet-style choice (see dlresearch/models.py), "
            "without local response normalisation, N(0, 0.01^2) weights in every layer, "
            "per-channel (not per-pixel) mean subtracted. "
            "On a CPU pass --config.train.steps_per_call=1 (XLA:CPU runs convolutions inside a "
            "loop on a slow path)."
        )
    else:
        model = {"model.depth": 3, "model.width": width, **dirs.mnist()}
        differences = (
            "Not the paper's conv net on CIFAR-10 (40 epochs take days on a 2-core CPU): a four-layer "
            f"MLP (3 x {width} hidden units) on MNIST with the same recipe: N(0, 0.01^2) "
            f"weights, centred raw pixel values (0-255 minus the mean, the paper's only "
            f"preprocessing), momentum 0.9, no regularisation, {steps:,} steps, the paper's "
            f"{TARGET_ERROR} target."
        )
    speed = ablation.make_config(
        common,
        model,
        {
            # The paper's input: pixel values in 0-255 minus the mean. Their size is what
            # saturates tanh units under N(0, 0.01^2) weights; standardised inputs would not.
            "data.scale": "center",
            "model.kernel_init": "small_normal",
            "model.init_std": 0.01,
            "sweep.lr": sizes.speed_lrs,
        },
        # A train log line every 20 steps: the resolution of the steps to the target.
        ablation.cadence(steps, logs=steps // 20, evals=4),
    )
    gradients = ablation.make_config(
        common,
        dirs.mnist(),
        {
            "model.depth": depth,
            "model.width": width,
            "model.kernel_init": "xavier_uniform",
            "optim.lr": GRADIENT_LR,
        },
        ablation.cadence(sizes.gradients_steps, logs=20, evals=5, diagnostics=10),
    )
    return [
        ablation.Part(
            name="speed",
            title=f"(a) Training speed: steps to {TARGET_ERROR} (Fig. 1)",
            claim=f"A network with ReLUs reaches {TARGET_ERROR} on CIFAR-10 six times faster "
            "than an equivalent network with tanh neurons, each at its best learning rate.",
            source="Krizhevsky, Sutskever & Hinton 2012, §3.1 and Fig. 1",
            rule="at each activation's best learning rate of the grid (fewest mean steps to the "
            f"target), reproduced if ReLU's mean steps to {TARGET_ERROR} are at most "
            f"1/{MIN_SPEEDUP} of tanh's; a seed that never reaches the target counts as the full "
            "run.",
            config=speed,
            variants=_variants(),
            judge=judge_speed,
            differences=differences,
            target=TARGET,
            init_diagnostics=True,
        ),
        ablation.Part(
            name="gradients",
            title=f"(b) Vanishing gradients in a {depth}-layer MLP",
            claim="Through sigmoid units the gradient shrinks layer by layer toward the input "
            "(sigmoid' <= 1/4), so the lower layers of a deep sigmoid net barely learn; through "
            "ReLUs it does not.",
            source="Glorot & Bengio 2010, §4.2 and Fig. 7; Glorot, Bordes & Bengio 2011",
            rule="reproduced if the first hidden layer's gradient norm is < "
            f"1/{SIGMOID_SHRINK} of the last hidden layer's for sigmoid and > 1/{RELU_SHRINK} "
            "for ReLU, both at initialisation and at the "
            "end of training (means over seeds).",
            config=gradients,
            variants=_variants(),
            judge=judge_gradients,
            differences=f"{depth} hidden layers of {width} units with Glorot "
            f"(xavier_uniform) weights for every activation, momentum SGD at "
            f"{GRADIENT_LR:g}, {sizes.gradients_steps:,} steps; gradient norms are those of each "
            "layer's weights and biases on one training batch.",
            init_diagnostics=True,
        ),
    ]


def judge_speed(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    best = ablation.best_groups(runs, "lr", ablation.target_score(TARGET))
    total = runs["relu"].config.train.steps
    steps = {name: ablation.mean_steps(g.steps_to(TARGET), total) for name, g in best.items()}
    ratio = steps["tanh"] / steps["relu"]
    table = ablation.summary_table(ablation.groups_by(runs, "lr"), TARGET)
    plot = ablation.plot_curves(
        outdir,
        "activations_speed.png",
        list(best.values()),
        "train/accuracy",
        title="training error at each activation's best learning rate",
        ylabel="training accuracy (mean of the steps since the previous log line)",
        hline=TARGET.threshold,
    )
    when = {name: ablation.steps_phrase(g.steps_to(TARGET), total) for name, g in best.items()}
    reason = (
        f"ReLU reached {TARGET_ERROR} in {when['relu']} steps vs tanh {when['tanh']} "
        f"({ratio:.1f}x) and sigmoid {when['sigmoid']}"
    )
    # Saturation is the paper's explanation: measured on the initial nets, first hidden layer.
    saturated = {
        name: ablation.layer_matrix(best[name], "diag/saturated", None)[1][:, 0].mean()
        for name in ("tanh", "sigmoid")
    }
    notes = [
        "At initialisation, on one training batch, "
        + " and ".join(f"{saturated[n]:.0%} of {n}'s first-hidden-layer units" for n in saturated)
        + " are saturated (within 0.02 of a bound of their range), driven there by the raw "
        "pixel values; `--config.data.scale=standardize` gives unit-variance inputs instead."
    ]
    return ablation.Findings(
        ablation.Verdict(ratio >= MIN_SPEEDUP, reason),
        [table],
        [
            ablation.Plot(
                plot,
                "Training accuracy at each activation's best rate, mean ± std over "
                f"seeds; the dotted line is the {TARGET_ERROR} target.",
            )
        ],
        notes,
    )


def _first_to_last(group: ablation.Group, step: int | None) -> float:
    """Mean over seeds of |grad| of the first hidden layer / |grad| of the last hidden layer."""
    names, values = ablation.layer_matrix(group, "diag/grad_norm", step)
    hidden = [i for i, name in enumerate(names) if name.startswith("hidden_")]
    return float(np.mean(values[:, hidden[0]] / values[:, hidden[-1]]))


def judge_gradients(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    rows = list(by_name.values())
    end = runs["relu"].config.train.steps
    ratios = {
        name: (_first_to_last(g, None), _first_to_last(g, end)) for name, g in by_name.items()
    }
    table = ablation.markdown_table(
        [
            "activation",
            "first/last hidden grad norm at init",
            f"... at step {end:,}",
            "final train loss",
            "final test acc.",
        ],
        [
            [
                g.label,
                f"{ratios[name][0]:.2e}",
                f"{ratios[name][1]:.2e}",
                ablation.mean_std(g.final("train/loss")),
                ablation.mean_std(g.final(f"{g.run.eval_split}/accuracy")),
            ]
            for name, g in by_name.items()
        ],
    )
    layers = ablation.plot_layers(
        outdir,
        "activations_gradients.png",
        [
            ("gradient norm at initialisation", "diag/grad_norm", [(g, None) for g in rows]),
            (f"gradient norm after {end:,} steps", "diag/grad_norm", [(g, end) for g in rows]),
        ],
    )
    loss = ablation.plot_curves(
        outdir,
        "activations_gradients_loss.png",
        rows,
        "train/loss",
        title="training loss of the deep MLP",
        log_y=True,
    )
    sigmoid, relu = ratios["sigmoid"], ratios["relu"]
    reproduced = max(sigmoid) < 1 / SIGMOID_SHRINK and min(relu) > 1 / RELU_SHRINK
    reason = (
        f"first/last hidden-layer gradient norm {sigmoid[0]:.1e} at init and {sigmoid[1]:.1e} "
        f"at the end for sigmoid vs {relu[0]:.2f} and {relu[1]:.2f} for ReLU"
    )
    return ablation.Findings(
        ablation.Verdict(reproduced, reason),
        [table],
        [
            ablation.Plot(layers, "Gradient norm per layer (log scale), mean ± std over seeds."),
            ablation.Plot(loss, "Training loss, mean ± std over seeds (log scale)."),
        ],
    )


EXPERIMENT = ablation.Experiment("activations", "ReLU vs sigmoid vs tanh", parts)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
