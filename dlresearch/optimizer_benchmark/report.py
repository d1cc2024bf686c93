"""What a benchmark writes: results.csv, the plots and report.md, in the experiments' style."""

import os
from collections.abc import Mapping, Sequence

import numpy as np

from dlresearch.ablation import plots, writeup
from dlresearch.ablation.comparison import test_error
from dlresearch.ablation.measures import Group, grid_edge_note, mean_std, steps_summary
from dlresearch.metrics import TRAIN_LOSS, atomic_write_text
from dlresearch.optimizer_benchmark import analysis
from dlresearch.optimizer_benchmark.problems import TEST_ACCURACY
from dlresearch.optimizer_benchmark.protocol import Setting, Tuned

TAUS = np.geomspace(1, 10, 200)
TEST_ERROR = test_error()


def _group(tuned: Tuned) -> Group:
    run = tuned.evaluation
    return Group(tuned.arm.label, run, tuple(range(len(run.members))))


def _point(point: Mapping[str, float]) -> str:
    return ", ".join(f"{field} {value:.3g}" for field, value in point.items())


def comparisons(setting: Setting, tuned: Sequence[Tuned]) -> list[tuple]:
    """(effect, Holm p) of each arm against the baseline (the first), measure by measure."""
    groups = [_group(t) for t in tuned]
    return [
        row
        for measure in analysis.measures(setting.problem)
        for row in analysis.against_baseline(setting.problem, groups, measure)
    ]


def csv_rows(setting: Setting, tuned: Sequence[Tuned], effects: Sequence[tuple]) -> list[dict]:
    """One row per tuning point, per evaluation seed, and per comparison."""
    rows: list[dict] = []
    for t in tuned:
        for i, (point, score) in enumerate(zip(t.points, t.scores, strict=True)):
            rows.append(
                {
                    "problem": setting.name,
                    "optimizer": t.arm.label,
                    "kind": "tuning point",
                    "point": i,
                    "selected": i == t.selected,
                    **point,
                    "validation_accuracy": f"{score:.6g}",
                }
            )
        group = _group(t)
        steps = group.steps_to(setting.problem.target)
        for m, seed in enumerate(t.evaluation.members):
            rows.append(
                {
                    "problem": setting.name,
                    "optimizer": t.arm.label,
                    "kind": "evaluation",
                    "seed": int(seed["seed"]),
                    **t.point,
                    "test_accuracy": f"{group.final(TEST_ACCURACY)[m]:.6g}",
                    "train_loss": f"{group.final(TRAIN_LOSS)[m]:.6g}",
                    "steps_to_target": "" if steps[m] is None else steps[m],
                    "diverged_at": t.evaluation.diverged_at[m] or "",
                }
            )
    for effect, p_holm in effects:
        rows.append(
            {
                "problem": setting.name,
                "kind": "effect",
                "effect": effect.name,
                "estimate": f"{effect.estimate:.6g}",
                "low": f"{effect.low:.6g}",
                "high": f"{effect.high:.6g}",
                "p": f"{effect.p:.6g}",
                "p_holm": f"{p_holm:.6g}",
                "n": effect.n,
            }
        )
    return rows


