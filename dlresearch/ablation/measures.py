"""Numbers over seeds: groups of members, the best value of a swept axis, and their summaries."""

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import ml_collections
import numpy as np

from dlresearch import data
from dlresearch.ablation import stats
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import MAX_EXTENSIONS, Target
from dlresearch.metrics import TRAIN_LOSS

# A comparison of values at a budget is settled (`settled`) when its verdict is the same at
# SETTLED_WINDOW x the budget and at the budget, and also where each seed's values continue the
# change they made over that window linearly to SETTLED_HORIZON x the budget. Fixed before any run
# judged by it (README, "Value at a budget").
SETTLED_WINDOW = 0.8
SETTLED_HORIZON = 10.0
SETTLED_RULE = (
    "A decided comparison stands only if it is settled on the compared measure itself: the same "
    f"outcome at {SETTLED_WINDOW:g}x and 1x the budget, and the same again where each net's "
    f"per-seed values continue their change over that window linearly to {SETTLED_HORIZON:g}x "
    "the budget, or stop, in every combination of the nets (whichever way they move); "
    "otherwise inconclusive (needs a longer budget)."
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


def matched_steps(budget: int, fractions: Sequence[float]) -> list[int]:
    """The step of each matched budget `fraction x budget` (at least 1), as `at_budgets` places
    them."""
    return [max(1, round(fraction * budget)) for fraction in fractions]


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

    def at(self, key: str, step: int) -> np.ndarray:
        """Per seed, the last value of `key` logged at or before `step` (NaN where none was)."""
        return self.run.prefix(step).final(key)[list(self.members)]

    def steps_to(self, target: Target) -> list[int | None]:
        return [self.run.steps_to(target, m) for m in self.members]

    def censored_steps(self, target: Target) -> list[float]:
        """Per seed, steps to `target`; `math.inf` for a seed that never reached it (censored)."""
        return [math.inf if s is None else float(s) for s in self.steps_to(target)]


def unreached_note(compared: Sequence[Group], target: Target) -> list[str]:
    """A note when no member of the `compared` groups reached `target` within its budget: the
    target is out of reach of these nets at this budget on this dataset, so every effect measured
    at it is unbounded (inconclusive), never a refutation. Empty when any member reached it."""
    if any(s is not None for group in compared for s in group.steps_to(target)):
        return []
    names = " and ".join(group.label for group in compared)
    return [
        f"No run of {names} reached {target.describe()} within "
        f"{compared[0].run.config.train.steps:,} steps: the target is out of reach of these nets "
        "at this budget on this dataset, so the effects at it are unbounded and inconclusive "
        "(not a refutation)."
    ]


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


def edge_side(grid: Iterable[float], value: float) -> Literal["low", "high"] | None:
    """Which edge of `grid` `value` is; None inside it (or for a grid of fewer than two values)."""
    grid = sorted(grid)
    if len(grid) < 2 or grid[0] < value < grid[-1]:
        return None
    return "low" if value == grid[0] else "high"


def grid_edge_note(group: Group, axis: str = "lr") -> str:
    """A warning when a group's value of swept `axis` is the lowest or highest of its run's grid
    (the best rate may lie outside it); '' when it is inside or nothing was swept."""
    grid = sorted({m[axis] for m in group.run.members})
    value = group.run.members[group.members[0]][axis]
    side = edge_side(grid, value)
    if side is None:
        return ""
    edge = "lowest" if side == "low" else "highest"
    return (
        f"{group.label}: the selected {axis} {value:g} is the {edge} of the grid "
        f"({', '.join(f'{v:g}' for v in grid)}); a rate beyond it might do better."
    )


def tuning_edge_notes(runs: Mapping[str, Run]) -> list[str]:
    """What every tuned run's tuning says of its selected rate's place in the arm's final grid
    (the preset's grid and its extensions): still at an edge (`grid_edge_note`; after the
    extensions the rule allows), or the highest rate below an extension that diverged."""
    notes = []
    for run in runs.values():
        if run.tuning is not None:
            notes += _tuning_notes(run.variant.title, run.tuning, run.config.optim.lr)
    return notes


def _tuning_notes(label: str, tuning: Run, lr: float) -> list[str]:
    notes = []
    edge = grid_edge_note(Group(label, tuning, tuning.where(lr=lr)))
    if edge and tuning.extensions:
        edge += (
            f" It is still at that edge after {len(tuning.extensions)} extension(s) of the grid "
            f"by a decade on that side, the most the tuning rule allows ({MAX_EXTENSIONS})."
        )
    notes += [edge] if edge else []
    for added in tuning.extensions:
        below = [m["lr"] for m in tuning.members if m["lr"] < min(added)]
        diverged = [
            v for v in added if any(tuning.diverged_at[m] is not None for m in tuning.where(lr=v))
        ]
        if diverged and lr < min(added) and max(below) == lr:
            notes.append(
                f"{label}: the selected lr {lr:g} was the highest of its grid; the decade above "
                f"it diverged at lr {', '.join(f'{v:g}' for v in diverged)} (on a tuning seed), "
                f"so {lr:g} is the highest stable rate tried."
            )
    return notes


def judged_members(groups: Mapping[str, Group]) -> dict[str, tuple[int, ...]]:
    """Per variant, the members of the group a verdict rests on (for `Findings.judged`)."""
    return {name: group.members for name, group in groups.items()}


Nets = dict[tuple[int, str], np.ndarray]  # per (budget index, net name), per-seed values


def settled(
    values: Callable[[float], Nets], decide: Callable[[Nets], list[stats.Verdict]]
) -> list[stats.Verdict]:
    """`decide(values(1.0))`, each comparison made inconclusive where it is not settled
    (`SETTLED_RULE`).

    `values(scale)` gives each net's per-seed values at `scale` times each budget; `decide`
    judges every comparison of the part from them together (e.g. at Holm-adjusted p-values).
    Each net's change over the window is continued linearly to the horizon, or stopped (a curve
    that levels off lies between the two: linear continuation overshoots it), in every
    combination of the nets, whichever way they move and whichever verdict it would favour: the
    verdict must be the same in each, and at the window's start.
    """
    now, earlier = values(1.0), values(SETTLED_WINDOW)
    factor = (SETTLED_HORIZON - 1) / (1 - SETTLED_WINDOW)
    later = {key: now[key] + factor * (now[key] - earlier[key]) for key in now}
    names = sorted({name for _, name in now})
    variants = [earlier] + [
        {key: later[key] if key[1] in continued else now[key] for key in now}
        for r in range(1, len(names) + 1)
        for continued in itertools.combinations(names, r)
    ]
    judged = [decide(nets) for nets in variants]
    out = []
    for i, verdict in enumerate(decide(now)):
        others = {v[i].outcome for v in judged}
        if others == {verdict.outcome}:
            out.append(verdict)
            continue
        why = (
            f"Not settled: at {SETTLED_WINDOW:g}x the budget, or with a net's change over that "
            f"window continued to {SETTLED_HORIZON:g}x the budget, it can be "
            f"{' or '.join(sorted(str(o) for o in others - {verdict.outcome}))}; needs a longer "
            f"budget. As measured: {verdict.outcome}. "
        )
        out.append(stats.Verdict(stats.Outcome.INCONCLUSIVE, why + verdict.reason, verdict.effects))
    return out


# Speed at targets: a speed claim without targets of its own ("faster convergence") is judged by the
# steps to the training error (or loss) halved from its chance level once, twice and three times;
# relative to chance, so no level of one dataset enters it. Fixed before any run it judges.
HALVINGS = (2, 4, 8)
SPEED_RULE = (
    "Per evaluation seed, the steps to each target: the first step at which the statistic's mean "
    "over the trailing 20 steps, computed at every step, reaches it (a seed that never gets there "
    "is censored at the budget). Each ratio, the claimed-slower net's steps over the "
    "claimed-faster net's, paired over seeds (t on log ratios; the exact sign-flip test where a "
    "run is censored or every seed gives the same ratio, its 95% interval unbounded below 6 "
    "seeds), with p-values Holm-adjusted over every ratio of the part: reproduced if every "
    "interval lies above 1x, not reproduced if any lies below 1x at its Holm-adjusted p, "
    "inconclusive otherwise. Where cut-off seeds make a ratio only a bound, the verdict must hold "
    "for every longer budget (else inconclusive, needs a longer budget); a target that no seed of "
    "either net reaches leaves its ratio unbounded: inconclusive, never a refutation, and the "
    "report says so."
)


def error_targets(data_config: ml_collections.ConfigDict) -> tuple[Target, ...]:
    """The speed targets in training error: its chance level (1 - 1/classes) over `HALVINGS`
    (MNIST: 45%, 22.5% and 11.25%)."""
    chance_error = 1 - data.facts(data_config).chance
    return tuple(Target("train/accuracy", round(1 - chance_error / h, 6)) for h in HALVINGS)


def loss_targets(data_config: ml_collections.ConfigDict) -> tuple[Target, ...]:
    """The speed targets in training loss (cross-entropy): its chance level ln(classes), the loss
    of a uniform guess, over `HALVINGS` (10 classes: 1.15, 0.576 and 0.288)."""
    chance_loss = math.log(data.facts(data_config).num_classes)
    return tuple(Target(TRAIN_LOSS, round(chance_loss / h, 6), below=True) for h in HALVINGS)


def describe_target(target: Target) -> str:
    """A target in words, e.g. "11.25% training error" or "training loss 0.288"."""
    if target.metric == "train/accuracy":
        return f"{100 * (1 - target.threshold):g}% training error"
    return (
        f"training loss {target.threshold:g}" if target.metric == TRAIN_LOSS else target.describe()
    )


def speed_verdict(
    pairs: Sequence[tuple[Group, Group]], targets: Sequence[Target], budget: int
) -> tuple[stats.Verdict, list[str]]:
    """The `SPEED_RULE` verdict on each (claimed-slower, claimed-faster) pair of groups at each of
    `targets`, with a note per target that no run of a pair reached."""
    effects = [
        stats.paired_ratio(
            slow.censored_steps(target),
            fast.censored_steps(target),
            name=f"{slow.label}/{fast.label} steps to {describe_target(target)}",
            budget=budget,
        )
        for slow, fast in pairs
        for target in targets
    ]
    notes = [
        note for slow, fast in pairs for t in targets for note in unreached_note([slow, fast], t)
    ]
    return stats.combine(stats.holm_verdicts(effects, claim="greater")), notes


# Trainability: a net leaves the stall band when its training loss first falls below STALL_BAND x
# its first logged value (the mean over the first log interval); a net stalls when it takes more
# than STALL_FACTOR x the steps the net it is compared with takes, or never leaves the band within a
# budget at least that long. One definition for every trainability part, fixed before the runs it
# judges; relative to each net's own first loss, so no level of one dataset enters it.
STALL_BAND = 0.9
STALL_FACTOR = 10


def steps_out_of_band(run: Run, member: int) -> float:
    """Steps until `member`'s training loss first falls below `STALL_BAND` x its first logged
    value; math.inf if it never does (censored at the budget)."""
    steps, loss = run.series(TRAIN_LOSS, member)
    below = np.flatnonzero(loss < STALL_BAND * loss[0]) if len(loss) else []
    return float(steps[below[0]]) if len(below) else math.inf


def stalls_everywhere(run: Run, other_steps: float, other_rate: float) -> tuple[bool, str]:
    """Whether `run` stalled at every rate of its tuning run (out of the band only after
    `STALL_FACTOR` x `other_steps`, the compared net's mean steps out of the band, or never within
    a budget at least that long) and its grid brackets `other_rate`, the compared net's selected
    rate (strictly inside it); with the detail for the report."""
    if run.tuning is None:
        return False, "no tuning run to tell"
    tuning = run.tuning
    limit = STALL_FACTOR * other_steps
    leaves: dict[float, list[float]] = {}
    for m, member in enumerate(tuning.members):
        leaves.setdefault(member["lr"], []).append(steps_out_of_band(tuning, m))
    long_enough = tuning.config.train.steps >= limit
    stalled = all(s > limit for steps in leaves.values() for s in steps) and long_enough
    inside = min(leaves) < other_rate < max(leaves)
    detail = (
        "steps out of the band at each rate (per tuning seed): "
        + "; ".join(
            f"{lr:g}: " + ", ".join("never" if math.isinf(s) else f"{s:,.0f}" for s in steps)
            for lr, steps in sorted(leaves.items())
        )
        + f" (stalled: more than {limit:,.0f} within a budget of {tuning.config.train.steps:,}); "
        f"the compared net's rate {other_rate:g} is {'inside' if inside else 'not inside'} the grid"
    )
    return stalled and inside, detail


def stall_verdict(verdict: stats.Verdict, stalled: Group, other: Group) -> stats.Verdict:
    """`verdict` on a stall ratio (`stalled`'s steps out of the band over `STALL_FACTOR` x
    `other`'s), reproduced only if `stalled` also stalls at every rate of a tuning grid that
    brackets `other`'s selected rate (`stalls_everywhere`); the grid's detail is stated."""
    other_steps = float(np.mean([steps_out_of_band(other.run, m) for m in other.members]))
    everywhere, detail = stalls_everywhere(stalled.run, other_steps, other.run.config.optim.lr)
    if verdict.outcome != stats.Outcome.REPRODUCED or everywhere:
        return dataclasses.replace(
            verdict, reason=f"{verdict.reason} The tuning of \u201c{stalled.label}\u201d: {detail}."
        )
    return stats.Verdict(
        stats.Outcome.INCONCLUSIVE,
        f"{verdict.reason} But \u201c{stalled.label}\u201d (the net claimed to stall) does not "
        "stall at every rate of a grid that brackets the rate selected for "
        f"\u201c{other.label}\u201d ({detail}): needs a wider grid or a longer budget.",
        verdict.effects,
    )


Comparisons = Callable[[dict[str, np.ndarray]], list[tuple[str, np.ndarray, np.ndarray]]]


def at_budgets(
    nets: Callable[[int], dict[str, np.ndarray]],
    compare: Comparisons,
    budget: int,
    fractions: Sequence[float],
    effect: Callable[[np.ndarray, np.ndarray, str], stats.Effect],
    claim: stats.Claim,
) -> stats.Verdict:
    """The verdict on comparisons of values at budgets: `nets(step)` gives each net's per-seed
    values as they were at `step`, `compare(values)` each comparison's name and arms (a, b),
    `effect(a, b, name)` its effect. Every comparison at every budget `fraction x budget` is
    judged at Holm-adjusted p-values over all of them and must be settled (`settled`); the
    claim holds if every one does (`stats.combine`)."""

    def steps(scale: float) -> list[int]:
        return matched_steps(budget, [scale * fraction for fraction in fractions])

    def values(scale: float) -> Nets:
        return {(i, k): v for i, step in enumerate(steps(scale)) for k, v in nets(step).items()}

    def comparisons(values: Nets) -> list[tuple[str, np.ndarray, np.ndarray]]:
        out = []
        for i, step in enumerate(steps(1.0)):
            at = {name: v for (j, name), v in values.items() if j == i}
            out += [(f"{name} at step {step:,}", a, b) for name, a, b in compare(at)]
        return out

    def decide(values: Nets) -> list[stats.Verdict]:
        effects = [effect(a, b, name) for name, a, b in comparisons(values)]
        return stats.holm_verdicts(effects, claim=claim)

    return stats.combine(settled(values, decide))


def previous_training_loss_clause(
    verdict: stats.Verdict, compared: Sequence[Group]
) -> stats.Verdict:
    """The verdict the previous rules (before issue 20) gave: `verdict`, or inconclusive where the
    mean training loss over seeds of a net compared fell by 10% or more over the last fifth of
    training. Kept only to show the previous outcome beside the new one; it decides nothing."""
    falls = []
    for group in compared:
        steps, _ = group.run.series(TRAIN_LOSS, group.members[0])
        loss = np.mean([group.run.series(TRAIN_LOSS, m)[1] for m in group.members], axis=0)
        before = np.flatnonzero(steps <= 0.8 * steps[-1]) if len(steps) else []
        fall = (loss[before[-1]] - loss[-1]) / loss[before[-1]] if len(before) else math.nan
        if not fall < 0.1:
            falls.append(f"{group.label} fell {fall:.0%}")
    if not falls:
        return verdict
    return stats.Verdict(
        stats.Outcome.INCONCLUSIVE,
        f"The training loss of {', '.join(falls)} over the last 20% of training. As measured: "
        f"{verdict.outcome}.",
        verdict.effects,
    )
