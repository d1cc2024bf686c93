"""Ablation experiments: run a grid of variants over seeds, resume it, and report on it.

An experiment script (`experiments/<name>.py`) holds only the science, as an `Experiment`: for each
preset, `Part`s made of a base config, named `Variant`s (config overrides), the paper's claim and a
`judge` that turns the finished runs into tables, plots and a `Verdict` by a rule the script states.
This module does the rest:

- `run_grid`: every variant is ONE `train.run`, its seeds (and any `sweep.lr` grid) a vmapped sweep,
  in `WORKDIR/runs/<part>/<variant>`. Asked again, finished runs return at once and unfinished ones
  resume from their checkpoints (`train.run` does both).
- `run_experiment`: the whole experiment; writes `results.csv` (one row per variant and sweep member),
  the plots and `report.md` (claim, setup, tables, plots, ONE `Verdict:` line) into the workdir.
- `main`: the command line shared by every experiment script, and `main_all` for all of them.
"""

import csv
import dataclasses
import functools
import io
import json
import logging as pylogging
import math
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging
from matplotlib.figure import Figure
from ml_collections import config_flags

from dlresearch import config as config_lib
from dlresearch import data, train
from dlresearch.diagnostics import forward_order
from dlresearch.metrics import METRICS_FILE, atomic_write_text, read_jsonl
from dlresearch.registry import ConfigError, fail, parse_flags

PRESETS = ("quick", "paper", "test")
DEFAULT_SEEDS = {"quick": (0, 1, 2), "paper": (0, 1, 2, 3, 4), "test": (0, 1)}
INIT_DIAGNOSTICS_FILE = "init_diagnostics.json"


# -- what an experiment declares -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """One cell of a grid: a name and the config overrides (dotted field names) that make it."""

    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: str = ""  # for legends and tables; the name if empty

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclasses.dataclass(frozen=True)
class Target:
    """A level of a logged metric, e.g. 75% training accuracy, whose first crossing is measured."""

    metric: str
    threshold: float
    below: bool = False  # True for losses: the target is reached at or below the threshold

    def describe(self) -> str:
        return f"{self.metric} {'<=' if self.below else '>='} {self.threshold:g}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    reproduced: bool
    reason: str

    @property
    def word(self) -> str:
        return "reproduced" if self.reproduced else "not reproduced"


@dataclasses.dataclass(frozen=True)
class Plot:
    filename: str  # in the experiment workdir
    caption: str


@dataclasses.dataclass
class Findings:
    """What a part's judge returns: its verdict and what the report shows."""

    verdict: Verdict
    tables: list[str] = dataclasses.field(default_factory=list)  # markdown
    plots: list[Plot] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Part:
    """One claim of a paper and the grid that tests it.

    `judge(runs, outdir)` gets the finished runs by variant name and the directory for its plots.
    `rule` states, in words, how the judge decides; the report prints it beside the verdict.
    """

    name: str
    title: str
    claim: str
    source: str
    rule: str
    config: ml_collections.ConfigDict
    variants: tuple[Variant, ...]
    judge: Callable[[dict[str, "Run"], str], Findings]
    differences: str = ""  # how the setup differs from the paper's
    target: Target | None = None
    # Also measure the diagnostics of the freshly initialised state (train.run starts them after
    # the first chunk of steps).
    init_diagnostics: bool = False


@dataclasses.dataclass(frozen=True)
class Data:
    """Where the datasets are: MNIST from `mnist_dir` (else the embedded digits), CIFAR-10."""

    mnist_dir: str = ""
    cifar_dir: str = ""

    def mnist(self) -> dict[str, Any]:
        """Overrides for MNIST, or for scikit-learn's digits when no MNIST directory is given."""
        if self.mnist_dir:
            return {"data.name": "mnist", "data.dir": self.mnist_dir}
        return {"data.name": "digits", "data.dir": ""}

    def cifar10(self) -> dict[str, Any]:
        return {"data.name": "cifar10", "data.dir": self.cifar_dir}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment script's whole declaration; `parts(preset, data)` builds its grid."""

    name: str
    title: str
    parts: Callable[[str, Data], list[Part]]


