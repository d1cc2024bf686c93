"""The command line shared by every experiment script: `main` for one, `main_all` for several."""

import logging as pylogging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from dlresearch import config as config_lib
from dlresearch import data, train
from dlresearch.ablation.runner import Share, claim_workdir, run_experiment, stop_on_signal
from dlresearch.ablation.spec import (
    DEFAULT_DATASET,
    DEFAULT_SEEDS,
    PRESETS,
    DataDirs,
    Experiment,
)
from dlresearch.ablation.writeup import write_index
from dlresearch.cli import check_overrides, fail, parse_flags, reported

ALL = "all"  # what an experiment workdir of several experiments records as its experiment


def _define_flags() -> Any:
    """The flags of every experiment script, defined when a script runs (not on import)."""
    flags.DEFINE_enum(
        "preset", "quick", list(PRESETS), "; ".join(f"{k}: {v}" for k, v in PRESETS.items()) + "."
    )
    flags.DEFINE_string(
        "workdir", None, "Experiment directory: runs/, results.csv, *.png, report.md."
    )
    flags.DEFINE_string(
        "dataset",
        DEFAULT_DATASET,
        f"The dataset of every part that is not tied to one: {', '.join(data.DATASETS.names())}.",
    )
    flags.DEFINE_string(
        "data_dir", "", "--dataset's files (default: the download cache, filled on first use)."
    )
    flags.DEFINE_string(
        "cifar_dir",
        "",
        "CIFAR-10 binary files for the parts that need CIFAR-10 whatever --dataset is (paper "
        "presets; default: the download cache).",
    )
    defaults = "; ".join(
        f"{','.join(map(str, seeds))} for {preset}" for preset, seeds in DEFAULT_SEEDS.items()
    )
    flags.DEFINE_list("seeds", None, f"Evaluation seeds, comma-separated (default: {defaults}).")
    flags.DEFINE_list("parts", [], "Run only these parts (default: all of the preset).")
    flags.DEFINE_integer(
        "num_tasks",
        None,
        "Spread the experiment's variants over this many processes sharing --workdir (default: "
        "$SLURM_ARRAY_TASK_COUNT, else 1); the last to finish writes the report.",
    )
    flags.DEFINE_integer(
        "task_index",
        None,
        "This process's task, 0..num_tasks-1 (default: $SLURM_ARRAY_TASK_ID minus "
        "$SLURM_ARRAY_TASK_MIN).",
    )
    flags.DEFINE_bool(
        "report_only",
        False,
        "Train nothing: write the report from the finished runs (refused while any is not).",
    )
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
        if record.name != train.logger.name:
            return False
        if time.monotonic() - self._last < 30:
            return False
        self._last = time.monotonic()
        return True


def _share() -> Share:
    """This process's share from --num_tasks/--task_index, else from a SLURM job array."""
    fv, env = flags.FLAGS, os.environ
    if (fv.num_tasks is None) != (fv.task_index is None):
        fail("--num_tasks and --task_index go together")
    if fv.num_tasks is not None:
        return Share(fv.task_index, fv.num_tasks)
    if "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return Share(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]))
    return Share()


def _run_from_flags(experiments: Sequence[Experiment], config_flag: Any) -> None:
    fv = flags.FLAGS
    try:
        seeds = None if fv.seeds is None else [int(s) for s in fv.seeds]
    except ValueError:
        fail(f"--seeds={','.join(fv.seeds)} must be integers")
    if fv.parts and len(experiments) > 1:
        fail("--parts selects parts of one experiment; run that experiment's script instead")
    overrides = config_flags.get_override_values(fv[config_flag.name])
    with reported():
        dirs = DataDirs(dataset=fv.dataset, dir=fv.data_dir, cifar_dir=fv.cifar_dir)
        share = _share()
        with stop_on_signal():
            if len(experiments) == 1:
                result = run_experiment(
                    experiments[0],
                    preset=fv.preset,
                    workdir=fv.workdir,
                    data_dirs=dirs,
                    seeds=seeds,
                    overrides=overrides,
                    only=fv.parts,
                    share=share,
                    report_only=fv.report_only,
                )
                if result is not None:  # the closing summary: where to read the verdict
                    print(
                        f"report: {os.path.join(fv.workdir, 'report.md')}  (workdir {fv.workdir})"
                    )
            else:
                _run_all(experiments, dirs, seeds, overrides, share)


def _run_all(
    experiments: Sequence[Experiment],
    dirs: DataDirs,
    seeds: list[int] | None,
    overrides: dict[str, Any],
    share: Share,
) -> None:
    """Every experiment in WORKDIR/<name>, then the index of their reports in WORKDIR."""
    fv = flags.FLAGS
    claim_workdir(fv.workdir, ALL, record=False)
    outcomes = []
    for experiment in experiments:
        outcomes.append(
            run_experiment(
                experiment,
                preset=fv.preset,
                workdir=os.path.join(fv.workdir, experiment.name),
                data_dirs=dirs,
                seeds=seeds,
                overrides=overrides,
                share=share,
                report_only=fv.report_only,
            )
        )
        claim_workdir(fv.workdir, ALL)  # once a first experiment is under way
    if None in outcomes:
        print("index: not written (a report was left to another task); --report_only writes it")
        return
    write_index(outcomes, fv.workdir)
    print(f"index: {os.path.join(fv.workdir, 'report.md')}")


def main(experiment: Experiment) -> None:
    """The command line of one experiment script (`python -m experiments.<name> ...`)."""
    main_all([experiment])


def main_all(experiments: Sequence[Experiment]) -> None:
    """Run every experiment, each in WORKDIR/<name> when there are several, and an index report."""
    check_overrides(sys.argv, config_lib.base_config(), "config")
    try:
        # config_flags reads the --config.<field> overrides from sys.argv when the flag is defined.
        config_flag = _define_flags()
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        fail(f"bad config override: {error}")

    def run(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.get_absl_handler().addFilter(_QuietRuns())
        _run_from_flags(experiments, config_flag)

    app.run(run, flags_parser=parse_flags)
