"""PNG figures of groups over training or over layers, mean ± std over each group's seeds."""

import os
import warnings
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dlresearch.ablation.measures import Group, layer_matrix
from dlresearch.ablation.runs import Run


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


def figure(panels: int, width: float = 5.5, height: float = 4.0, **kwargs: Any) -> tuple:
    """A figure with one row of `panels` axes: (figure, axes). `Figure` draws with the Agg canvas,
    without pyplot's global state, so experiments run headless and leave no figures open."""
    fig = Figure(figsize=(width * panels, height))
    return fig, fig.subplots(1, panels, squeeze=False, **kwargs)[0]


def save(fig: Figure, outdir: str, filename: str) -> str:
    """Write `fig` to `outdir/filename` (atomically) and return the filename, for the report."""
    fig.tight_layout()
    tmp = os.path.join(outdir, f".{filename}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, os.path.join(outdir, filename))  # atomic, as every other output
    return filename


def plot_curves(
    outdir: str,
    filename: str,
    rows: Iterable[Group],
    key: str,
    *,
    title: str,
    ylabel: str = "",
    log_y: bool = False,
    epochs: bool = False,
    hline: float | None = None,
    panels: Sequence[tuple[str, Iterable[Group]]] = (),
) -> str:
    """`key` over training, mean ± std over each group's seeds; one panel, or one per `panels`."""
    panels = panels or [(title, rows)]
    fig, axes = figure(len(panels))
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
    return save(fig, outdir, filename)


def plot_layers(
    outdir: str,
    filename: str,
    panels: Sequence[tuple[str, str, Iterable[tuple[Group, int | None]]]],
    *,
    log_y: bool = True,
) -> str:
    """Per-layer diagnostics vs layer index, mean ± std over seeds. Each panel is (title,
    prefix such as "diag/grad_norm", lines); each line a (group, step), step None = at init."""
    fig, axes = figure(len(panels))
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
    return save(fig, outdir, filename)


def _short(layer: str) -> str:
    return layer.replace("hidden_", "h").replace("stage", "s").replace("_block", "b")


def plot_percentiles(
    outdir: str, filename: str, rows: Collection[Group], *, title: str, prefix: str = "diag/unit_p"
) -> str:
    """The 15th/50th/85th percentiles of one unit's input over training, one panel per group, for
    the group's first member (one network, as in the BatchNorm paper's Fig. 1b-c)."""
    fig, axes = figure(len(rows), 5.0, 3.6, sharey=True)
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
    return save(fig, outdir, filename)