# -- configs ---------------------------------------------------------------------------------------
def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted fields ("model.depth") set; unknown fields raise ConfigError."""
    config = ml_collections.ConfigDict(config.to_dict())
    for field, value in overrides.items():
        section = config
        *parents, leaf = field.split(".")
        try:
            for part in parents:
                section = section[part]
            if leaf not in section:
                raise KeyError(leaf)
        except (KeyError, TypeError):
            raise ConfigError(f"unknown config field {field!r}") from None
        section[leaf] = tuple(value) if isinstance(value, list) else value
    return config


def make_config(*overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """`base_config()` with each mapping of dotted overrides applied in turn."""
    config = config_lib.base_config()
    for mapping in overrides:
        config = apply_overrides(config, mapping)
    return config


def cadence(
    steps: int, *, logs: int = 100, evals: int = 20, diagnostics: int = 0, checkpoints: int = 4
) -> dict[str, int]:
    """Overrides for `steps` training steps with about `logs` train log lines, `evals`
    evaluations, `diagnostics` measurements (0 = none) and `checkpoints` checkpoints.

    Logging is never more often than every 10 steps (each is a host round trip), and every other
    interval is a multiple of the logging one, which is also the chunk of steps per compiled call:
    a chunk length compiles once, so intervals that do not divide each other would compile the
    training step again for every distinct gap between their boundaries.
    """
    log = max(10, steps // logs)

    def every(count: int) -> int:
        return max(1, round(steps / count / log)) * log if count else 0

    return {
        "train.steps": steps,
        "train.steps_per_call": log,
        "train.log_every_steps": log,
        "eval.every_steps": every(evals),
        "diagnostics.every_steps": every(diagnostics),
        "checkpoint.every_steps": every(checkpoints),
    }


# -- the runs --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """A finished (or stopped) variant: its members and everything they logged."""

    part: str
    variant: Variant
    config: ml_collections.ConfigDict
    workdir: str
    members: list[dict[str, float]]  # the swept values of each member (seed, lr, ...)
    history: list[list[dict[str, Any]]]  # per member, its metrics.jsonl records in step order
    diverged_at: list[int | None]
    num_train: int
    init_diagnostics: list[dict[str, float]]  # per member; empty dicts when not measured
    seconds: float  # wall time spent on this variant by this invocation

    @property
    def eval_split(self) -> str:
        return "validation" if self.config.data.holdout else "test"

    def series(self, key: str, member: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of `key` for one member (non-finite values as NaN)."""
        pairs = [(r["step"], _number(r[key])) for r in self.history[member] if key in r]
        if not pairs:
            return np.zeros(0, int), np.zeros(0)
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps), np.asarray(values, float)

    def final(self, key: str) -> np.ndarray:
        """The last logged value of `key` per member (NaN where never logged)."""
        return np.asarray([_last(self.series(key, m)[1]) for m in range(len(self.members))])

    def where(self, **values: float) -> tuple[int, ...]:
        """The members whose swept values match, e.g. `where(lr=0.1)`."""
        return tuple(
            i
            for i, m in enumerate(self.members)
            if all(math.isclose(m[k], v, rel_tol=1e-6) for k, v in values.items())
        )

    def steps_to(self, target: Target, member: int) -> int | None:
        steps, values = self.series(target.metric, member)
        return steps_to_target(steps, values, target.threshold, below=target.below)

    def epochs(self, steps: np.ndarray) -> np.ndarray:
        return steps * self.config.train.batch_size / self.num_train

    def layer_values(self, prefix: str, member: int, step: int | None = None) -> dict[str, float]:
        """Per-layer diagnostics `prefix/<layer>` in forward order, at `step` (None = at init)."""
        record = self.init_diagnostics[member]
        start = prefix + "/"
        if step is not None:
            record = next(
                (
                    r
                    for r in self.history[member]
                    if r["step"] == step and any(k.startswith(start) for k in r)
                ),
                {},
            )
        values = {k[len(start) :]: _number(v) for k, v in record.items() if k.startswith(start)}
        return {k: values[k] for k in sorted(values, key=forward_order)}