def plot_problem(outdir: str, setting: Setting, tuned: Sequence[Tuned]) -> list[str]:
    """The curves at each arm's selected point, and the tuning-budget curves."""
    groups = [_group(t) for t in tuned]
    curves = plots.plot_curves(
        outdir,
        f"{setting.name}_curves.png",
        groups,
        TEST_ACCURACY,
        title=setting.problem.title,
        panels=[("test accuracy", groups)],
        hline=setting.problem.target.threshold,
    )
    losses = plots.plot_curves(
        outdir,
        f"{setting.name}_training_loss.png",
        groups,
        TRAIN_LOSS,
        title=f"{setting.problem.title}: training loss",
        log_y=True,
    )
    fig, (ax,) = plots.figure(1)
    for t in tuned:
        curve = analysis.budget_curve(t.scores)
        k = np.arange(1, len(curve) + 1)
        (line,) = ax.plot(k, curve[:, 0], marker="o", label=t.arm.label)
        ax.fill_between(k, curve[:, 1], curve[:, 2], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tuning budget k (points drawn at random from the K tuned)")
    ax.set_ylabel("expected best validation accuracy")
    ax.set_title(f"{setting.problem.title}: tuning budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    budget = plots.save(fig, outdir, f"{setting.name}_tuning_budget.png")
    return [curves, losses, budget]


def plot_profiles(outdir: str, labels: Sequence[str], costs: Mapping[str, np.ndarray]) -> str:
    """One panel per cost ([problems, arms]): the Dolan-Moré profile of each arm."""
    fig, axes = plots.figure(len(costs))
    for ax, (what, cost) in zip(axes, costs.items(), strict=True):
        profile = analysis.performance_profile(cost, TAUS)
        for label, rho in zip(labels, profile, strict=True):
            ax.step(TAUS, rho, where="post", label=label)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tau (cost / best arm's cost)")
        ax.set_ylabel("fraction of problems within tau")
        ax.set_title(f"performance profile: {what}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return plots.save(fig, outdir, "performance_profiles.png")


def profile_costs(settings: Sequence[Setting], results: Mapping[str, Sequence[Tuned]]) -> dict:
    """[problems, arms] costs: median steps to the target, and mean final test error."""
    steps = [
        [analysis.median_steps(_group(t).steps_to(s.problem.target)) for t in results[s.name]]
        for s in settings
    ]
    error = [
        [float(np.mean(TEST_ERROR.values(_group(t)))) for t in results[s.name]] for s in settings
    ]
    return {"steps to target": np.asarray(steps), "test error": np.asarray(error)}


def notes(tuned: Sequence[Tuned]) -> list[str]:
    """The experiments' guards: a selected value at an edge of the K points along a searched
    dimension (`ablation.grid_edge_note`: the best may lie beyond it), and diverged members."""
    out = []
    for t in tuned:
        selected = Group(f"`{t.arm.label}`", t.tuning, t.tuning.where(**t.point))
        out += [grid_edge_note(selected, d.field) for d in t.arm.space]
        diverged = sum(d is not None for d in t.evaluation.diverged_at)
        if diverged:
            out.append(
                f"`{t.arm.label}`: {diverged} of {len(t.evaluation.members)} evaluation members "
                "diverged (test error 1; their other measures are undefined)."
            )
    return [note for note in out if note]


def problem_section(
    setting: Setting, tuned: Sequence[Tuned], effects: Sequence[tuple], pngs: Sequence[str]
) -> str:
    """A problem's tables, comparisons (each with its 95% interval), ranking and plots."""
    p = setting.problem
    table = writeup.markdown_table(
        [
            "optimizer",
            "search space",
            "selected point",
            "validation acc. (tuning)",
            TEST_ERROR.column,
            "training loss",
            "steps to target",
        ],
        [
            [
                f"`{t.arm.label}`",
                t.arm.describe(),
                _point(t.point),
                f"{t.scores[t.selected]:.4f}",
                TEST_ERROR.summary(_group(t)),
                mean_std(_group(t).final(TRAIN_LOSS), ".4f"),
                steps_summary(_group(t).steps_to(p.target), t.evaluation.config.train.steps),
            ]
            for t in tuned
        ],
    )
    budget = writeup.markdown_table(
        ["optimizer", *[f"k={k}" for k in _budget_ks(setting.k)]],
        [
            [
                f"`{t.arm.label}`",
                *[
                    f"{c[0]:.4f} ({c[1]:.4f} to {c[2]:.4f})"
                    for c in analysis.budget_curve(t.scores)[[k - 1 for k in _budget_ks(setting.k)]]
                ],
            ]
            for t in tuned
        ],
    )
    errors = np.asarray([TEST_ERROR.values(_group(t)) for t in tuned])
    freq = analysis.rank_frequencies(errors, higher=False)
    ranks = writeup.markdown_table(
        ["optimizer", *[f"rank {r + 1}" for r in range(len(tuned))]],
        [
            [f"`{t.arm.label}`", *[f"{f:.0%}" for f in row]]
            for t, row in zip(tuned, freq, strict=True)
        ],
    )
    lines = [
        f"## {setting.name}: {p.title}",
        "",
        f"Dataset `{p.dataset}`, batch {setting.config.train.batch_size}, "
        f"{setting.config.train.steps:,} steps per run{f' ({p.source})' if p.source else ''}; "
        f"target: {p.target.describe()}. "
        f"Tuning: {setting.k} points per optimizer on a validation split of {p.holdout:,} held-out "
        f"training examples; evaluation seeds {', '.join(map(str, setting.seeds))}.",
        "",
        table,
        "",
        *[line for note in notes(tuned) for line in (f"Note: {note}", "")],
        "Each optimizer against the baseline, paired over the evaluation seeds (95% interval; "
        "Holm over this problem's comparisons of each measure; a diverged member counts as "
        "test error 1; a run that never reaches the target is censored at the budget):",
        "",
        *[f"- {effect.describe()}; Holm p={p_holm:.2g}" for effect, p_holm in effects],
        "",
        "Expected best validation accuracy of k points drawn at random from the K tuned "
        "(95% bootstrap interval):",
        "",
        budget,
        "",
        "Rank of the mean final test error under resampled evaluation seeds (how often each "
        "rank holds):",
        "",
        ranks,
        "",
        *[f"![{png}]({png})" for png in pngs],
        "",
    ]
    return "\n".join(lines)


def _budget_ks(k: int) -> list[int]:
    return sorted({1, 2, 4, max(1, k // 2), k} & set(range(1, k + 1)))


def write(
    outdir: str,
    settings: Sequence[Setting],
    results: Mapping[str, Sequence[Tuned]],
    *,
    header: Sequence[str],
) -> None:
    """results.csv, the plots and report.md (`header`: the title and how it was produced); the
    first arm of each problem is the baseline."""
    rows, sections = [], []
    for setting in settings:
        tuned = results[setting.name]
        effects = comparisons(setting, tuned)
        rows += csv_rows(setting, tuned, effects)
        sections.append(
            problem_section(setting, tuned, effects, plot_problem(outdir, setting, tuned))
        )
    labels = [t.arm.label for t in results[settings[0].name]]
    profile = plot_profiles(outdir, labels, profile_costs(settings, results))
    atomic_write_text(os.path.join(outdir, "results.csv"), writeup.csv_text(rows))
    text = [
        *header,
        "",
        "Performance profiles across the problems (Dolan & Moré 2002): for each optimizer, the "
        "fraction of problems on which its cost is within a factor tau of the best optimizer's "
        "(costs: median steps to the target, a miss never; mean final test error).",
        "",
        f"![{profile}]({profile})",
        "",
        *sections,
    ]
    atomic_write_text(os.path.join(outdir, "report.md"), "\n".join(text))
