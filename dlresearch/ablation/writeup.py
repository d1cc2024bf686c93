"""What an experiment writes: results.csv, markdown tables, report.md, and the index of several."""

import csv
import io
import math
import os
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import ml_collections

from dlresearch import cli, data
from dlresearch import config as config_lib
from dlresearch.ablation.measures import Group, edge_side, mean_std, steps_summary
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import (
    DEFAULT_DATASET,
    DEFAULT_SEEDS,
    DataDirs,
    ExperimentResult,
    Findings,
    Part,
    Target,
    Tuning,
    Variant,
)
from dlresearch.ablation.stats import Effect, Outcome, Verdict, joint_outcome
from dlresearch.metrics import TRAIN_ACCURACY, TRAIN_LOSS, atomic_write_text, eval_key


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(
    rows: Iterable[Group],
    target: Target | None = None,
    extra: Mapping[str, Callable[[Group], str]] | None = None,
) -> str:
    """Means ± std over seeds of each group's final metrics, steps to `target`, divergences.

    `extra` maps a column header to a function of a group giving its per-member values.
    """
    rows = list(rows)
    split = rows[0].run.eval_split
    headers = [
        "variant",
        "final train loss (mean ± std over seeds)",
        "final train accuracy (mean ± std)",
        f"final {split} accuracy (mean ± std)",
    ]
    if target:
        headers.append(f"steps to {target.describe()}")
    extra = extra or {}
    headers += [*extra, "members diverged"]
    lines = []
    for group in rows:
        line = [
            group.label,
            mean_std(group.final(TRAIN_LOSS)),
            mean_std(group.final(TRAIN_ACCURACY)),
            mean_std(group.final(eval_key(split, "accuracy"))),
        ]
        if target:
            line.append(steps_summary(group.steps_to(target), group.run.config.train.steps))
        line += [fn(group) for fn in extra.values()]
        diverged = [group.run.diverged_at[m] for m in group.members]
        line.append(f"{sum(d is not None for d in diverged)}/{len(diverged)}")
        lines.append(line)
    return markdown_table(headers, lines)


# -- results.csv -----------------------------------------------------------------------------------
def results_rows(
    parts: Sequence[Part],
    runs: Mapping[str, Mapping[str, Run]],
    findings: Mapping[str, Findings],
) -> list[dict]:
    """The inputs of every verdict: one `run` row per (variant, member) with its settings, swept
    values, final metrics, steps to target, divergence and whether the verdict rests on it; then
    one `effect` row per effect a verdict states (estimate, 95% interval, p, outcome)."""
    rows = []
    for part in parts:
        judged = findings[part.name].judged
        for variant in part.variants:
            run = runs[part.name][variant.name]
            if run.tuning:
                rows += _run_rows(part, variant, run.tuning, {}, kind="tuning")
            rows += _run_rows(part, variant, run, judged)
    for part in parts:
        verdict = findings[part.name].verdict
        rows += [_effect_row(part.name, verdict.outcome, e) for e in verdict.effects]
    return rows


def _run_rows(
    part: Part,
    variant: Variant,
    run: Run,
    judged: Mapping[str, tuple[int, ...]],
    kind: str = "run",
) -> list[dict]:
    swept = config_lib.swept_axes(run.config)
    settings = {k: _text(v) for k, v in variant.overrides.items() if "sweep." not in k}
    split = run.eval_split
    finals = {
        column: run.final(key)
        for column, key in (
            ("train_loss", TRAIN_LOSS),
            ("train_accuracy", TRAIN_ACCURACY),
            ("eval_loss", eval_key(split, "loss")),
            ("eval_accuracy", eval_key(split, "accuracy")),
        )
    }
    rows = []
    for m, member in enumerate(run.members):
        row: dict[str, Any] = {"kind": kind, "part": part.name, "variant": variant.name}
        row.update(settings)
        row.update({axis: f"{member[axis]:g}" for axis in swept})
        row["lr"] = f"{member['lr']:g}"
        row["steps"] = run.config.train.steps
        row.update({column: _csv_float(values[m]) for column, values in finals.items()})
        row["eval_split"] = split
        if part.target:
            reached = run.steps_to(part.target, m)
            row["target"] = part.target.describe()
            row["steps_to_target"] = "" if reached is None else reached
        diverged = run.diverged_at[m]
        row["diverged"] = "no" if diverged is None else "yes"
        row["diverged_step"] = "" if diverged is None else diverged
        judged_here = kind == "run" and m in judged.get(variant.name, range(len(run.members)))
        row["judged"] = "yes" if judged_here else "no"
        rows.append(row)
    return rows


