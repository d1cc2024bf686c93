"""Numbers over seeds: groups of members, the best value of a swept axis, and their summaries."""

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from dlresearch.ablation import stats
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import Target
from dlresearch.metrics import TRAIN_LOSS

# A net has converged when its training loss (mean over seeds) fell by less than CONVERGED_CHANGE
# of its value over the last CONVERGED_TAIL of training. Claims about final values are claims about
# trained nets: compared before they converge, a longer budget could reverse the verdict.
CONVERGED_CHANGE = 0.1
CONVERGED_TAIL = 0.2
CONVERGENCE_RULE = (
    "Inconclusive, whatever the intervals, if a net compared has not converged: its training loss "
    f"(mean over seeds) fell by {CONVERGED_CHANGE:.0%} or more over the last {CONVERGED_TAIL:.0%} "
    "of training (a longer budget is needed)."
)


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


def groups(runs: Mapping[str, Run]) -> dict[str, Group]:
    """Per variant name, one group with all the variant's members."""
    return {
        name: Group(run.variant.title, run, tuple(range(len(run.members))))
        for name, run in runs.items()
    }


def groups_by(runs: Mapping[str, Run], axis: str) -> list[Group]:
    """One group per variant and value of swept `axis`, its members being the seeds."""
    return [
        Group(f"{run.variant.title}, {axis} {value:g}", run, run.where(**{axis: value}))
        for run in runs.values()
        for value in sorted({m[axis] for m in run.members})
    ]


Score = Callable[[Run, tuple[int, ...]], float]


def final_score(key: str, *, lower: bool = True) -> Score:
    """Score of some members of a run: the mean final `key`, a non-finite value counting worst."""

    def score(run: Run, members: tuple[int, ...]) -> float:
        finals = run.final(key)[list(members)]
        mean = float(np.mean(np.where(np.isfinite(finals), finals, np.inf if lower else -np.inf)))
        return mean if lower else -mean

    return score


def target_score(target: Target) -> Score:
    """Score of some members of a run: mean steps to `target`, a miss counting as the whole run."""

    def score(run: Run, members: tuple[int, ...]) -> float:
        steps = [run.steps_to(target, m) for m in members]
        return mean_steps(steps, run.config.train.steps)

    return score


def best_value(run: Run, axis: str, score: Score) -> float:
    """The value of swept `axis` (e.g. "lr") whose members have the lowest `score`.

    Ties (e.g. no rate reached a target) go to the lowest mean final training loss.
    """
    loss = final_score(TRAIN_LOSS)
    values = sorted({m[axis] for m in run.members})
    return min(
        values,
        key=lambda v: (score(run, run.where(**{axis: v})), loss(run, run.where(**{axis: v}))),
    )


def best_groups(runs: Mapping[str, Run], axis: str, score: Score) -> dict[str, Group]:
    """Per variant name, its members at its best value of `axis` (e.g. its best learning rate)."""
    out = {}
    for name, run in runs.items():
        value = best_value(run, axis, score)
        out[name] = Group(f"{run.variant.title}, {axis} {value:g}", run, run.where(**{axis: value}))
    return out


def layer_matrix(group: Group, prefix: str, step: int | None) -> tuple[list[str], np.ndarray]:
    """Layer names (forward order) and per-member values [members, layers] of `prefix/<layer>`."""
    rows = [group.run.layer_values(prefix, m, step) for m in group.members]
    names = list(rows[0])
    return names, np.asarray([[row.get(n, math.nan) for n in names] for row in rows])


def grid_edge_note(group: Group, axis: str = "lr") -> str:
    """A warning when a group's value of swept `axis` is the lowest or highest of its run's grid
    (the best rate may lie outside it); '' when it is inside or nothing was swept."""
    grid = sorted({m[axis] for m in group.run.members})
    value = group.run.members[group.members[0]][axis]
    if len(grid) < 2 or grid[0] < value < grid[-1]:
        return ""
    edge = "lowest" if value == grid[0] else "highest"
    return (
        f"{group.label}: the selected {axis} {value:g} is the {edge} of the grid "
        f"({', '.join(f'{v:g}' for v in grid)}); a rate beyond it might do better."
    )


def tuning_edge_notes(runs: Mapping[str, Run]) -> list[str]:
    """`grid_edge_note` of every tuned run: whether the rate its tuning run selected is an edge of
    the tuning grid."""
    notes = []
    for run in runs.values():
        if run.tuning is not None:
            selected = run.tuning.where(lr=run.config.optim.lr)
            notes.append(grid_edge_note(Group(run.variant.title, run.tuning, selected)))
    return [note for note in notes if note]


def judged_members(groups: Mapping[str, Group]) -> dict[str, tuple[int, ...]]:
    """Per variant, the members of the group a verdict rests on (for `Findings.judged`)."""
    return {name: group.members for name, group in groups.items()}


def loss_drop(group: Group) -> float:
    """The fraction by which the mean training loss over seeds fell over the last
    `CONVERGED_TAIL` of training (from the last value logged before it to the final one); NaN
    where nothing was logged before it (convergence cannot be told)."""
    steps, _ = group.run.series(TRAIN_LOSS, group.members[0])
    loss = np.mean([group.run.series(TRAIN_LOSS, m)[1] for m in group.members], axis=0)
    before = np.flatnonzero(steps <= (1 - CONVERGED_TAIL) * steps[-1]) if len(steps) else []
    if not len(before):
        return math.nan
    return float((loss[before[-1]] - loss[-1]) / loss[before[-1]])


def convergence_note(compared: Sequence[Group]) -> str:
    falls = ", ".join(f"{g.label} {loss_drop(g):.1%}" for g in compared)
    return (
        f"Convergence: the training loss fell by {falls} over the last {CONVERGED_TAIL:.0%} of "
        f"training (converged: < {CONVERGED_CHANGE:.0%})."
    )


def unless_unconverged(verdict: stats.Verdict, compared: Sequence[Group]) -> stats.Verdict:
    """`verdict`, or inconclusive (stating it as measured) where a net compared has not converged
    (`CONVERGENCE_RULE`)."""
    falling = {g.label: drop for g in compared if not (drop := loss_drop(g)) < CONVERGED_CHANGE}
    if not falling:
        return verdict
    return stats.Verdict(
        stats.Outcome.INCONCLUSIVE,
        "Not every net compared has converged: the training loss of "
        + ", ".join(f"{label} fell {drop:.0%}" for label, drop in falling.items())
        + f" over the last {CONVERGED_TAIL:.0%} of training (converged: < "
        f"{CONVERGED_CHANGE:.0%}); needs a longer budget. As measured: {verdict.outcome}. "
        f"{verdict.reason}",
        verdict.effects,
    )
