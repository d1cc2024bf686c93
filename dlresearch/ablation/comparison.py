"""One comparison, declared: arms over a base config, a budget, a measure and the claimed direction.

A `Comparison` is the short way to write an ablation whose claim is "these arms change this measure
in this direction": from its declaration the framework derives what an `Experiment` script writes by
hand (the `Part`, the rule in words, the statistics and verdict, the tables, plots and notes):

- **Arms**: `Variant`s (config overrides) over `base` (overrides of `base_config()`, then those of
  the preset in `per_preset`); the first arm (or the one `baseline` names) is the baseline, every
  other arm is compared with it, paired over seeds (Holm's correction when there are several).
- **Budget**: steps or epochs per preset (`Budget`); epochs become steps from the dataset's size
  (`data.facts`), so a script needs no table of dataset sizes (at least that many passes, or
  `rounding="down"`: the complete batches in them); the curves are logged about 100 times and
  evaluated 10 times per run, or `logs_per_epoch` and `evals_per_epoch` times an epoch.
- **Tuning**: a learning-rate grid (or an `ablation.Tuning`): every arm trains the whole grid on the
  tuning seeds with a held-out split and is then trained at the rate with the best measure there.
- **Measure**: `test_error()` (the value at the budget; a diverged member counts as error 1, the
  interval is over seeds on the fixed test set), `final_value(metric)`, `generalization_gap()`
  (test error minus the train-set evaluation's error), `steps_to(*targets)` (speed: a ratio of
  steps per target, a run that never reaches one censored at the budget), any of these but
  `steps_to` at several matched budgets (`matched_budgets(measure, (0.5, 1.0))`: speed, the
  value as logged by each fraction of the budget), or any `Measure` of your own (a function of a
  group of runs giving one number per seed). Targets that depend on the dataset are a function of
  its data config, called when the part is built (`steps_to(ablation.loss_targets)`: the chance
  cross-entropy halved 1, 2 and 3 times; `Measure.of_data`).
- **Claim**: every other arm's measure is `lower` or `higher` than the baseline's, by at least
  `smallest_effect` (optional; without it a claim can only be refuted by the opposite effect; for
  a ratio of steps, e.g. 2.0: at least 2x faster). Several comparisons (arms, targets) are
  Holm-adjusted over all of them, refutations by the smallest effect included.

The claim kind (`Comparison.kind`) follows from the measure: a value at a budget is a `value` claim,
steps to a target or a value at matched budgets a `speed` claim. The guards come with it: a
diverged member counts as error 1 for `test_error` and is reported; a rate its tuning selected at
an edge of the grid is noted; the members judged are marked in results.csv. For what does not
fit, `judge` (with its `rule`) replaces the derived judge, or a script declares its `Part`s itself.
A rule that replaced an earlier one shows the earlier one's verdict beside its own: `previous` (a
measure of the same runs, judged against no effect) with `previous_rule` (`Findings.previous`).
Several claims make one experiment, a part each: `first.experiment(second, ...)`; two measures of
the same runs share them (`runs`). Your own Flax model and loss train every run as `train.run`
takes them (`model=`, `loss=`).
"""

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import ml_collections
import numpy as np

from dlresearch import data, models
from dlresearch.ablation import stats
from dlresearch.ablation.measures import (
    Group,
    at_budgets,
    groups,
    judged_members,
    matched_steps,
    mean_std,
    steps_summary,
    tuning_edge_notes,
    unreached_note,
)
from dlresearch.ablation.plots import plot_curves
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import (
    DEFAULT_DATASET,
    GRID_RULE,
    PRESETS,
    DataDirs,
    Experiment,
    Findings,
    Part,
    Plot,
    Previous,
    Target,
    Tuning,
    Variant,
    cadence,
    first_reach,
    grid_is_valid,
    make_config,
)
from dlresearch.ablation.writeup import summary_table
from dlresearch.errors import ConfigError
from dlresearch.metrics import TRAIN_EVAL, TRAIN_LOSS, eval_key
from dlresearch.program import Loss, ModelBuilder, cross_entropy

