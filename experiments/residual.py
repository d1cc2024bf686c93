"""Residual connections: He, Zhang, Ren & Sun (2016), §4.2, Fig. 6 and Table 6.

    python -m experiments.residual --preset=quick --workdir=/tmp/res --data_dir=../shared/data/mnist

Plain nets get WORSE on the training set as they get deeper (degradation); the same nets with
identity shortcuts do not. Parts:
- `mlp` (quick and test presets): plain vs residual MLPs with BatchNorm on MNIST at three depths.
- `cifar` (paper preset, needs --cifar_dir): `resnet_cifar` of depth 20/32/44/56 (and ResNet-110)
  with the paper's schedule on CIFAR-10.
Rule: reproduced when (1) the deepest plain net ends with a higher training error than the
shallowest plain net, (2) at the deepest depth the residual net's training error is below the plain
net's, and (3) the residual nets' rise in training error from the shallowest to the deepest depth
(if any) is smaller than the plain nets'. Errors are means over seeds of the final training error.
"""

import dataclasses

import ml_collections
import numpy as np

from dlresearch import ablation

# He et al. (2016) Table 6: CIFAR-10 test error (%) of the ResNets.
PAPER_TEST_ERRORS = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
MLP_LR = 0.01


@dataclasses.dataclass(frozen=True)
class MLPSizes:
    """The `mlp` part of the quick and test presets (the paper preset trains ResNets)."""

    depths: tuple[int, ...]
    width: int
    steps: int


MLP_SIZES = {
    "test": MLPSizes(depths=(2, 4), width=16, steps=40),
    "quick": MLPSizes(depths=(4, 16, 32), width=64, steps=1_500),
}
CIFAR_DEPTHS = {"plain": (20, 32, 44, 56), "residual": (20, 32, 44, 56, 110)}
RULE = (
    "reproduced if (1) the deepest plain net's final training error is above the shallowest "
    "plain net's, (2) at the deepest depth the residual net's training error is below the "
    "plain net's, and (3) the residual nets' rise in training error from the shallowest to the "
    "deepest depth is smaller than the plain nets' (means over seeds)."
)
CLAIM = (
    "Deeper plain nets have higher training error than shallower ones (degradation, not "
    "overfitting), while residual nets of the same depth train well and gain from depth "
    f"(CIFAR-10 test error {'/'.join(f'{e:g}' for e in PAPER_TEST_ERRORS.values())}% for "
    f"ResNet-{'/'.join(map(str, PAPER_TEST_ERRORS))})."
)


def _variant(kind: str, depth: int, extra: dict | None = None) -> ablation.Variant:
    return ablation.Variant(
        f"{kind}_{depth}",
        {"model.depth": depth, "model.residual": kind == "residual", **(extra or {})},
        f"{kind}-{depth}",
    )


def parts(preset: str, dirs: ablation.DataDirs) -> list[ablation.Part]:
    common = {
        "model.activation": "relu",
        "model.kernel_init": "he_normal",
        "model.normalization": "batchnorm",
        "optim.name": "momentum",
        "optim.momentum": 0.9,
        "train.batch_size": 128,
    }
    if preset == "paper":
        config = ablation.make_config(
            common,
            dirs.cifar10(),  # augmentation (pad-4 crop + flip) is the dataset's default
            {
                "model.name": "resnet_cifar",
                "optim.lr": 0.1,
                "optim.weight_decay": 1e-4,
                "optim.schedule": "piecewise",
                "optim.boundaries": (32_000, 48_000),
                "optim.decay_factor": 0.1,
            },
            ablation.cadence(64_000, logs=320, evals=32, checkpoints=32),
        )
        # ResNet-110 starts at lr 0.01 until training error is below 80% (~400 steps) in the
        # paper; here a linear warm-up over those steps.
        variants = [_variant("plain", d) for d in CIFAR_DEPTHS["plain"]] + [
            _variant("residual", d, {"optim.warmup_steps": 400} if d == 110 else None)
            for d in CIFAR_DEPTHS["residual"]
        ]
        return [
            _part(
                "cifar",
                "Plain vs residual CIFAR-10 nets (Fig. 6, Table 6)",
                config,
                variants,
                "The paper's schedule and augmentation; He-normal weights, option-A "
                "(zero-padding) shortcuts, 64k steps on all 50k training images (the paper's "
                "Fig. 6 runs hold out 5k for validation). ResNet-110's 400-step lr-0.01 warm-up "
                "is a linear warm-up here.",
            )
        ]
    sizes = MLP_SIZES[preset]
    config = ablation.make_config(
        common,
        dirs.mnist(),
        {"model.width": sizes.width, "optim.lr": MLP_LR},
        ablation.cadence(sizes.steps, logs=30, evals=5),
    )
    variants = [_variant(kind, d) for d in sizes.depths for kind in ("plain", "residual")]
    return [
        _part(
            "mlp",
            "Plain vs residual MLPs on MNIST/digits (the degradation problem)",
            config,
            variants,
            f"Not the paper's CIFAR-10 ResNets (days on this CPU): MLPs of {sizes.width} units "
            f"per layer with BatchNorm and He init, depths {'/'.join(map(str, sizes.depths))}; the "
            "residual nets add each hidden layer's output to its input (x + relu(bn(Wx)), the "
            f"first layer excepted). Momentum SGD at {MLP_LR:g} for all, {sizes.steps:,} steps.",
        )
    ]