def _number(value: Any) -> float:
    # Non-finite values are stored as strings ("nan", "inf") to keep the JSON lines valid.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan


def steps_to_target(
    steps: Sequence[int], values: Sequence[float], threshold: float, *, below: bool = False
) -> int | None:
    """The first logged step whose value reaches `threshold` (None if none does).

    The resolution is the logging interval: train metrics are means over the steps since the last
    log line, so the step reported is the end of the first interval whose mean reaches the target.
    """
    for step, value in zip(steps, values, strict=True):
        if (value <= threshold) if below else (value >= threshold):
            return int(step)
    return None


def _split_history(records: list[dict[str, Any]], num_members: int) -> list[list[dict[str, Any]]]:
    history: list[list[dict[str, Any]]] = [[] for _ in range(num_members)]
    for record in records:
        history[record.get("member", 0)].append(record)
    return history


@functools.cache
def _num_train(data_json: str) -> int:
    """Training examples of a data config (loading it also checks the files before any training)."""
    return len(data.load(ml_collections.ConfigDict(json.loads(data_json))).train_labels)


def _check_data(part: str, config: ml_collections.ConfigDict) -> int:
    try:
        return _num_train(json.dumps(config.data.to_dict(), sort_keys=True))
    except ConfigError as error:
        flag = "--cifar_dir" if config.data.name == "cifar10" else "--data_dir"
        raise ConfigError(f"part {part!r}: {error} (set {flag}, or leave the part out)") from None


