"""Weight initialisation: Glorot & Bengio (2010) Table 1 and He et al. (2015) §2.2.

    python -m experiments.initialization --preset=quick --workdir=/tmp/init --data_dir=../shared/data/mnist

Every compared arm gets the same learning-rate tuning (`ablation.Tuning`: a log grid on a held-out
split, tuning seeds disjoint from the evaluation seeds); the verdicts are paired over the evaluation
seeds with 95% intervals (`ablation.stats`). Parts, each with the kind of claim it tests
(`ablation.spec.Kind`) and the paper's sentence it rests on; each part's `rule`, printed in its
report, states the thresholds defined below:
- `glorot` (speed; --dataset, MNIST by default) and, in the paper preset, `glorot_cifar` (CIFAR-10,
  needs --cifar_dir):
  5 hidden layers, batch 10, plain SGD; tanh, sigmoid and softsign with the "standard" init
  U[±1/sqrt(fan_in)] and tanh and softsign with the "normalized" init (`xavier_uniform`), each at
  the rate with the lowest validation error. The paper's claim is "substantially faster
  convergence". Rule (`ablation.SPEED_RULE`): Tanh's steps over Tanh N's to each training-error
  target (`ablation.error_targets`: chance error halved once, twice and three times), paired over
  seeds, Holm over them; reproduced when every ratio is above 1x. Sanity checks beside it: sigmoid has the highest test
  error; at initialisation tanh's activation spread shrinks more across layers with the standard
  init (both follow from the setup).
- `he` (trainability): plain ReLU MLPs 22 and 30 layers deep (the paper's depths), Xavier vs He
  init, momentum SGD, each at the rate reaching the training-accuracy target soonest. Rule, in the
  claim's own terms, with the stall band of every trainability part (`ablation.STALL_BAND`,
  `ablation.STALL_FACTOR`: a net stalls while its training loss stays above 0.9x its first logged
  value): the deep Xavier net stays in the band for more than `STALL_FACTOR` times the steps the
  deep He net takes to leave it (paired ratio, censored runs bounding it), at every rate of its
  tuning grid too, which brackets He's rate; at the shallow depth the Xavier net does not stall
  (it leaves the band within `STALL_FACTOR` times He's steps), He sooner (paired ratio > 1). A
  budget shorter than `STALL_FACTOR` times He's steps leaves either inconclusive. The band is
  relative to each net's own first loss, so no level of one dataset enters the rule.
"""

import dataclasses

import ml_collections
import numpy as np

from dlresearch import ablation, data
from dlresearch.ablation import stats

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
# glorot: every variant's grid (the paper's plain-SGD rates lie inside it).
GLOROT_GRID = ablation.log_grid(0.003, 0.3)
HE_TARGET = ablation.Target("train/accuracy", 0.9)
HE_TARGET_TEXT = f"{HE_TARGET.threshold:.0%} training accuracy"
# he: every net's grid, around the rate at which a 30-layer He-init net trains stably.
HE_GRID = ablation.log_grid(3e-4, 3e-2)
PAPER_HE_DEPTHS = (22, 30)  # He et al.'s ImageNet nets
# Test error (%) above which sigmoid has not left chance level (90% on 10 classes): the report says
# so.
NEAR_CHANCE_ERROR = 50
# glorot: the matched budgets, as fractions of the budget, at which the test errors are compared.
MATCHED = (0.5, 1.0)
GLOROT_QUOTE = (
    "Based on these considerations, we propose a new initialization scheme that brings "
    "substantially faster convergence."
)
HE_QUOTE = "the \u201cXavier\u201d method completely stalls"


@dataclasses.dataclass(frozen=True)
class Sizes:
    glorot_width: int
    glorot_steps: int
    he_depths: tuple[int, int]  # shallow, deep
    he_width: int
    he_steps: int