def _effect_row(part: str, outcome: Outcome, effect: Effect) -> dict[str, Any]:
    return {
        "kind": "effect",
        "part": part,
        "effect": effect.name,
        "estimate": _csv_float(effect.estimate),
        "ci_low": _csv_float(effect.low),
        "ci_high": _csv_float(effect.high),
        "p": _csv_float(effect.p),
        "n": effect.n,
        "method": effect.method,
        "outcome": str(outcome),
    }


def _text(value: Any) -> str:
    """A config value as one word of a flag or CSV cell: sequences space-separated."""
    return " ".join(str(v) for v in value) if isinstance(value, tuple | list) else str(value)


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of `rows`, columns in order of first appearance (blank where a row lacks one)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# -- report.md -------------------------------------------------------------------------------------
def config_summary(config: ml_collections.ConfigDict, varied: Collection[str] = ()) -> str:
    """The settings that define a run, in one line; fields named in `varied` read 'per variant'."""
    c = config
    return (
        f"{_dataset_text(c)}; {_model_text(c, varied)}; {_optimizer_text(c, varied)}; "
        f"batch {c.train.batch_size}, {c.train.steps:,} steps"
    )


def _shown(varied: Collection[str]) -> Callable[[str, str], str]:
    """`show(field, text)`: the `text` of a setting, or '<name> per variant' if it is varied."""

    def show(field: str, text: str) -> str:
        name = {"optim.name": "optimizer", "sweep.lr": "lr"}.get(field, field.split(".")[-1])
        return f"{name} per variant" if field in varied else text

    return show


def _dataset_text(c: ml_collections.ConfigDict) -> str:
    dataset = data.title(c.data.name)
    if c.data.holdout:
        held = data.holdout_size(c.data.holdout, data.facts(c.data).train_size, c.data.name)
        dataset += f" (the last {held:,} training examples held out for validation)"
    return dataset


def _model_text(c: ml_collections.ConfigDict, varied: Collection[str]) -> str:
    show = _shown(varied)
    depth = show("model.depth", f"depth {c.model.depth}")
    residual = show("model.residual", "residual" if c.model.residual else "plain")
    if c.model.name == "mlp":
        model = f"MLP, {depth} (hidden layers) x {c.model.width} units"
        if c.model.residual or "model.residual" in varied:
            model += f", {residual}"
    elif c.model.name == "cnn":
        model = f"CNN {c.model.cnn_preset or 'custom'}"
    else:
        model = f"{c.model.name}, {depth}, {residual}"
    init = c.model.kernel_init + (
        f" (std {c.model.init_std:g})" if c.model.kernel_init == "small_normal" else ""
    )
    model += f", {show('model.activation', c.model.activation)}"
    model += f", init {show('model.kernel_init', init)}"
    if c.model.normalization != "none" or "model.normalization" in varied:
        model += f", {show('model.normalization', c.model.normalization)}"
    if c.model.dropout:
        model += f", dropout {c.model.dropout:g}"
    return model