def _initial_diagnostics(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, float]]:
    """Diagnostics of the freshly initialised members, measured once and kept in the run's workdir."""
    path = os.path.join(workdir, INIT_DIAGNOSTICS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    trainer = train.Trainer(config)
    values = trainer.measure(trainer.par.to_run(trainer.init_state()))
    out = [{k: float(v[i]) for k, v in values.items()} for i in range(len(trainer.members))]
    atomic_write_text(path, json.dumps(out))
    return out


def run_configs(
    part: Part, seeds: Sequence[int], overrides: Mapping[str, Any]
) -> list[ml_collections.ConfigDict]:
    """The config of every variant: part base, then the variant, the seeds, the user's overrides."""
    configs = []
    for variant in part.variants:
        config = apply_overrides(part.config, variant.overrides)
        config.sweep.seed = tuple(int(s) for s in seeds)
        config = apply_overrides(config, overrides)
        config_lib.validate(config)
        configs.append(config)
    return configs


def run_grid(
    part: Part,
    configs: Sequence[ml_collections.ConfigDict],
    workdir: str,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Run]:
    """Train (or resume, or just read back) every variant of `part`; its runs by variant name."""
    runs = {}
    for i, (variant, config) in enumerate(zip(part.variants, configs, strict=True)):
        run_dir = os.path.join(workdir, "runs", part.name, variant.name)
        name = f"{part.name}/{variant.name} ({i + 1}/{len(configs)})"
        members = config_lib.sweep_members(config)
        log(f"{name}: {len(members)} member(s) x {config.train.steps} steps ...")
        start = time.perf_counter()
        result = train.run(config, run_dir)
        init = (
            _initial_diagnostics(config, run_dir)
            if part.init_diagnostics
            else [{} for _ in members]
        )
        seconds = time.perf_counter() - start
        run = Run(
            part=part.name,
            variant=variant,
            config=config,
            workdir=run_dir,
            members=result.members,
            history=_split_history(
                read_jsonl(os.path.join(run_dir, METRICS_FILE)), len(result.members)
            ),
            diverged_at=result.diverged_at,
            num_train=_check_data(part.name, config),
            init_diagnostics=init,
            seconds=seconds,
        )
        log(f"{name}: done in {seconds:.0f} s at step {result.step}; {_brief(run)}")
        runs[variant.name] = run
    return runs


def _brief(run: Run) -> str:
    parts = []
    for key in ("train/loss", f"{run.eval_split}/accuracy"):
        values = run.final(key)
        if np.isfinite(values).any():
            parts.append(f"{key} {mean_std(values)}")
    diverged = sum(d is not None for d in run.diverged_at)
    if diverged:
        parts.append(f"{diverged}/{len(run.members)} diverged")
    return ", ".join(parts)


# -- numbers and tables ----------------------------------------------------------------------------
def mean_std(values: Iterable[float], fmt: str = ".3f", scale: float = 1.0) -> str:
    """'mean ± std' over the finite values (std over seeds, ddof=0); 'n/a' when there are none."""
    array = np.asarray(list(values), float) * scale
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return "n/a"
    text = f"{finite.mean():{fmt}} ± {finite.std():{fmt}}"
    return text if finite.size == array.size else f"{text} ({finite.size}/{array.size})"


def steps_summary(steps: Sequence[int | None], total: int) -> str:
    """Steps to a target over seeds: 'mean ± std', with how many reached it when not all did."""
    reached = [s for s in steps if s is not None]
    if not reached:
        return f"not reached in {total:,}"
    text = mean_std(reached, ",.0f")
    return text if len(reached) == len(steps) else f"{text} ({len(reached)}/{len(steps)} reached)"


def mean_steps(steps: Sequence[int | None], total: int) -> float:
    """Mean steps to a target, counting a seed that never reached it as `total` (a lower bound)."""
    return float(np.mean([total if s is None else s for s in steps]))


def steps_phrase(steps: Sequence[int | None], total: int) -> str:
    """Mean steps to a target for a verdict's reason: '320', '>= 350 (2/3 seeds)', 'never'."""
    reached = [x for x in steps if x is not None]
    if not reached:
        return f"never (in {total:,})"
    mean = f"{mean_steps(steps, total):,.0f}"
    return mean if len(reached) == len(steps) else f">= {mean} ({len(reached)}/{len(steps)} seeds)"


def clearly_below(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the mean of `a` is below the mean of `b` by more than the larger of their standard
    deviations over seeds: a smaller difference is a tie within the seeds' spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(b.mean() - a.mean() > max(a.std(), b.std()))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Group:
    """Members of one run aggregated as one line of a table or one curve of a plot (the seeds)."""

    label: str
    run: Run
    members: tuple[int, ...]

    def final(self, key: str) -> np.ndarray:
        return self.run.final(key)[list(self.members)]

    def error_percent(self, key: str) -> np.ndarray:
        """Per seed, 100 x (1 - the final value of the accuracy `key`)."""
        return 100 * (1 - self.final(key))

    def steps_to(self, target: Target) -> list[int | None]:
        return [self.run.steps_to(target, m) for m in self.members]


def groups(runs: Mapping[str, Run]) -> list[Group]:
    """One group per variant, with all its members."""
    return [Group(run.variant.title, run, tuple(range(len(run.members)))) for run in runs.values()]


def final_score(key: str, *, lower: bool = True) -> Callable[[Run, tuple[int, ...]], float]:
    """Score of some members of a run: the mean final `key`, a non-finite value counting worst."""

    def score(run: Run, members: tuple[int, ...]) -> float:
        finals = run.final(key)[list(members)]
        mean = float(np.mean(np.where(np.isfinite(finals), finals, np.inf if lower else -np.inf)))
        return mean if lower else -mean

    return score


def target_score(target: Target) -> Callable[[Run, tuple[int, ...]], float]:
    """Score of some members of a run: mean steps to `target`, a miss counting as the whole run."""

    def score(run: Run, members: tuple[int, ...]) -> float:
        steps = [run.steps_to(target, m) for m in members]
        return mean_steps(steps, run.config.train.steps)

    return score


def best_value(run: Run, axis: str, score: Callable[[Run, tuple[int, ...]], float]) -> float:
    """The value of swept `axis` (e.g. "lr") whose members have the lowest `score`.

    Ties (e.g. no rate reached a target) go to the lowest mean final training loss.
    """
    loss = final_score("train/loss")
    values = sorted({m[axis] for m in run.members})
    return min(
        values,
        key=lambda v: (score(run, run.where(**{axis: v})), loss(run, run.where(**{axis: v}))),
    )


def best_groups(
    runs: Mapping[str, Run], axis: str, score: Callable[[Run, tuple[int, ...]], float]
) -> list[Group]:
    """Per variant, the members at its best value of `axis` (e.g. its best learning rate)."""
    out = []
    for run in runs.values():
        value = best_value(run, axis, score)
        out.append(Group(f"{run.variant.title}, {axis} {value:g}", run, run.where(**{axis: value})))
    return out


def groups_by(runs: Mapping[str, Run], axis: str) -> list[Group]:
    """One group per variant and value of swept `axis`, its members being the seeds."""
    return [
        Group(f"{run.variant.title}, {axis} {value:g}", run, run.where(**{axis: value}))
        for run in runs.values()
        for value in sorted({m[axis] for m in run.members})
    ]


def summary_table(
    rows: Sequence[Group],
    target: Target | None = None,
    extra: Mapping[str, Callable[[Group], str]] | None = None,
) -> str:
    """Means ± std over seeds of each group's final metrics, steps to `target`, divergences.

    `extra` maps a column header to a function of a group giving its per-member values.
    """
    split = rows[0].run.eval_split
    headers = ["variant", "final train loss", "final train acc.", f"final {split} acc."]
    if target:
        headers.append(f"steps to {target.describe()}")
    extra = extra or {}
    headers += [*extra, "diverged"]
    lines = []
    for group in rows:
        line = [
            group.label,
            mean_std(group.final("train/loss")),
            mean_std(group.final("train/accuracy")),
            mean_std(group.final(f"{split}/accuracy")),
        ]
        if target:
            line.append(steps_summary(group.steps_to(target), group.run.config.train.steps))
        line += [fn(group) for fn in extra.values()]
        diverged = [group.run.diverged_at[m] for m in group.members]
        line.append(f"{sum(d is not None for d in diverged)}/{len(diverged)}")
        lines.append(line)
    return markdown_table(headers, lines)


# -- plots -----------------------------------------------------------------------------------------
def _aligned(run: Run, key: str, members: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Steps logged by any of `members` and their values [members, steps] (NaN where missing)."""
    series = [run.series(key, m) for m in members]
    steps = np.unique(np.concatenate([s for s, _ in series])) if series else np.zeros(0, int)
    values = np.full((len(series), len(steps)), np.nan)
    for row, (s, v) in enumerate(series):
        values[row, np.searchsorted(steps, s)] = v
    return steps, values


def _band(ax: Any, x: np.ndarray, values: np.ndarray, label: str, **style: Any) -> None:
    """Mean over the rows of `values` with a ±std band (finite values only)."""
    with warnings.catch_warnings():
        # A column where every seed diverged is all NaN: its NaN mean is what should be drawn.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    (line,) = ax.plot(x, mean, label=label, **style)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _figure(panels: int, width: float = 5.5, height: float = 4.0, **kwargs: Any) -> tuple:
    """A figure with one row of `panels` axes. `Figure` draws with the Agg canvas, without pyplot's
    global state, so experiments run headless and leave no figures open."""
    fig = Figure(figsize=(width * panels, height))
    return fig, fig.subplots(1, panels, squeeze=False, **kwargs)[0]


def _save(fig: Figure, outdir: str, filename: str) -> str:
    fig.tight_layout()
    tmp = os.path.join(outdir, f".{filename}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, os.path.join(outdir, filename))  # atomic, as every other output
    return filename


def plot_curves(
    outdir: str,
    filename: str,
    rows: Sequence[Group],
    key: str,
    *,
    title: str,
    ylabel: str = "",
    log_y: bool = False,
    epochs: bool = False,
    hline: float | None = None,
    panels: Sequence[tuple[str, Sequence[Group]]] = (),
) -> str:
    """`key` over training, mean ± std over each group's seeds; one panel, or one per `panels`."""
    panels = panels or [(title, rows)]
    fig, axes = _figure(len(panels))
    for ax, (panel_title, panel_rows) in zip(axes, panels, strict=True):
        for group in panel_rows:
            steps, values = _aligned(group.run, key, group.members)
            x = group.run.epochs(steps) if epochs else steps
            _band(ax, x, values, group.label)
        if hline is not None:
            ax.axhline(hline, color="gray", linestyle=":", linewidth=1)
        ax.set_title(panel_title)
        ax.set_xlabel("epochs" if epochs else "steps")
        ax.set_ylabel(ylabel or key)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, outdir, filename)


def layer_matrix(group: Group, prefix: str, step: int | None) -> tuple[list[str], np.ndarray]:
    """Layer names (forward order) and per-member values [members, layers] of `prefix/<layer>`."""
    rows = [group.run.layer_values(prefix, m, step) for m in group.members]
    names = list(rows[0])
    return names, np.asarray([[row.get(n, math.nan) for n in names] for row in rows])


def plot_layers(
    outdir: str,
    filename: str,
    panels: Sequence[tuple[str, str, Sequence[tuple[Group, int | None]]]],
    *,
    log_y: bool = True,
) -> str:
    """Per-layer diagnostics vs layer index, mean ± std over seeds. Each panel is (title,
    prefix such as "diag/grad_norm", lines); each line a (group, step), step None = at init."""
    fig, axes = _figure(len(panels))
    for ax, (title, prefix, lines) in zip(axes, panels, strict=True):
        names: list[str] = []
        for group, step in lines:
            names, values = layer_matrix(group, prefix, step)
            when = "init" if step is None else f"step {step:,}"
            _band(ax, np.arange(len(names)), values, f"{group.label}, {when}", marker="o")
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=60, fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("layer (input -> output)")
        ax.set_ylabel(prefix.removeprefix("diag/"))
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, outdir, filename)


def _short(layer: str) -> str:
    return layer.replace("hidden_", "h").replace("stage", "s").replace("_block", "b")


def plot_percentiles(
    outdir: str, filename: str, rows: Sequence[Group], *, title: str, prefix: str = "diag/unit_p"
) -> str:
    """The 15th/50th/85th percentiles of one unit's input over training, one panel per group, for
    the group's first member (one network, as in the BatchNorm paper's Fig. 1b-c)."""
    fig, axes = _figure(len(rows), 5.0, 3.6, sharey=True)
    for ax, group in zip(axes, rows, strict=True):
        for q, style in ((15, ":"), (50, "-"), (85, "--")):
            steps, values = group.run.series(f"{prefix}{q}", group.members[0])
            ax.plot(steps, values, style, color="C0", label=f"{q}th percentile")
        ax.set_title(f"{group.label} (seed {group.run.members[group.members[0]]['seed']:g})")
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("input of a last-hidden-layer unit")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, outdir, filename)