Direction = Literal["lower", "higher"]
TargetsOf = Callable[[ml_collections.ConfigDict], Sequence[Target]]
Judge = Callable[[dict[str, Run], str], Findings]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long every run of each preset trains: `steps` or `epochs` per preset name, each preset
    in exactly one, e.g. `Budget(steps={"test": 60}, epochs={"quick": 5, "standard": 10,
    "paper": 100})`.

    Epochs become the steps of at least that many passes over the training set (`rounding="up"`)
    or of the complete batches in them ("down"). The runs log their training curves about 100
    times and evaluate 10 times, or `logs_per_epoch` and `evals_per_epoch` times an epoch (e.g. a
    figure over epochs); 0 keeps the default.
    """

    steps: Mapping[str, int] = dataclasses.field(default_factory=dict)
    epochs: Mapping[str, float] = dataclasses.field(default_factory=dict)
    rounding: Literal["up", "down"] = "up"
    logs_per_epoch: float = 0
    evals_per_epoch: float = 0

    def __post_init__(self) -> None:
        both = set(self.steps) & set(self.epochs)
        unknown = (set(self.steps) | set(self.epochs)) - set(PRESETS)
        missing = set(PRESETS) - set(self.steps) - set(self.epochs)
        if both or unknown or missing:
            raise ConfigError(
                f"budget: every preset once in steps or epochs; got steps={dict(self.steps)}, "
                f"epochs={dict(self.epochs)}; presets: {', '.join(PRESETS)}"
            )
        values = [*self.steps.values(), *self.epochs.values()]
        if not all(v > 0 for v in values):
            raise ConfigError(f"budget: steps and epochs must be positive, got {values}")
        if self.rounding not in ("up", "down"):
            raise ConfigError(f"budget: rounding={self.rounding!r}; allowed values: up, down")
        if not (self.logs_per_epoch >= 0 and self.evals_per_epoch >= 0):
            raise ConfigError(
                f"budget: logs_per_epoch={self.logs_per_epoch!r}, evals_per_epoch="
                f"{self.evals_per_epoch!r}; allowed: a number >= 0 each (0: the default)"
            )

    def of(self, preset: str, config: ml_collections.ConfigDict) -> int:
        """The training steps of `preset` for the dataset and batch size of `config`."""
        if preset in self.steps:
            return int(self.steps[preset])
        facts, batch = data.facts(config.data), config.train.batch_size
        if self.rounding == "down":
            return max(1, int(self.epochs[preset] * facts.train_size // batch))
        return facts.steps(self.epochs[preset], batch)

    def cadence(self, preset: str, config: ml_collections.ConfigDict) -> dict[str, int]:
        """The overrides of the steps, logs, evaluations and checkpoints of `preset`'s runs
        (`ablation.cadence`)."""
        steps = self.of(preset, config)
        size = data.facts(config.data).train_size
        epochs = self.epochs.get(preset, steps * config.train.batch_size / size)

        def count(per_epoch: float, default: int) -> int:
            return max(1, round(per_epoch * epochs)) if per_epoch else default

        return cadence(
            steps, logs=count(self.logs_per_epoch, 100), evals=count(self.evals_per_epoch, 10)
        )

    def describe(self, preset: str, config: ml_collections.ConfigDict) -> str:
        """E.g. '3,000 steps' or '3,000 steps (5 epochs of 60,000 examples at batch 100)'."""
        text = f"{self.of(preset, config):,} steps"
        if preset in self.epochs:
            size = data.facts(config.data).train_size
            text += (
                f" ({self.epochs[preset]:g} epochs of {size:,} examples at batch "
                f"{config.train.batch_size})"
            )
        return text


@dataclasses.dataclass(frozen=True)
class Measure:
    """What a comparison compares: one number per seed of a group of runs.

    `compare`: how two arms' numbers become an effect, paired over seeds: "difference" (a paired
    t-interval), "error" (a difference of error fractions on the fixed test set, paired over seeds)
    or "ratio" (a ratio of steps, `math.inf` marking a run censored at the budget). `curve` is the
    logged metric the default plot shows ("{split}" stands for the evaluation split). `kind` is the
    claim kind this measure makes. `lower_is_better` orders the learning rates when tuning.
    `targets` (`steps_to`): compared at each of these targets, `per_seed` giving the steps to
    the last (tuning and the table's mean). `fractions` (`matched_budgets`): compared at each of
    these fractions of the budget. `of_data`: a measure that depends on the dataset (e.g. targets
    relative to its chance level) is made from the data config when a part is built or runs are
    judged (`for_data`); until then it states only how it compares.
    """

    name: str
    per_seed: Callable[[Group], Sequence[float]]
    compare: Literal["difference", "error", "ratio"] = "difference"
    unit: str = ""
    curve: str = TRAIN_LOSS
    kind: Literal["speed", "value", "trainability", "mechanism", "control"] = "value"
    lower_is_better: bool = True
    detail: str = ""  # how the per-seed numbers are made, for the rule
    targets: tuple[Target, ...] = ()
    train_eval: bool = False  # needs the train-set evaluation (`eval.train_examples` > 0)
    fractions: tuple[float, ...] = ()
    of_data: Callable[[ml_collections.ConfigDict], "Measure"] | None = None

    def __post_init__(self) -> None:
        fractions = self.fractions
        increasing = all(0 < a < b <= 1 for a, b in itertools.pairwise(fractions))
        if fractions and (len(fractions) < 2 or not increasing or self.compare == "ratio"):
            raise ConfigError(
                f"{self.name}: fractions={fractions!r}; allowed: at least two increasing fractions "
                "of the budget in (0, 1], of a measure that is not a ratio of steps"
            )

    def for_data(self, data_config: ml_collections.ConfigDict) -> "Measure":
        """This measure for the dataset of `data_config` (`of_data`; itself if it does not
        depend on the dataset)."""
        return self.of_data(data_config) if self.of_data else self

    def values(self, group: Group) -> np.ndarray:
        return np.asarray(self.per_seed(group), float)

    def values_at(self, group: Group, step: int) -> np.ndarray:
        """The values as they were at `step` (`_cut`)."""
        return self.values(_cut(group, step))

    @property
    def _percent(self) -> bool:
        """Whether its numbers are fractions shown in percent (errors, gaps in pp)."""
        return self.compare == "error" or self.unit == "pp"

    @property
    def column(self) -> str:
        """The header of this measure's column in the summary table."""
        return f"{self.name} (%)" if self._percent else self.name

    def summary(self, group: Group) -> str:
        """Mean ± std over the group's seeds (fractions in percent)."""
        if self._percent:
            return mean_std(self.values(group), ".2f", scale=100)
        return mean_std(self.values(group), ".4g")

    def score(self, run: Run, members: tuple[int, ...]) -> float:
        """The tuning score of some members of a (tuning) run: their mean, lower is better; a
        non-finite value counts worst."""
        values = self.values(Group("", run, members))
        values = np.where(np.isfinite(values), values, np.inf if self.lower_is_better else -np.inf)
        return float(np.mean(values) if self.lower_is_better else -np.mean(values))


def _cut(group: Group, step: int) -> Group:
    """The group as it was at `step`: its runs cut there (`Run.prefix`: what they had logged by
    then, a divergence only if it had happened by then)."""
    return Group(group.label, group.run.prefix(step), group.members)


def _errors(group: Group) -> np.ndarray:
    accuracy = group.final(f"{group.run.eval_split}/accuracy")
    return 1 - np.nan_to_num(accuracy, nan=0.0)


def test_error() -> Measure:
    """The final error on the evaluation split (the test set; the held-out split when tuning),
    a member that diverged counting as error 1."""
    return Measure(
        "test error",
        _errors,
        compare="error",
        unit="pp",
        curve="{split}/accuracy",
        detail="a diverged member counts as error 1",
    )


def final_value(metric: str, *, lower_is_better: bool = True, unit: str = "") -> Measure:
    """The last logged value of `metric` (e.g. "train/loss"; "{split}/loss" for the evaluation
    split, which is the held-out one when tuning); a diverged member's is not finite, which leaves
    the interval undefined (inconclusive)."""
    return Measure(
        f"final {metric.format(split='test')}",
        lambda group: group.final(metric.format(split=group.run.eval_split)),
        unit=unit,
        curve=metric,
        lower_is_better=lower_is_better,
        detail="a diverged member leaves it undefined",
    )


def generalization_gap() -> Measure:
    """The generalisation gap at the budget, per seed: the error on the evaluation split minus the
    error on the fixed training subset, both in eval mode (`eval.train_examples`; a train/accuracy
    logged during training is a running mean with dropout on, so it is not used); a member that
    diverged leaves it undefined. Compared as a paired difference in percentage points."""

    def gap(group: Group) -> np.ndarray:
        train_error = 1 - group.final(eval_key(TRAIN_EVAL, "accuracy"))
        return 1 - group.final(eval_key(group.run.eval_split, "accuracy")) - train_error

    return Measure(
        "generalization gap",
        gap,
        unit="pp",
        curve=eval_key(TRAIN_EVAL, "accuracy"),
        detail="test error minus the error on a fixed training subset in eval mode; a diverged "
        "member leaves it undefined",
        train_eval=True,
    )


def _made_for_a_dataset_first(group: Group) -> list[float]:
    raise ConfigError("a measure that depends on the dataset is made for one first (for_data)")


def steps_to(*targets: Target | TargetsOf) -> Measure:
    """Steps until each of `targets` is first reached, at step resolution (`first_reach`); a run
    that never reaches one is censored at the budget. A speed claim: the ratio of steps of each
    arm to the baseline's at each target (an exact sign-flip interval where a run is censored),
    Holm-adjusted over all of them. Tuning scores the last target (the claim's own, e.g. the
    paper's); earlier ones are intermediate levels of the same curve. Targets that depend on the
    dataset: one function of its data config giving them (e.g. `ablation.loss_targets`), called
    when the part is built (`Measure.of_data`)."""
    if len(targets) == 1 and callable(targets[0]):
        targets_of = targets[0]
        return Measure(
            "steps to the dataset's targets",
            _made_for_a_dataset_first,
            compare="ratio",
            unit="x",
            kind="speed",
            of_data=lambda data_config: steps_to(*targets_of(data_config)),
        )
    if not targets or not all(isinstance(t, Target) for t in targets):
        raise ConfigError(
            f"steps_to{targets!r}; allowed: one or more ablation.Target, or one function of the "
            "data config giving them"
        )
    last = targets[-1]
    return Measure(
        "steps to " + " and ".join(t.describe() for t in targets),
        lambda group: group.censored_steps(last),
        compare="ratio",
        unit="x",
        curve=last.metric,
        kind="speed",
        detail="a run that never reaches a target is censored at the budget",
        targets=targets,
    )


def matched_budgets(measure: Measure, fractions: Sequence[float]) -> Measure:
    """`measure` compared at several matched budgets, `fractions` of the budget (e.g. (0.5, 1.0)):
    a speed claim (one arm ahead at each of these points of training, not only at its end). At
    each, every arm's value is what its runs had logged by `fraction x budget` steps
    (`Measure.values_at`); every comparison at every budget is judged at Holm-adjusted p-values
    over all of them (`ablation.at_budgets`), and the claim holds only if every one does. Any
    measure but a ratio of steps; judged against no effect, so without a smallest effect."""
    return dataclasses.replace(measure, fractions=tuple(fractions), kind="speed")


_METHODS = {
    "difference": "paired over seeds (t-interval)",
    "error": "paired over seeds, on the fixed test set",
    "ratio": "paired over seeds (t-interval on log ratios; the exact sign-flip test where a run is "
    "censored or every seed gives the same ratio, its 95% interval unbounded below 6 seeds)",
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One claim as a comparison of arms (module docstring); `experiment()` makes it runnable."""

    name: str
    title: str
    claim: str
    source: str
    base: Mapping[str, Any]
    arms: tuple[Variant, ...]
    budget: Budget
    measure: Measure
    direction: Direction
    smallest_effect: float | None = None
    tuning: Tuning | tuple[float, ...] | None = None  # a grid: tuned by the measure
    per_preset: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    differences: str = ""  # how the setup differs from the paper's
    quote: str = ""  # the paper's sentence the claim rests on (default: `claim` itself)
    judge: Judge | None = None  # a hand-written judge replaces the derived one ...
    rule: str = ""  # ... and states its rule
    # The name its runs are stored under (default: `name`). A comparison that measures the runs of
    # another names that one's: the same base, arms, budget and tuning train them once (a stored
    # run of another config is refused).
    runs: str = ""
    # Your own model builder and loss, as `train.run` takes them (`Part.model`, `Part.loss`).
    model: ModelBuilder = models.build
    loss: Loss = cross_entropy
    baseline: str = ""  # the name of the arm every other is compared with (default: the first)
    previous: Measure | None = None  # the measure of a replaced rule, shown beside the verdict ...
    previous_rule: str = ""  # ... and that rule in a few words

    def __post_init__(self) -> None:
        names = [arm.name for arm in self.arms]
        if len(names) < 2 or len(set(names)) < len(names):
            raise ConfigError(f"arms: at least two, with distinct names; got {names}")
        if self.baseline and self.baseline not in names:
            raise ConfigError(f"baseline={self.baseline!r}; allowed: an arm's name ({names})")
        if (self.previous is None) == bool(self.previous_rule):
            raise ConfigError("previous and previous_rule: a replaced rule's measure and its words")
        if self.direction not in ("lower", "higher"):
            raise ConfigError(f"direction={self.direction!r}; allowed values: lower, higher")
        null = 1.0 if self.measure.compare == "ratio" else 0.0
        if self.smallest_effect is not None and not self.smallest_effect > null:
            raise ConfigError(
                f"smallest_effect={self.smallest_effect!r} must be above {null:g}: it is the "
                f"least {self.measure.name} effect claimed, in the claimed direction"
            )
        if self.measure.fractions and self.smallest_effect is not None:
            raise ConfigError(
                f"smallest_effect={self.smallest_effect!r}: a measure at matched budgets is "
                "judged against no effect at each; allowed: None"
            )
        if bool(self.judge) != bool(self.rule):
            raise ConfigError("judge and rule: a hand-written judge states its rule, and only then")
        unknown = set(self.per_preset) - set(PRESETS)
        if unknown:
            raise ConfigError(f"per_preset={sorted(unknown)}; allowed keys: {', '.join(PRESETS)}")
        if not (
            self.tuning is None or isinstance(self.tuning, Tuning) or grid_is_valid(self.tuning)
        ):
            raise ConfigError(
                f"tuning={self.tuning!r}; allowed: None, an ablation.Tuning, or a grid: {GRID_RULE}"
            )

    @property
    def _baseline(self) -> Variant:
        return next(arm for arm in self.arms if arm.name == (self.baseline or self.arms[0].name))

    @property
    def _others(self) -> tuple[Variant, ...]:
        """The arms compared with the baseline, in their order."""
        return tuple(arm for arm in self.arms if arm != self._baseline)

    def for_data(self, data_config: ml_collections.ConfigDict) -> "Comparison":
        """This comparison with its measures made for the dataset of `data_config`
        (`Measure.of_data`)."""
        previous = self.previous.for_data(data_config) if self.previous else None
        return dataclasses.replace(
            self, measure=self.measure.for_data(data_config), previous=previous
        )

    @property
    def kind(self) -> str:
        """The claim kind: `speed` for steps to a target or a value at matched budgets, `value`
        for a value at the budget."""
        return self.measure.kind

    def experiment(self, *others: "Comparison") -> Experiment:
        """This comparison as an experiment for `ablation.main`, named after it: one part, or with
        `others` one part per comparison (e.g. two measures of the same runs, see `runs`)."""
        comparisons = (self, *others)
        return Experiment(
            self.name, self.title, lambda preset, dirs: [c.part(preset, dirs) for c in comparisons]
        )

    def config(self, preset: str, dirs: DataDirs) -> ml_collections.ConfigDict:
        """The base config of `preset`: `base`, the preset's overrides, the dataset, the budget
        (with the default cadence of logs, evaluations and checkpoints).

        The dataset is the one `dirs` names (`--dataset`, MNIST by default), unless `base` or the
        preset's overrides set `data.name`: that pins the comparison to it, and naming another
        dataset on the command line is an error rather than ignored.
        """
        overrides = (self.base, self.per_preset.get(preset, {}))
        pinned = {**overrides[0], **overrides[1]}.get("data.name", dirs.dataset)
        if pinned != dirs.dataset and dirs.dataset != DEFAULT_DATASET:
            raise ConfigError(
                f"comparison {self.name!r} sets data.name={pinned!r}, so it cannot run on "
                f"dataset={dirs.dataset!r}; leave data.name out of it to let --dataset choose"
            )
        directory = dirs.of(pinned)
        dataset = {"data.name": pinned, **({"data.dir": directory} if directory else {})}
        config = make_config(*overrides, dataset)
        # Steps to a target are recorded at step resolution (`first_reach`).
        targets = self.measure.for_data(config.data).targets
        target = first_reach(*targets) if targets else {}
        return make_config(*overrides, dataset, target, self.budget.cadence(preset, config))

    def part(self, preset: str, dirs: DataDirs) -> Part:
        config = self.config(preset, dirs)
        made = self.for_data(config.data)
        if made.measure.train_eval and not config.eval.train_examples:
            raise ConfigError(
                f"{self.name}: eval.train_examples=0, but the {made.measure.name} needs the "
                "train-set evaluation; allowed: a count above 0"
            )
        return Part(
            name=self.name,
            title=self.title,
            claim=self.claim,
            source=self.source,
            rule=self.rule or made.rule_text(preset, config),
            config=config,
            variants=self.arms,
            judge=self.judge or made.derived_judge,
            differences=self.differences,
            target=made.measure.targets[-1] if made.measure.targets else None,
            tuning=made._tuning(),
            kind=self.kind,
            quote=self.quote or self.claim,
            runs=self.runs,
            model=self.model,
            loss=self.loss,
        )

    def _tuning(self) -> Tuning | None:
        if self.tuning is None or isinstance(self.tuning, Tuning):
            return self.tuning
        targets = self.measure.targets
        name = f"steps to {targets[-1].describe()}" if targets else self.measure.name
        metric = name.replace("test ", "held-out ")
        if not self.measure.lower_is_better:
            metric = f"minus the {metric}"
        return Tuning(grid=tuple(self.tuning), score=self.measure.score, metric=metric)

    # -- what the declaration derives --------------------------------------------------------------
    def effect_name(self, arm: Variant, target: Target | None = None) -> str:
        """E.g. 'test error, without dropout minus with dropout' (positive: the claimed side), or
        'steps to train/accuracy >= 0.9, tanh / relu' at one of the measure's targets."""
        first, second = self._ordered(self._baseline.title, arm.title)
        link = " / " if self.measure.compare == "ratio" else " minus "
        what = f"steps to {target.describe()}" if target else self.measure.name
        return f"{what}, {first}{link}{second}"

    def _targets(self) -> tuple[Target | None, ...]:
        """Where each arm is compared: at each target of `steps_to`, else once (None)."""
        return self.measure.targets or (None,)

    def _ordered(self, baseline: Any, arm: Any) -> tuple[Any, Any]:
        """The two sides of an effect, ordered so that the claimed side is positive (or above 1)."""
        return (baseline, arm) if self.direction == "lower" else (arm, baseline)

    def rule_text(self, preset: str, config: ml_collections.ConfigDict) -> str:
        """The rule in words, as the report prints it."""
        null = "1x" if self.measure.compare == "ratio" else "0"
        margin = self._margin_text()
        names = [self.effect_name(arm, t) for arm in self._others for t in self._targets()]
        effects = "; ".join(names)
        several = len(names) > 1
        lines = [
            f"For {'each of ' if several else ''}{effects}, {self._when(preset, config)}, "
            f"{_METHODS[self.measure.compare]}"
            + (f" ({self.measure.detail})" if self.measure.detail else "")
            + ": reproduced if its 95% interval lies above "
            + null
            + (f" and not wholly below the smallest effect of interest, {margin}" if margin else "")
            + "; not reproduced if "
            + (f"the interval lies below {margin}, or " if margin else "")
            + "the effect is significantly in the other direction; inconclusive otherwise.",
        ]
        if several or self.measure.fractions:
            lines.append(
                "Holm's correction over the comparisons"
                + (" at every budget" if self.measure.fractions else "")
                + (", of no effect and of the smallest effect" if margin else "")
                + "; the claim is reproduced only if every comparison is, not reproduced if any is."
            )
        if self.measure.compare == "ratio":
            lines.append(_censored_rule(margin))
        if self.tuning is not None:
            lines.append(
                "Every arm is trained at the learning rate its own tuning selected (the same "
                "protocol for every arm)."
            )
        return " ".join(lines)

    def _when(self, preset: str, config: ml_collections.ConfigDict) -> str:
        """Where the measure is compared: at the budget, or at each matched budget."""
        budget = self.budget.describe(preset, config)
        if not self.measure.fractions:
            return f"at the budget of {budget}"
        fractions = " and ".join(f"{f:g}x" for f in self.measure.fractions)
        return (
            f"at each of the matched budgets {fractions} the budget of {budget} (each arm's "
            "value as its runs had logged it by then)"
        )

    def _margin_text(self) -> str:
        if self.smallest_effect is None:
            return ""
        nothing = math.nan
        effect = stats.Effect("", nothing, nothing, nothing, nothing, 0, "", self.measure.unit)
        return effect.value(self.smallest_effect)  # in the effect's unit: '0.2 pp', '2x

    def effect(self, baseline: Group, arm: Group, target: Target | None = None) -> stats.Effect:
        """The effect of `arm` over `baseline` (at `target`, one of the measure's `targets`),
        oriented so that the claimed side is positive."""
        first, second = self._ordered(baseline, arm)
        if target is None:
            a, b = self.measure.values(first), self.measure.values(second)
        else:
            a, b = (
                np.asarray(first.censored_steps(target)),
                np.asarray(second.censored_steps(target)),
            )
        return self._effect(a, b, self.effect_name(arm.run.variant, target), baseline.run)

    def _effect(self, a: np.ndarray, b: np.ndarray, name: str, run: Run) -> stats.Effect:
        """The effect of per-seed values `a` over `b` (already ordered), by the measure's
        `compare`, for runs like `run` (their test set, their budget)."""
        margin = self.smallest_effect
        if self.measure.compare == "error":
            return stats.error_difference(a, b, run.num_eval, name=name, margin=margin)
        if self.measure.compare == "ratio":
            budget = run.config.train.steps
            return stats.paired_ratio(a, b, name=name, budget=budget, margin=margin)
        return stats.paired_difference(a, b, name=name, unit=self.measure.unit, margin=margin)

    def _matched_verdict(self, by_name: Mapping[str, Group]) -> stats.Verdict:
        """Every other arm against the baseline at every matched budget (`at_budgets`)."""
        baseline, others = self._baseline.name, self._others
        run = by_name[baseline].run
        return at_budgets(
            lambda step: {
                arm.name: self.measure.values_at(by_name[arm.name], step) for arm in self.arms
            },
            lambda v: [
                (self.effect_name(arm), *self._ordered(v[baseline], v[arm.name])) for arm in others
            ],
            run.config.train.steps,
            self.measure.fractions,
            lambda a, b, name: self._effect(a, b, name, run),
            claim="greater",
        )

    def verdict(self, by_name: Mapping[str, Group]) -> stats.Verdict:
        """Every other arm against the baseline, at each target of `steps_to` or each matched
        budget; when several, Holm-adjusted over all of them (of no effect and, with a smallest
        effect, of that effect) and combined."""
        if self.measure.fractions:
            return self._matched_verdict(by_name)
        baseline = by_name[self._baseline.name]
        effects = [
            self.effect(baseline, by_name[arm.name], target)
            for arm in self._others
            for target in self._targets()
        ]
        margin = self.smallest_effect
        if len(effects) == 1:
            return stats.verdict(effects[0], claim="greater", margin=margin)
        return stats.combine(stats.holm_verdicts(effects, claim="greater", margin=margin))

    def derived_judge(self, runs: dict[str, Run], outdir: str) -> Findings:
        """The verdict, a table of every arm, a plot of the measure's curve, the guards' notes,
        and the `previous` rule's verdict; its measures made for the runs' dataset first."""
        return self.for_data(runs[self._baseline.name].config.data)._findings(runs, outdir)

    def _findings(self, runs: dict[str, Run], outdir: str) -> Findings:
        by_name = groups(runs)
        arms = [by_name[arm.name] for arm in self.arms]
        baseline = by_name[self._baseline.name]
        split = arms[0].run.eval_split
        columns = self._columns(arms[0].run.config.train.steps)
        curve = self.measure.curve.format(split=split)
        targets = self.measure.targets
        filename = plot_curves(
            outdir,
            f"{self.name}_{curve.replace('/', '_')}.png",
            arms,
            curve,
            title=self.title,
            ylabel=curve,
            log_y=curve == TRAIN_LOSS,
            hline=targets[-1].threshold if targets else None,
        )
        unreached = [
            note
            for arm in self._others
            for target in targets
            for note in unreached_note([baseline, by_name[arm.name]], target)
        ]
        return Findings(
            self.verdict(by_name),
            [summary_table(arms, extra=columns)],
            [Plot(filename, f"{curve} over training, mean ± std over seeds.")],
            notes=[*_diverged_notes(arms, self.measure), *unreached, *tuning_edge_notes(runs)],
            judged=judged_members(by_name),
            previous=self._previous(by_name),
        )

    def _previous(self, by_name: Mapping[str, Group]) -> Previous | None:
        """The verdict of the replaced rule (`previous`), judged against no effect."""
        if self.previous is None:
            return None
        replaced = dataclasses.replace(
            self, measure=self.previous, smallest_effect=None, previous=None, previous_rule=""
        )
        return Previous(self.previous_rule, replaced.verdict(by_name))

    def _columns(self, budget: int) -> dict[str, Callable[[Group], str]]:
        """The measure's columns of the table: its value at the budget, at each matched budget, or
        the steps to each target."""
        measure = self.measure
        if measure.targets:
            return {
                f"steps to {t.describe()}": lambda g, t=t: steps_summary(g.steps_to(t), budget)
                for t in measure.targets
            }
        if not measure.fractions:
            return {measure.column: measure.summary}
        return {
            dataclasses.replace(measure, name=f"{measure.name} at step {step:,}").column: (
                lambda g, step=step: measure.summary(_cut(g, step))
            )
            for step in matched_steps(budget, measure.fractions)
        }


def _censored_rule(margin: str) -> str:
    """The rule for ratios of steps where runs are censored (`stats.verdict`), in words."""
    reproduced = f"reproduced needs a bound toward the claim to reach {margin}, " if margin else ""
    return (
        "A target no run of either arm reaches leaves its ratio unbounded: inconclusive, never a "
        "refutation (the report says so). Where censored runs make a ratio only a bound, a "
        f"verdict must hold for every longer budget: {reproduced}not reproduced needs a bound "
        "away from the claim to be at most 1x; inconclusive otherwise (needs a longer budget)."
    )


def _diverged_notes(arms: Sequence[Group], measure: Measure) -> list[str]:
    notes = []
    for group in arms:
        diverged = sum(group.run.diverged_at[m] is not None for m in group.members)
        if diverged:
            notes.append(
                f"{group.label}: {diverged} of {len(group.members)} members diverged ("
                f"{measure.detail or 'their values are not finite'})."
            )
    return notes