def _optimizer_text(c: ml_collections.ConfigDict, varied: Collection[str]) -> str:
    show = _shown(varied)
    lrs = " / ".join(f"{lr:g}" for lr in tuple(c.sweep.lr) or (c.optim.lr,))
    optimizer = f"{show('optim.name', c.optim.name)}, {show('sweep.lr', f'lr {lrs}')}"
    if c.optim.name in ("momentum", "nesterov") and "optim.name" not in varied:
        optimizer += f", momentum {c.optim.momentum:g}"
    if c.optim.weight_decay:
        optimizer += f", weight decay {c.optim.weight_decay:g}"
    if c.optim.schedule == "piecewise":
        at = ", ".join(f"{b:,}" for b in c.optim.boundaries)
        optimizer += f", lr x{c.optim.decay_factor:g} at steps {at}"
    elif c.optim.schedule != "constant":
        optimizer += f", {c.optim.schedule} schedule"
    return optimizer


def _variant_line(variant: Variant) -> str:
    settings = ", ".join(f"`{k}={_text(v)}`" for k, v in variant.overrides.items())
    return f"- **{variant.title}**: {settings or 'the base config'}"


def part_section(
    part: Part, runs: Mapping[str, Run], findings: Findings, seeds: Sequence[int]
) -> str:
    first = next(iter(runs.values()))
    seconds = sum(r.seconds for r in runs.values())
    lines = [
        f"## {part.title}",
        "",
        *result_lines(part, findings),
        "",
        f"**Claim** ({part.source}): {part.claim}",
        "",
        "**Setup used.** "
        + config_summary(first.config, {k for v in part.variants for k in v.overrides})
        + f"; seeds {', '.join(str(s) for s in seeds)} (one vmapped sweep per variant). Variants:",
        "",
        *[_variant_line(v) for v in part.variants],
        "",
    ]
    if part.differences:
        lines += [f"**Differences from the paper.** {part.differences}", ""]
    if part.tuning:
        lines += [tuning_section(part.tuning, runs), ""]
    if part.target:
        lines += [
            f"Target: `{part.target.describe()}`, measured on the `{part.target.metric}` values "
            f"logged every {first.config.train.log_every_steps} steps (each the mean since the "
            "previous line).",
            "",
        ]
    lines += [*findings.tables, ""]
    for plot in findings.plots:
        lines += [f"![{plot.caption}]({plot.filename})", "", f"*{plot.caption}*", ""]
    lines += [*findings.notes, ""] if findings.notes else []
    if findings.checks:
        lines += [
            "**Sanity checks** (expected from the setup; they do not decide the verdict):",
            "",
        ]
        lines += [
            f"- {'passed' if c.passed else 'FAILED'}: {c.name} ({c.detail})"
            for c in findings.checks
        ]
        lines += [""]
    lines += [
        f"**Rule** (how the result above was decided). {part.rule}",
        "",
        f"Training time of this part in this invocation: {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def result_lines(part: Part, findings: Findings) -> list[str]:
    """The kind of claim with the paper's sentence, the `**Result (<kind>)` line, and the previous
    rule's outcome on the same runs beside it."""
    decides = (
        "decides" if part.decides else "is reported beside the paper's verdict, not deciding it"
    )
    lines = [
        f"**Kind: {part.kind}** (this part {decides}), resting on: “{part.quote}”",
        "",
        findings.verdict.result_line(part.kind),
    ]
    if findings.previous is not None:
        old = findings.previous.verdict.outcome
        change = (
            "unchanged"
            if old == findings.verdict.outcome
            else f"{old} -> {findings.verdict.outcome}"
        )
        lines += [
            "",
            f"Previous rule ({findings.previous.rule}): {old} ({change}). "
            f"{findings.previous.verdict.reason}",
        ]
    return lines


def tuning_section(tuning: Tuning, runs: Mapping[str, Run]) -> str:
    """The tuning protocol in words, and per variant the score of every rate of its final grid
    (the preset's grid and its extensions), the rate chosen and that final grid."""
    grid = sorted({m["lr"] for run in runs.values() if run.tuning for m in run.tuning.members})
    headers = ["variant", *(f"{tuning.metric} at lr {lr:g}" for lr in grid), "selected lr"]
    rows = []
    for run in runs.values():
        assert run.tuning is not None
        tried = {m["lr"] for m in run.tuning.members}
        scores = [
            f"{tuning.score(run.tuning, run.tuning.where(lr=lr)):.4g}" if lr in tried else ""
            for lr in grid
        ]
        selected = run.config.optim.lr
        edge = " (grid edge)" if edge_side(tried, selected) else ""
        rows.append([run.variant.title, *scores, f"{selected:g}{edge}"])
    seeds = ", ".join(str(s) for s in tuning.seeds)
    first = next(iter(runs.values()))  # an evaluation run: trained on the whole training set
    held = data.holdout_size(tuning.holdout, first.num_train, first.config.data.name)
    return (
        "**Tuning (the same protocol for every variant).** Each variant trained every rate of the "
        f"grid on tuning seed(s) {seeds} (not among the evaluation seeds) with the last "
        f"{Fraction(tuning.holdout).limit_denominator(100)} of the training examples ({held:,}) "
        f"held out; the rate with the lowest {tuning.metric} was then trained on the evaluation seeds with the full training set. The grid: "
        f"{_rates_text(tuning.grid)} ({tuning.per_decade} per decade). "
        + _extension_text(tuning)
        + "A rate at an edge of its final grid is marked: the best rate may lie beyond it.\n\n"
        + markdown_table(headers, rows)
        + "\n\nFinal grid per variant: "
        + "; ".join(f"{run.variant.title}: {_final_grid(run.tuning)}" for run in runs.values())
        + "."
    )


def _rates_text(rates: Iterable[float]) -> str:
    return ", ".join(f"{r:g}" for r in sorted(rates))


def _final_grid(tuning: Run) -> str:
    """A tuning run's final grid in words: its range, rates and extensions."""
    rates = sorted({m["lr"] for m in tuning.members})
    text = f"{rates[0]:g} to {rates[-1]:g} ({len(rates)} rates)"
    if tuning.extensions:
        # Extensions continue one edge: the selection over the union moves only into new rates.
        added = {r for extension in tuning.extensions for r in extension}
        side = "above" if min(tuning.extensions[0]) > max(set(rates) - added) else "below"
        count = {1: "once", 2: "twice"}.get(
            len(tuning.extensions), f"{len(tuning.extensions)} times"
        )
        text += f", extended by a decade {side} {count}"
    return text


def experiment_verdict(results: Sequence[tuple[Part, Findings]], *, partial: bool) -> Verdict:
    """Over the parts that decide (`Part.decides`: speed, value, trainability): not reproduced if
    any is, reproduced if every one is, inconclusive otherwise (and without any); mechanism and
    control parts are listed, not counted. The reason lists each part's kind and outcome.
    `partial`: only some of the preset's parts ran."""
    deciding = [f.verdict.outcome for p, f in results if p.decides]
    outcome = joint_outcome(deciding) if deciding else Outcome.INCONCLUSIVE
    reason = "; ".join(
        f"{p.name} ({p.kind}{'' if p.decides else ', not deciding'}): {f.verdict.outcome}"
        for p, f in results
    )
    if partial:
        reason = f"Partial: only parts {', '.join(p.name for p, _ in results)} ran. " + reason
    effects = tuple(e for _, f in results for e in f.verdict.effects)
    return Verdict(outcome, reason, effects)


def reproduce_command(
    name: str,
    *,
    preset: str,
    workdir: str,
    data_dirs: DataDirs,
    seeds: Sequence[int],
    only: Sequence[str],
    overrides: Mapping[str, Any],
) -> str:
    """The shell command that reproduces an experiment's report: how this process was started (the
    script file or module, `cli.launch_command`; `dlresearch-experiment NAME` when no script ran),
    then the flags not at their defaults, each value shell-quoted."""

    def flag(name: str, value: Any) -> str:
        return f"--{name}={shlex.quote(_text(value))}"

    flags_used = [flag("preset", preset), flag("workdir", workdir)]
    flags_used += (
        [flag("dataset", data_dirs.dataset)] if data_dirs.dataset != DEFAULT_DATASET else []
    )
    flags_used += [flag("data_dir", data_dirs.dir)] if data_dirs.dir else []
    flags_used += [flag("cifar_dir", data_dirs.cifar_dir)] if data_dirs.cifar_dir else []
    flags_used += (
        [flag("seeds", ",".join(map(str, seeds)))] if seeds != DEFAULT_SEEDS[preset] else []
    )
    flags_used += [flag("parts", ",".join(only))] if only else []
    flags_used += [flag(f"config.{k}", v) for k, v in overrides.items()]
    launch = cli.launch_command() or f"dlresearch-experiment {shlex.quote(name)}"
    return f"{launch} {' '.join(flags_used)}"


def report_text(
    title: str,
    verdict: Verdict,
    *,
    preset: str,
    parts: Sequence[Part],
    command: str,
    seconds: float,
    provenance: str,
    sections: Sequence[str],
) -> str:
    """report.md: the verdict line, how it was produced, then each part's section."""
    return "\n".join(
        [
            f"# {title}",
            "",
            # "Verdict: <outcome>." ends the outcome with punctuation, so `grep -o "Verdict:
            # [a-z ]*"` reads exactly one of the three outcomes.
            f"Verdict: {verdict.outcome}. {verdict.reason}",
            "",
            f"Preset `{preset}` on {_datasets(parts)}, parts: {', '.join(p.name for p in parts)}. "
            f"Produced by `{command}`"
            + f"; {seconds:.0f} s in the last invocation (finished runs are read back, not retrained). "
            "Per-run metrics, configs and checkpoints are under `runs/<part>/<variant>/`; "
            "`results.csv` has one row per variant and seed, and one per effect a verdict states.",
            "",
            provenance,
            "",
            "How to read a verdict: every effect compares the arms seed by seed (they share seeds "
            "and data order) and comes with a 95% interval, the range of effects the runs are "
            "consistent with. **reproduced**: the whole interval lies on the side the paper claims, "
            "so the runs rule out no effect; **not reproduced**: the whole interval lies below the "
            "smallest effect the claim asserts, or on the opposite side; **inconclusive**: the "
            "interval reaches both sides of no effect (the result says what would decide it: about "
            "how many seeds, or a longer budget). Each part's result comes first in its section.",
            "",
            *sections,
        ]
    )


def _datasets(parts: Sequence[Part]) -> str:
    """The datasets the parts train on, e.g. 'Fashion-MNIST' or 'MNIST and CIFAR-10'."""
    names = dict.fromkeys(data.title(p.config.data.name) for p in parts)
    return " and ".join(names)


def write_index(outcomes: Sequence[ExperimentResult], workdir: str) -> None:
    """`report.md` in `workdir` linking every experiment's report with its verdict."""
    lines = [
        "# The classic ablations",
        "",
        "| experiment | verdict | time | why |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        link = os.path.relpath(os.path.join(o.workdir, "report.md"), workdir)
        lines.append(
            f"| [{o.experiment.title}]({link}) | {o.verdict.outcome} | {o.seconds:.0f} s | {o.verdict.reason} |"
        )
    atomic_write_text(os.path.join(workdir, "report.md"), "\n".join(lines) + "\n")


def _extension_text(tuning: Tuning) -> str:
    if not tuning.extensions:
        return "No grid is extended at this preset (a smoke run). "
    return (
        "Where a variant's selected rate lay at an edge of its grid, its grid was extended by a "
        f"decade beyond that edge ({tuning.per_decade} more rates) and the rate selected over the "
        f"union, at most {tuning.extensions} times; a blank cell is a rate that variant did not "
        "train. "
    )
