"""Compare optimizers on test problems under one equal tuning protocol, in one command:

    python -m dlresearch.compare_optimizers --optimizers=adam,momentum,optax.lion,myopt:make \
        --problems=mnist_mlp --tuning_budget=8 --preset=quick --workdir=/tmp/cmp \
        --data_dir=../shared/data/mnist

(also `dlresearch-compare-optimizers ...`). Optimizers: the built-in names, any optax optimizer
(`optax.nadamw`), or your own `module:factory`; `LABEL=NAME` names one twice under two spaces.
Each searches its learning rate log-uniformly over [1e-4, 1] unless `--space` says otherwise, e.g.
`--space='adam lr=1e-5..1e-1 b1=0.5..0.99 eps=1e-8..1'`. `--tuning_budget` is K, the points per
optimizer (`optimizer_benchmark.protocol`). Writes results.csv, plots and report.md to the workdir;
a stopped run resumes when asked again. Bad names or spaces: one `error:` line, exit 2, nothing
written.
"""

import sys

from absl import app, flags, logging

from dlresearch.ablation.spec import DEFAULT_SEEDS, PRESETS
from dlresearch.cli import fail, parse_flags, reported
from dlresearch.errors import ConfigError
from dlresearch.optimizer_benchmark import benchmark, problems, protocol, search_space

_OPTIMIZERS = flags.DEFINE_list(
    "optimizers", ["adam", "momentum"], "Optimizers (NAME or LABEL=NAME)."
)
_PROBLEMS = flags.DEFINE_list(
    "problems", ["mnist_mlp"], "Test problems (optimizer_benchmark.problems)."
)
_BUDGET = flags.DEFINE_integer("tuning_budget", 16, "K: tuning points per optimizer and problem.")
_PRESET = flags.DEFINE_enum(
    "preset", "quick", list(PRESETS), "Budgets (each problem's `ablation.Budget`)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where runs, results.csv, plots and report.md go.")
_BASELINE = flags.DEFINE_string(
    "baseline", "", "The optimizer each other is compared with (default: the first)."
)
_SPACES = flags.DEFINE_multi_string(
    "space", [], "'LABEL field=low..high[:scale] ...': a search space."
)
_SEEDS = flags.DEFINE_list("seeds", None, "Evaluation seeds (default: 5; 2 for test).")
_DIRS = {
    "data_dir": flags.DEFINE_string(
        "data_dir", "", "MNIST IDX files (default: the download cache)."
    ),
    "fashion_dir": flags.DEFINE_string("fashion_dir", "", "Fashion-MNIST IDX files."),
    "cifar_dir": flags.DEFINE_string("cifar_dir", "", "CIFAR-10 binary files."),
}
flags.mark_flag_as_required("workdir")


def _arms() -> list[search_space.Arm]:
    arms = [search_space.parse_arm(text) for text in _OPTIMIZERS.value]
    labels = [a.label for a in arms]
    if len(set(labels)) < len(labels) or not arms:
        raise ConfigError(
            f"--optimizers={','.join(labels)} must name distinct optimizers, at least one"
        )
    for text in _SPACES.value:
        arms = search_space.with_space(arms, text)
    baseline = _BASELINE.value or labels[0]
    if baseline not in labels:
        raise ConfigError(f"--baseline={baseline!r} is not compared; allowed: {', '.join(labels)}")
    return [a for a in arms if a.label == baseline] + [a for a in arms if a.label != baseline]


def _settings() -> list[protocol.Setting]:
    if _BUDGET.value < 2:
        raise ConfigError(f"--tuning_budget={_BUDGET.value} is not valid; allowed: an integer >= 2")
    try:
        seeds = (
            tuple(int(s) for s in _SEEDS.value) if _SEEDS.value else DEFAULT_SEEDS[_PRESET.value]
        )
    except ValueError:
        raise ConfigError(f"--seeds={','.join(_SEEDS.value)} must be integers") from None
    settings = []
    for name in _PROBLEMS.value:
        try:
            problem = problems.PROBLEMS.get(name)
        except ConfigError as error:
            raise ConfigError(f"--{error}") from None
        flag = problems.DATA_FLAGS[problem.dataset]
        data_dir = _DIRS[flag].value if flag else ""
        settings.append(
            protocol.Setting(
                name, problem, problem.config(_PRESET.value, data_dir), seeds, _BUDGET.value
            )
        )
    return settings


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    # Orbax logs every save at INFO through absl; the benchmark prints its own progress lines.
    logging.set_verbosity(logging.WARNING)
    command = " ".join(["python -m dlresearch.compare_optimizers", *sys.argv[1:]])
    with reported():
        benchmark.run(
            _settings(),
            _arms(),
            _WORKDIR.value,
            name="compare_optimizers",
            title="Optimizers compared under one tuning protocol",
            command=command,
        )


def run() -> None:
    """The console script `dlresearch-compare-optimizers`."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