def _part(
    name: str,
    title: str,
    config: ml_collections.ConfigDict,
    variants: list[ablation.Variant],
    differences: str,
) -> ablation.Part:
    return ablation.Part(
        name=name,
        title=title,
        claim=CLAIM,
        source="He, Zhang, Ren & Sun 2016, §4.2, Fig. 6 and Table 6",
        rule=RULE,
        config=config,
        variants=tuple(variants),
        judge=judge,
        differences=differences,
    )


def _error(group: ablation.Group, key: str) -> float:
    return float(np.nanmean(group.error_percent(key)))


def judge(runs: dict[str, ablation.Run], outdir: str) -> ablation.Findings:
    rows = list(ablation.groups(runs).values())
    split = rows[0].run.eval_split
    by_kind: dict[str, dict[int, ablation.Group]] = {"plain": {}, "residual": {}}
    for g in rows:
        kind = "residual" if g.run.config.model.residual else "plain"
        by_kind[kind][g.run.config.model.depth] = g
    train_error = {
        k: {d: _error(g, "train/accuracy") for d, g in v.items()} for k, v in by_kind.items()
    }
    plain, res = train_error["plain"], train_error["residual"]
    shallow, deep = min(plain), max(plain)
    rise_plain, rise_res = plain[deep] - plain[shallow], res[deep] - res[shallow]
    degrades = rise_plain > 0
    fixes = res[deep] < plain[deep] and rise_res < rise_plain

    depths = sorted(set(plain) | set(res))
    headers = ["depth", "plain train err. %", "residual train err. %"]
    headers += [f"plain {split} err. %", f"residual {split} err. %"]
    is_cifar = rows[0].run.config.data.name == "cifar10"
    if is_cifar:
        headers.append("paper ResNet test err. %")

    def cell(kind: str, depth: int, key: str) -> str:
        group = by_kind[kind].get(depth)
        return f"{_error(group, key):.2f}" if group else ""

    lines = []
    for d in depths:
        line = [str(d), cell("plain", d, "train/accuracy"), cell("residual", d, "train/accuracy")]
        line += [cell("plain", d, f"{split}/accuracy"), cell("residual", d, f"{split}/accuracy")]
        if is_cifar:
            line.append(f"{PAPER_TEST_ERRORS[d]:.2f}" if d in PAPER_TEST_ERRORS else "")
        lines.append(line)
    table = ablation.markdown_table(headers, lines)
    plot = ablation.plot_curves(
        outdir,
        "residual_training_loss.png",
        rows,
        "train/loss",
        title="",
        ylabel="training loss",
        log_y=True,
        panels=[
            ("plain", [by_kind["plain"][d] for d in sorted(plain)]),
            ("residual", [by_kind["residual"][d] for d in sorted(res)]),
        ],
    )
    reason = (
        f"final training error plain-{shallow} {plain[shallow]:.2f}% -> plain-{deep} "
        f"{plain[deep]:.2f}% vs residual-{shallow} {res[shallow]:.2f}% -> residual-{deep} "
        f"{res[deep]:.2f}%"
    )
    return ablation.Findings(
        ablation.Verdict(degrades and fixes, reason),
        [table, "", ablation.summary_table(rows)],
        [ablation.Plot(plot, "Training loss (log scale), mean ± std over seeds.")],
    )


EXPERIMENT = ablation.Experiment("residual", "Residual connections (He et al. 2016)", parts)

if __name__ == "__main__":
    ablation.main(EXPERIMENT)
