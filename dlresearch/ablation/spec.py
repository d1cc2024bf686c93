"""What an experiment script declares (its parts, variants, targets) and what comes back (a judge's
`Findings` and `Verdict`, an experiment's `Outcome`).

Also the helpers that build a part's base config (`make_config`, `cadence`) and where the datasets
are (`DataDirs`).
"""

import dataclasses
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import ml_collections
import numpy as np

from dlresearch import config as config_lib
from dlresearch import data, models
from dlresearch.ablation.stats import Verdict
from dlresearch.errors import ConfigError
from dlresearch.program import Loss, ModelBuilder, cross_entropy

if TYPE_CHECKING:  # runs.py imports this module: the judge's argument type only
    from dlresearch.ablation.runs import Run

# Every preset an experiment declares, with what it is for (the --preset flag's help).
PRESETS = {
    "quick": "a smoke run, minutes on a CPU",
    "standard": "sized to decide each MNIST part, within an hour on a 2-core CPU",
    "paper": "the original setup as far as the paper states it",
    "test": "tiny grids for the tests",
}

# What kind of claim a part tests; its rule follows from the kind (README, "Claim kinds"):
# - speed: a quantity at several matched budgets, or steps to several targets;
# - value: a quantity at a stated budget or schedule (the paper's, scaled);
# - trainability: one arm stalls (an explicit stall definition) where the other trains;
# - mechanism: follows from the formulas; a sanity check, never a verdict;
# - control: a finding beyond the paper (e.g. a control for a confound), reported beside the
#   paper's verdict, never deciding it.
Kind = Literal["speed", "value", "trainability", "mechanism", "control"]
KINDS: tuple[str, ...] = get_args(Kind)
DECIDING_KINDS = ("speed", "value", "trainability")
# Five seeds: the smallest count at which a paired t-interval over seeds is usefully narrow.
# standard's six (100-105, used in developing no rule) are the fewest at which the exact sign-flip
# test of a censored effect is bounded.
DEFAULT_SEEDS = {
    "quick": (0, 1, 2, 3, 4),
    "standard": (100, 101, 102, 103, 104, 105),
    "paper": (0, 1, 2, 3, 4),
    "test": (0, 1),
}


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

    @property
    def spec(self) -> str:
        """This target as a `train.reach_targets` entry, e.g. "train/accuracy>=0.75"."""
        return f"{self.metric}{'<=' if self.below else '>='}{self.threshold!r}"


def first_reach(*targets: Target) -> dict[str, Any]:
    """Config overrides that record each of `targets` at step resolution: the first step at which
    the mean of its training metric over the trailing `train.reach_window` steps (20 by default)
    reaches it, computed in the compiled step (`Run.steps_to` reads it)."""
    return {"train.reach_targets": tuple(t.spec for t in targets)}


# Seeds of the tuning runs: disjoint from every preset's evaluation seeds.
TUNING_SEEDS = (1000,)
# The tuning rule of the presets that judge (issue 20): every declared grid densified to at least
# RATES_PER_DECADE rates per decade over its range, on at least two tuning seeds. The smoke
# presets (quick, test) tune on the declared grid and its seeds as they are.
THOROUGH_PRESETS = ("standard", "paper")
RATES_PER_DECADE = 3
THOROUGH_TUNING_SEEDS = (1000, 1001)
# A rate selected at an edge of an arm's grid extends that arm's grid by one decade on that side
# (`Tuning.extension`), at most this many times; not at quick, the 15-minute smoke run, whose
# edges are noted only.
MAX_EXTENSIONS = 2


def _rounded(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(f"{v:.3g}") for v in values)


def log_grid(low: float, high: float, points: int = 5) -> tuple[float, ...]:
    """`points` log-spaced values from `low` to `high`, to 3 significant digits."""
    return _rounded(np.geomspace(low, high, points))


GRID_RULE = (
    "a tuple of at least 5 positive learning rates in increasing order (no repeats) spanning at "
    "least 2 decades, e.g. ablation.log_grid(0.001, 0.1)"
)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def grid_is_valid(grid: Any) -> bool:
    """Whether `grid` is a tuning grid `GRID_RULE` allows."""
    if not isinstance(grid, tuple | list) or not all(_is_real(v) for v in grid):
        return False
    increasing = all(a < b for a, b in itertools.pairwise(grid))
    return len(grid) >= 5 and grid[0] > 0 and increasing and grid[-1] / grid[0] >= 100