SIZES = {
    "test": Sizes(glorot_width=16, glorot_steps=60, he_depths=(4, 6), he_width=16, he_steps=40),
    "quick": Sizes(
        glorot_width=128,
        glorot_steps=1_500,
        he_depths=PAPER_HE_DEPTHS,
        he_width=64,
        he_steps=1_000,
    ),
    "paper": Sizes(
        glorot_width=1_000,
        glorot_steps=250_000,
        he_depths=PAPER_HE_DEPTHS,
        he_width=100,
        he_steps=10_000,
    ),
}
# standard: sized from quick's measured values (MNIST, seeds 0-4). glorot: Tanh ended at 9.1%
# test error (training loss 0.28), near the last target (11.25% training error), so seeds would
# be cut off: twice the budget. he: a stall is more than 10x He's steps out of the band, so the
# budget must exceed 10x them; He's steps to 90% training accuracy at quick (286-630), an upper
# bound on them, leave that open at 1,000 steps: 2,000 cover He nets leaving the band within 200.
SIZES["standard"] = dataclasses.replace(SIZES["quick"], glorot_steps=3_000, he_steps=2_000)


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    sizes = SIZES[preset]
    glorot = {
        "model.depth": 5,
        "model.width": sizes.glorot_width,
        "optim.name": "sgd",
        "train.batch_size": 10,
        # An evaluation every 5% of the budget: at each matched budget and 0.8x it.
        **ablation.cadence(sizes.glorot_steps, logs=20, evals=20, diagnostics=10),
    }
    targets = ablation.error_targets(ablation.make_config(dirs.data()).data)
    config = ablation.make_config(glorot, dirs.data(), ablation.first_reach(*targets))
    epochs = sizes.glorot_steps * 10 / data.facts(config.data).train_size
    fewer = (
        ""
        if preset == "paper"
        else f" {sizes.glorot_width} units per layer instead of "
        f"{SIZES['paper'].glorot_width:,}, and "
        f"{sizes.glorot_steps:,} steps ({epochs:.1f} epochs) instead of "
        "training to convergence, "
        "so the errors are far above the paper's; only their difference is judged."
    )
    out = [_glorot_part("glorot", dirs.title, config, fewer)]
    if preset == "paper" and dirs.dataset != "cifar10":  # else `glorot` is this part already
        # The paper's CIFAR-10 numbers are without augmentation.
        cifar = ablation.make_config(glorot, dirs.cifar10(), {"data.augment": "none"})
        cifar = ablation.make_config(
            glorot,
            dirs.cifar10(),
            {"data.augment": "none"},
            ablation.first_reach(*ablation.error_targets(cifar.data)),
        )
        out.append(_glorot_part("glorot_cifar", "CIFAR-10", cifar, ""))
    he = ablation.make_config(
        dirs.data(),
        {
            "model.width": sizes.he_width,
            "model.activation": "relu",
            "optim.name": "momentum",
            "train.batch_size": 128,
        },
        # A train log line every 10 steps, the resolution of the steps out of the stall band; the
        # steps to the accuracy target (tuning) are recorded at every step (`first_reach`).
        ablation.cadence(sizes.he_steps, logs=sizes.he_steps // 10, evals=5),
        ablation.first_reach(HE_TARGET),
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
            source="He, Zhang, Ren & Sun 2015 (PReLU paper), §2.2 and Figs. 2-3",
            kind="trainability",
            quote=HE_QUOTE,
            rule="Per evaluation seed, the steps until a net's training loss first falls below "
            f"{ablation.STALL_BAND:g} x its first logged value, logged every 10 steps (a seed "
            f"that never does is censored at the {sizes.he_steps:,}-step budget); a net stalls "
            f"when it takes more than {ablation.STALL_FACTOR} x the steps the other init takes. "
            f"(i) At {deep} layers Xavier stalls: its steps / ({ablation.STALL_FACTOR} x He's "
            "steps), paired t on log ratios (the exact sign-flip test where a run is censored, "
            "its 95% interval unbounded below 6 seeds): reproduced if the interval lies above "
            "1x and Xavier stalls at every rate of its tuning grid too (on the tuning seeds: out "
            f"of the band only after {ablation.STALL_FACTOR} x He's mean steps, or never within "
            "a budget at least that long), a grid that brackets He's selected rate (strictly "
            "inside it); not reproduced if the interval lies wholly below 1x; inconclusive "
            f"otherwise (a budget shorter than {ablation.STALL_FACTOR} x He's steps cannot tell "
            f"a stall from slow training). (ii) At {shallow} layers both converge, He sooner: "
            f"Xavier's steps / ({ablation.STALL_FACTOR} x He's steps) judged the other way "
            "(reproduced if the interval lies below 1x, not reproduced if above), and the "
            "Xavier/He step ratio judged like (i) against 1x. Each at its p-value Holm-adjusted "
            "over the three (for refutations too); reproduced if all are, not reproduced if any "
            "is. (Until 2026-12-05 the steps were those to 90% training accuracy, so a stall "
            "needed a budget of 10x He's steps to that target, which no preset but paper "
            "affords; changed to the stall band of the batchnorm `deep` part before any "
            "standard-preset run.)",
            config=he,
            variants=he_variants,
            judge=judge_he,
            differences=f"The paper's nets are {'- and '.join(map(str, PAPER_HE_DEPTHS))}-layer "
            f"ImageNet conv nets; here plain MLPs of {sizes.he_width} ReLU units per layer on "
            f"{dirs.title}, no BatchNorm, momentum SGD (0.9) at each net's tuned rate, "
            f"{sizes.he_steps:,} steps. xavier_normal/he_normal: "
            "std sqrt(2/(fan_in+fan_out)) vs sqrt(2/fan_in).",
            target=HE_TARGET,
            tuning=ablation.Tuning(
                grid=HE_GRID,
                score=ablation.target_score(HE_TARGET),
                metric=f"mean steps to {HE_TARGET_TEXT} (training curve)",
            ),
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
        f"{MNIST_ERRORS['tanh']:.2f}% -> Tanh N {MNIST_ERRORS['tanh_n']:.2f}%).",
        source="Glorot & Bengio 2010, Table 1 and Figs. 6-7",
        kind="speed",
        quote=GLOROT_QUOTE,
        rule="Tanh's steps over Tanh N's to each of the training errors "
        + ", ".join(ablation.describe_target(t) for t in ablation.error_targets(config.data))
        + " (this dataset's chance error halved once, twice and three times; the claim gives no "
        "smallest effect, so no margin). "
        + ablation.SPEED_RULE
        + " (Until 2026-12-05 the rule compared the test errors at "
        f"{' and '.join(f'{f:g}x' for f in MATCHED)} the budget, each settled: a comparison of "
        "values that no affordable budget settles while the nets still learn; shown as the "
        "previous rule.)",
        config=config,
        variants=GLOROT_VARIANTS,
        judge=judge_glorot,
        differences="Plain SGD at each variant's rate of the grid with the lowest validation "
        "error (as the paper selects); no early stopping." + fewer,
        tuning=ablation.Tuning(
            grid=GLOROT_GRID,
            score=ablation.final_score("validation/accuracy", lower=False),
            metric="final validation error",
        ),
        init_diagnostics=True,
    )


def _shrink(group: ablation.Group) -> float:
    """At init, mean over seeds of act_std(last hidden layer) / act_std(first hidden layer)."""
    _, values = ablation.layer_matrix(group, "diag/act_std", None)
    return float(np.mean(values[:, -1] / values[:, 0]))


def judge_glorot(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    tanh = runs["tanh"]
    errors = {k: 1 - g.final("test/accuracy") for k, g in by_name.items()}
    verdict, unreached = ablation.speed_verdict(
        [(by_name["tanh"], by_name["tanh_n"])],
        ablation.error_targets(tanh.config.data),
        tanh.config.train.steps,
    )
    matched = ablation.at_budgets(
        lambda step: {k: 1 - by_name[k].at("test/accuracy", step) for k in ("tanh", "tanh_n")},
        lambda v: [("Tanh - Tanh N test error", v["tanh"], v["tanh_n"])],
        tanh.config.train.steps,
        MATCHED,
        lambda a, b, name: stats.error_difference(a, b, tanh.num_eval, name=name),
        claim="greater",
    )
    error = {k: float(np.mean(e)) for k, e in errors.items()}
    paper = PAPER_ERRORS.get(tanh.config.data.name, {})
    shrink = {k: _shrink(by_name[k]) for k in ("tanh", "tanh_n")}
    table = ablation.markdown_table(
        [
            "variant",
            "test error % (ours)",
            "paper test error %",
            "act. std last/first hidden layer at init",
            "top hidden layer saturated at the end",
            "final train loss",
        ],
        [
            [
                g.label,
                ablation.mean_std(errors[k], ".2f", scale=100),
                f"{paper[k]:.2f}" if k in paper else "n/a",
                f"{_shrink(g):.3f}",
                ablation.mean_std(
                    g.final(f"diag/saturated/hidden_{g.run.config.model.depth - 1}"), ".2f"
                ),
                ablation.mean_std(g.final("train/loss")),
            ]
            for k, g in by_name.items()
        ],
    )
    end = tanh.last_measured("diag/act_std")
    rows = list(by_name.values())
    plots = [
        ablation.Plot(
            ablation.plot_layers(
                outdir,
                f"initialization_{tanh.part}_layers.png",
                [
                    ("activation std at init", "diag/act_std", [(g, None) for g in rows]),
                    (
                        f"activation std at {'init' if end is None else f'step {end:,}'}",
                        "diag/act_std",
                        [(g, end) for g in rows],
                    ),
                    ("gradient norm at init", "diag/grad_norm", [(g, None) for g in rows]),
                ],
            ),
            "Per-layer activation std and gradient norm (log scale), mean ± std over seeds; "
            "each variant at its tuned rate.",
        ),
        ablation.Plot(
            ablation.plot_curves(
                outdir,
                f"initialization_{tanh.part}_accuracy.png",
                rows,
                "test/accuracy",
                title="test accuracy",
                ylabel="test accuracy",
            ),
            "Test accuracy over training, mean ± std over seeds.",
        ),
    ]
    highest = max(error, key=error.get)
    checks = [
        ablation.Check(
            "sigmoid has the highest test error",
            highest == "sigmoid",
            f"mean test error: Sigmoid {100 * error['sigmoid']:.2f}%, highest "
            f"{by_name[highest].label} {100 * error[highest]:.2f}%",
        ),
        ablation.Check(
            "tanh activation spread shrinks more with standard init",
            shrink["tanh"] < shrink["tanh_n"],
            f"act. std last/first hidden layer at init: {shrink['tanh']:.2f} (standard) vs "
            f"{shrink['tanh_n']:.2f} (normalized)",
        ),
    ]
    notes = [*unreached, *ablation.tuning_edge_notes(runs)]
    if 100 * error["sigmoid"] > NEAR_CHANCE_ERROR:
        chance_error = 1 - data.facts(tanh.config.data).chance
        notes.append(
            f"At {100 * error['sigmoid']:.0f}% test error sigmoid has not left chance level "
            f"({chance_error:.0%}) in this run (a deep sigmoid net with the standard init first sits on a plateau, "
            "Glorot & Bengio's Fig. 2; the paper trains to convergence and ends at "
            f"{MNIST_ERRORS['sigmoid']:.2f}%)."
        )
    return ablation.Findings(
        verdict,
        [table],
        plots,
        notes,
        checks,
        judged=ablation.judged_members(by_name),
        previous=ablation.Previous(
            "speed: Tanh minus Tanh N test error at "
            f"{' and '.join(f'{f:g}x' for f in MATCHED)} the budget, Holm over them, each "
            "settled (until 2026-12-05; before issue 20: the final test error gap with a "
            "training-loss convergence clause)",
            matched,
        ),
    )


def _steps(group: ablation.Group, factor: float = 1) -> list[float]:
    """Per seed, `factor` x the steps out of the stall band; math.inf where the net never left it
    (censored at the budget)."""
    return [factor * ablation.steps_out_of_band(group.run, m) for m in group.members]


def _previous_he(by_name: dict[str, ablation.Group], shallow: int, deep: int) -> stats.Verdict:
    """The rule until 2026-12-05: the same three ratios of steps to 90% training accuracy."""

    def steps(name: str, factor: float = 1) -> list[float]:
        return [factor * s for s in by_name[name].censored_steps(HE_TARGET)]

    budget = by_name[f"he_{deep}"].run.config.train.steps
    factor = ablation.STALL_FACTOR
    effects = (
        stats.paired_ratio(
            steps(f"xavier_{deep}"),
            steps(f"he_{deep}", factor),
            name=f"{deep} layers: Xavier steps / ({factor} x He steps) to {HE_TARGET_TEXT}",
            budget=budget,
        ),
        stats.paired_ratio(
            steps(f"xavier_{shallow}"),
            steps(f"he_{shallow}", factor),
            name=f"{shallow} layers: Xavier steps / ({factor} x He steps) to {HE_TARGET_TEXT}",
            budget=budget,
        ),
        stats.paired_ratio(
            steps(f"xavier_{shallow}"),
            steps(f"he_{shallow}"),
            name=f"{shallow} layers: Xavier/He steps to {HE_TARGET_TEXT}",
            budget=budget,
        ),
    )
    adjusted = stats.holm([e.p for e in effects])
    return stats.combine(
        [
            stats.verdict(e, claim=claim, p_adjusted=p)
            for e, claim, p in zip(effects, ("greater", "less", "greater"), adjusted, strict=True)
        ]
    )


def judge_he(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    by_name = ablation.groups(runs)
    rows = list(by_name.values())
    shallow, deep = sorted({g.run.config.model.depth for g in rows})
    budget = rows[0].run.config.train.steps
    factor = ablation.STALL_FACTOR
    stall = stats.paired_ratio(
        _steps(by_name[f"xavier_{deep}"]),
        _steps(by_name[f"he_{deep}"], factor),
        name=f"{deep} layers: Xavier / ({factor} x He) steps out of the stall band",
        budget=budget,
    )
    xavier_shallow = _steps(by_name[f"xavier_{shallow}"])
    # "Converges" in the terms of (i): no stall, so a seed cut off by a short budget leaves the
    # interval open above and the answer inconclusive, not "not reproduced".
    converges = stats.paired_ratio(
        xavier_shallow,
        _steps(by_name[f"he_{shallow}"], factor),
        name=f"{shallow} layers: Xavier / ({factor} x He) steps out of the stall band",
        budget=budget,
    )
    sooner = stats.paired_ratio(
        xavier_shallow,
        _steps(by_name[f"he_{shallow}"]),
        name=f"{shallow} layers: Xavier/He steps out of the stall band",
        budget=budget,
    )
    # Holm over the three conditions, for refutations as well as reproductions.
    effects = (stall, converges, sooner)
    adjusted = stats.holm([e.p for e in effects])
    verdicts = [
        ablation.stall_verdict(
            stats.verdict(stall, claim="greater", p_adjusted=adjusted[0]),
            by_name[f"xavier_{deep}"],
            by_name[f"he_{deep}"],
        ),
        stats.verdict(converges, claim="less", p_adjusted=adjusted[1]),
        stats.verdict(sooner, claim="greater", p_adjusted=adjusted[2]),
    ]
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
        stats.combine(verdicts),
        [ablation.summary_table(rows, HE_TARGET)],
        [ablation.Plot(plot, "Training loss, mean ± std over seeds (log scale).")],
        ablation.tuning_edge_notes(runs),
        judged=ablation.judged_members(by_name),
        previous=ablation.Previous(
            f"trainability by the steps to {HE_TARGET_TEXT} instead of out of the stall band "
            "(the same three ratios, Holm over them)",
            _previous_he(by_name, shallow, deep),
        ),
    )


EXPERIMENT = ablation.Experiment(
    "initialization", "Weight initialisation (Glorot & Bengio 2010; He et al. 2015)", parts
)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