# -- results.csv and report.md ---------------------------------------------------------------------
def results_rows(parts: Sequence[Part], runs: Mapping[str, Mapping[str, Run]]) -> list[dict]:
    """One row per (variant, member): its settings, swept values, final metrics, target, divergence."""
    rows = []
    for part in parts:
        for variant in part.variants:
            run = runs[part.name][variant.name]
            swept = config_lib.swept_axes(run.config)
            settings = {k: _csv_value(v) for k, v in variant.overrides.items() if "sweep." not in k}
            split = run.eval_split
            finals = {
                column: run.final(key)
                for column, key in (
                    ("train_loss", "train/loss"),
                    ("train_accuracy", "train/accuracy"),
                    ("test_loss", f"{split}/loss"),
                    ("test_accuracy", f"{split}/accuracy"),
                )
            }
            for m, member in enumerate(run.members):
                row: dict[str, Any] = {"part": part.name, "variant": variant.name, **settings}
                row.update({axis: f"{member[axis]:g}" for axis in swept})
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
                rows.append(row)
    return rows


def _csv_value(value: Any) -> str:
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


def config_summary(config: ml_collections.ConfigDict, varied: Collection[str] = ()) -> str:
    """The settings that define a run, in one line; fields named in `varied` read 'per variant'."""
    c = config

    def show(field: str, text: str) -> str:
        name = {"optim.name": "optimizer", "sweep.lr": "lr"}.get(field, field.split(".")[-1])
        return f"{name} per variant" if field in varied else text

    dataset = {"mnist": "MNIST", "cifar10": "CIFAR-10"}.get(c.data.name, c.data.name)
    if c.data.holdout:
        dataset += f" (the last {c.data.holdout:,} training examples held out for validation)"
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
    return f"{dataset}; {model}; {optimizer}; batch {c.train.batch_size}, {c.train.steps:,} steps"