def _seeds_are_valid(seeds: Any) -> bool:
    integers = isinstance(seeds, tuple | list) and all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    )
    return integers and len(seeds) > 0 and len(set(seeds)) == len(seeds)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The one protocol by which every arm of a part gets its learning rate.

    Each variant trains the whole `grid` on the tuning `seeds` (disjoint from the evaluation
    seeds) with the last `holdout` of the training set held out (a fraction, `data.holdout`: 1/6
    is 10,000 of MNIST's 60,000 examples); the rate with the lowest `score`
    (the judging metric, measured on the held-out split or the training curve) is then trained
    on the evaluation seeds, on the full training set, and judged. The runner first applies the
    preset's rule (`for_preset`), and extends an arm's grid by a decade where its selected rate
    lies at an edge (`extension`).
    """

    grid: tuple[float, ...]
    score: Callable[["Run", tuple[int, ...]], float]  # lower is better
    metric: str  # what `score` measures, for the report
    holdout: float = 1 / 6
    seeds: tuple[int, ...] = TUNING_SEEDS
    extensions: int = MAX_EXTENSIONS  # at most this many grid extensions per arm

    def __post_init__(self) -> None:
        allowed = {
            "grid": (grid_is_valid, GRID_RULE),
            "holdout": (
                lambda h: _is_real(h) and 0 < h < 1,
                "a fraction of the training set in (0, 1)",
            ),
            "seeds": (_seeds_are_valid, "one or more distinct integer seeds"),
            "extensions": (
                lambda e: isinstance(e, int) and not isinstance(e, bool) and e >= 0,
                "an integer >= 0",
            ),
            "score": (callable, "a function (run, members) -> float, lower is better"),
        }
        for field, (valid, rule) in allowed.items():
            value = getattr(self, field)
            if not valid(value):
                raise ConfigError(f"Tuning.{field}={value!r}; allowed: {rule}")

    def for_preset(self, preset: str) -> "Tuning":
        """The tuning a preset runs. `THOROUGH_PRESETS`: the grid densified log-uniformly to at
        least `RATES_PER_DECADE` rates per decade between its end points (kept as they are; a
        grid already that dense is kept whole), on the declared seeds if there are two or more,
        else on `THOROUGH_TUNING_SEEDS`. Quick: as declared, without grid extensions (the smoke
        run's time). Test: as declared."""
        if preset == "quick":
            return dataclasses.replace(self, extensions=0)
        if preset not in THOROUGH_PRESETS:
            return self
        low, high = min(self.grid), max(self.grid)
        points = math.ceil(RATES_PER_DECADE * math.log10(high / low) - 1e-9) + 1
        grid = tuple(sorted(self.grid)) if len(self.grid) >= points else log_grid(low, high, points)
        seeds = self.seeds if len(self.seeds) >= 2 else THOROUGH_TUNING_SEEDS
        return dataclasses.replace(self, grid=grid, seeds=seeds)

    @property
    def per_decade(self) -> int:
        """Rates per decade of the grid (its intervals per decade of its range, rounded)."""
        return max(1, round((len(self.grid) - 1) / math.log10(max(self.grid) / min(self.grid))))

    def extension(self, grid: Sequence[float], side: Literal["low", "high"]) -> tuple[float, ...]:
        """The rates that extend `grid` by one decade beyond its `side` edge at this grid's
        density: `per_decade` rates, evenly spaced in log, the farthest a decade from the edge
        (e.g. 3 rates at standard, 2 at quick's 5 rates over 2 decades)."""
        edge, sign = (min(grid), -1) if side == "low" else (max(grid), 1)
        n = self.per_decade
        return tuple(sorted(_rounded(edge * 10 ** (sign * k / n) for k in range(1, n + 1))))


@dataclasses.dataclass(frozen=True)
class Check:
    """A sanity check a report states beside its verdict but that does not decide it: something
    that follows from the setup (e.g. from the init formulas) and would flag a broken run."""

    name: str
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Plot:
    filename: str  # in the experiment workdir
    caption: str


@dataclasses.dataclass(frozen=True)
class Previous:
    """The outcome the part's rule before the claim-kind reclassification (issue 20) gives on the
    same runs, shown beside the new one: `rule` names it in a few words."""

    rule: str
    verdict: Verdict


@dataclasses.dataclass
class Findings:
    """What a part's judge returns: its verdict and what the report shows.

    `judged` names, per variant, the members the verdict rests on (e.g. the seeds at the selected
    learning rate); results.csv marks them. Empty: every member. `previous`: the previous rule's
    outcome on the same runs.
    """

    verdict: Verdict
    tables: list[str] = dataclasses.field(default_factory=list)  # markdown
    plots: list[Plot] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    checks: list[Check] = dataclasses.field(default_factory=list)
    judged: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    previous: Previous | None = None


@dataclasses.dataclass(frozen=True)
class Part:
    """One claim of a paper and the grid that tests it.

    `judge(runs, outdir)` gets the finished runs by variant name and the directory for its plots.
    `rule` states, in words, how the judge decides; the report prints it beside the verdict.
    `kind` (one of `KINDS`) is the kind of claim, declared with `quote`, the paper's sentence it
    rests on; only parts of a `DECIDING_KINDS` kind decide the experiment's verdict. `model` and
    `loss` train every run of the part, its tuning runs included, as `train.run` takes them (the
    config's own by default). A stored run records its config, not this code: it is read back
    as it is, so a changed model or loss needs a fresh workdir.
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
    tuning: Tuning | None = None  # None: the config's learning rate(s) as they are
    # Also measure the diagnostics of the freshly initialised state (train.run starts them after
    # the first chunk of steps).
    init_diagnostics: bool = False
    # The name its runs are stored under (default: `name`): parts of one grid share its runs.
    runs: str = ""
    model: ModelBuilder = models.build
    loss: Loss = cross_entropy
    kind: Kind = dataclasses.field(kw_only=True)
    quote: str = dataclasses.field(kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not known; allowed values: {', '.join(KINDS)}")
        if not self.quote:
            raise ValueError(f"part {self.name!r}: a kind rests on a quoted sentence of the paper")

    @property
    def stored(self) -> str:
        """The directory name of its runs under the workdir's `runs/` and `tuning/`."""
        return self.runs or self.name

    @property
    def decides(self) -> bool:
        """Whether this part's outcome counts in the experiment's verdict."""
        return self.kind in DECIDING_KINDS


# The dataset of every experiment whose command line names none: the experiments' quick and
# standard presets state MNIST claims.
DEFAULT_DATASET = "mnist"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataDirs:
    """The dataset an experiment runs on and where its files are (the `--dataset`, `--data_dir` and
    `--cifar_dir` flags); an empty directory is the download cache (`data.dataset_dir`), filled on
    first use.

    A part that may run on any dataset takes `data()`: `dataset` (any registered `data.name`) from
    `dir`. A part that needs CIFAR-10 itself (a paper preset's conv net) takes `cifar10()`: its
    files are `cifar_dir`, or `dir` when `dataset` is CIFAR-10 (then `cifar_dir` stays empty).
    """

    dataset: str = DEFAULT_DATASET
    dir: str = ""
    cifar_dir: str = ""

    def __post_init__(self) -> None:
        if self.dataset not in data.DATASETS:
            raise ConfigError(
                f"dataset={self.dataset!r} is not known; allowed values: "
                f"{', '.join(data.DATASETS.names())}"
            )
        if self.dataset == "cifar10" and self.cifar_dir:
            raise ConfigError(
                "cifar_dir names CIFAR-10's files for another dataset's experiment; with "
                "dataset='cifar10' its files are dir (--data_dir)"
            )

    @property
    def title(self) -> str:
        """The dataset's name in prose, e.g. "Fashion-MNIST"."""
        return data.title(self.dataset)

    def data(self) -> dict[str, Any]:
        """Config overrides for the dataset the user named: `data.name` and `data.dir`."""
        return {"data.name": self.dataset, "data.dir": self.dir}

    def cifar10(self) -> dict[str, Any]:
        """Config overrides for CIFAR-10, for the parts that need it whatever `dataset` is."""
        return {"data.name": "cifar10", "data.dir": self.of("cifar10")}

    def of(self, dataset: str) -> str:
        """The directory given for `dataset` (a `data.name`): `dir` for the named dataset,
        `cifar_dir` for CIFAR-10, else '' (the download cache)."""
        if dataset == self.dataset:
            return self.dir
        return self.cifar_dir if dataset == "cifar10" else ""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment script's whole declaration; `parts(preset, dirs)` builds its grid."""

    name: str
    title: str
    parts: Callable[[str, DataDirs], list[Part]]


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What running an experiment concluded, for the index of several."""

    experiment: Experiment
    workdir: str
    verdict: Verdict
    seconds: float


def make_config(*overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """`base_config()` with each mapping of dotted overrides applied in turn."""
    config = config_lib.base_config()
    for mapping in overrides:
        config = config_lib.apply_overrides(config, mapping)
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