def _variant_line(variant: Variant) -> str:
    settings = ", ".join(f"`{k}={_csv_value(v)}`" for k, v in variant.overrides.items())
    return f"- **{variant.title}**: {settings or 'the base config'}"


def part_section(
    part: Part, runs: Mapping[str, Run], findings: Findings, seeds: Sequence[int]
) -> str:
    first = next(iter(runs.values()))
    seconds = sum(r.seconds for r in runs.values())
    lines = [
        f"## {part.title}",
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
    lines += [
        f"**Rule.** {part.rule}",
        "",
        f"**Result: {findings.verdict.word}** — {findings.verdict.reason}",
        "",
        f"Training time of this part in this invocation: {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def verdict_line(results: Sequence[tuple[Part, Findings]]) -> Verdict:
    """Reproduced when every part is; the reason lists each part's measured reason."""
    reproduced = all(f.verdict.reproduced for _, f in results)
    if len(results) == 1:
        return Verdict(reproduced, results[0][1].verdict.reason)
    reason = "; ".join(f"{p.name}: {f.verdict.word}, {f.verdict.reason}" for p, f in results)
    return Verdict(reproduced, reason)


@dataclasses.dataclass
class Outcome:
    experiment: Experiment
    workdir: str
    verdict: Verdict
    seconds: float


def run_experiment(
    experiment: Experiment,
    *,
    preset: str,
    workdir: str,
    data_dirs: Data | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Outcome:
    """Run (or resume) `experiment`'s preset in `workdir` and write results.csv, plots, report.md.

    Every config is validated and every dataset checked before the first step is trained, so a bad
    setting fails fast with `ConfigError`.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not known; allowed values: {', '.join(PRESETS)}")
    seeds = tuple(DEFAULT_SEEDS[preset] if seeds is None else seeds)
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    data_dirs = data_dirs or Data()
    parts = experiment.parts(preset, data_dirs)
    names = [p.name for p in parts]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(
            f"parts={','.join(unknown)} not known; parts of {experiment.name}: {', '.join(names)}"
        )
    parts = [p for p in parts if not only or p.name in only]
    configs = {p.name: run_configs(p, seeds, overrides or {}) for p in parts}
    for part in parts:
        for config in configs[part.name]:
            _check_data(part.name, config)

    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    runs = {}
    for part in parts:
        runs[part.name] = run_grid(
            part, configs[part.name], workdir, log=lambda s: log(f"[{experiment.name}] {s}")
        )
    results = [(part, part.judge(runs[part.name], workdir)) for part in parts]
    verdict = verdict_line(results)
    seconds = time.perf_counter() - start

    atomic_write_text(os.path.join(workdir, "results.csv"), csv_text(results_rows(parts, runs)))
    sections = [part_section(p, runs[p.name], f, seeds) for p, f in results]
    flags_used = [f"--preset={preset}", f"--workdir={workdir}"]
    flags_used += [f"--data_dir={data_dirs.mnist_dir}"] if data_dirs.mnist_dir else []
    flags_used += [f"--cifar_dir={data_dirs.cifar_dir}"] if data_dirs.cifar_dir else []
    flags_used += [f"--seeds={','.join(map(str, seeds))}"] if seeds != DEFAULT_SEEDS[preset] else []
    flags_used += [f"--parts={','.join(only)}"] if only else []
    flags_used += [f"--config.{k}={_csv_value(v)}" for k, v in (overrides or {}).items()]
    command = f"python -m experiments.{experiment.name} {' '.join(flags_used)}"
    report = "\n".join(
        [
            f"# {experiment.title}",
            "",
            # "Verdict: <word>." ends the word with punctuation, so `grep -o "Verdict: [a-z ]*"`
            # reads exactly "Verdict: reproduced" or "Verdict: not reproduced".
            f"Verdict: {verdict.word}. {verdict.reason}",
            "",
            f"Preset `{preset}`, parts: {', '.join(p.name for p in parts)}. Produced by `{command}`"
            + f"; {seconds:.0f} s in the last invocation (finished runs are read back, not retrained). "
            "Per-run metrics, configs and checkpoints are under `runs/<part>/<variant>/`; "
            "`results.csv` has one row per variant and seed.",
            "",
            *sections,
        ]
    )
    atomic_write_text(os.path.join(workdir, "report.md"), report)
    log(f"[{experiment.name}] Verdict: {verdict.word}. {verdict.reason} ({seconds:.0f} s)")
    return Outcome(experiment, workdir, verdict, seconds)


def write_index(outcomes: Sequence[Outcome], workdir: str) -> None:
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
            f"| [{o.experiment.title}]({link}) | {o.verdict.word} | {o.seconds:.0f} s | {o.verdict.reason} |"
        )
    atomic_write_text(os.path.join(workdir, "report.md"), "\n".join(lines) + "\n")


# -- command line ----------------------------------------------------------------------------------
def _define_flags() -> Any:
    """The flags of every experiment script, defined when a script runs (not on import)."""
    flags.DEFINE_enum("preset", "quick", list(PRESETS), "quick (minutes on a CPU), paper, test.")
    flags.DEFINE_string(
        "workdir", None, "Experiment directory: runs/, results.csv, *.png, report.md."
    )
    flags.DEFINE_string("data_dir", "", "MNIST IDX files; without it the embedded digits stand in.")
    flags.DEFINE_string(
        "cifar_dir", "", "CIFAR-10 binary files (the paper presets' CIFAR-10 parts)."
    )
    flags.DEFINE_list("seeds", None, "Seeds (default: 3 for quick, 5 for paper, 2 for test).")
    flags.DEFINE_list("parts", [], "Run only these parts (default: all of the preset).")
    flags.mark_flag_as_required("workdir")
    return config_flags.DEFINE_config_dict(
        "config",
        config_lib.base_config(),
        "Overrides applied to every run: --config.<field>=<value>.",
    )


class _QuietRuns(pylogging.Filter):
    """Inside an experiment, a run's progress line passes at most every 30 s; other INFO never."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf

    def filter(self, record: pylogging.LogRecord) -> bool:
        if record.levelno >= pylogging.WARNING:
            return True
        if not record.pathname.endswith(os.path.join("dlresearch", "train.py")):
            return False
        if time.monotonic() - self._last < 30:
            return False
        self._last = time.monotonic()
        return True


def _run_from_flags(experiments: Sequence[Experiment], config_flag: Any) -> list[Outcome]:
    fv = flags.FLAGS
    try:
        seeds = None if fv.seeds is None else [int(s) for s in fv.seeds]
    except ValueError:
        fail(f"--seeds={','.join(fv.seeds)} must be integers")
    if fv.parts and len(experiments) > 1:
        fail("--parts selects parts of one experiment; run that experiment's script instead")
    dirs = Data(fv.data_dir, fv.cifar_dir)
    overrides = config_flags.get_override_values(fv[config_flag.name])
    workdir = fv.workdir
    outcomes = []
    try:
        for experiment in experiments:
            where = workdir if len(experiments) == 1 else os.path.join(workdir, experiment.name)
            outcomes.append(
                run_experiment(
                    experiment,
                    preset=fv.preset,
                    workdir=where,
                    data_dirs=dirs,
                    seeds=seeds,
                    overrides=overrides,
                    only=fv.parts,
                )
            )
    except ConfigError as error:
        fail(str(error))
    return outcomes


def main(experiment: Experiment) -> None:
    """The command line of one experiment script (`python -m experiments.<name> ...`)."""
    main_all([experiment])


def main_all(experiments: Sequence[Experiment]) -> None:
    """Run every experiment, each in WORKDIR/<name> when there are several, and an index report."""
    try:
        # config_flags reads the --config.<field> overrides from sys.argv when the flag is defined.
        config_flag = _define_flags()
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        fail(f"bad config override: {error}")

    def run(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.get_absl_handler().addFilter(_QuietRuns())
        outcomes = _run_from_flags(experiments, config_flag)
        if len(experiments) > 1:
            write_index(outcomes, flags.FLAGS.workdir)
            print(f"index: {os.path.join(flags.FLAGS.workdir, 'report.md')}")

    app.run(run, flags_parser=parse_flags)
