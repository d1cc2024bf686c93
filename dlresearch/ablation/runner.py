"""Running an experiment: every variant of a part is ONE `train.run` (its seeds, and any
`sweep.lr` grid, a vmapped sweep) in `WORKDIR/runs/<part>/<variant>`. Asked again, finished runs
are read back at once and unfinished ones resume from their checkpoints (`train.run` does both).
`run_experiment` then has each part judged and writes results.csv, the plots and report.md.
"""

import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from dlresearch import config as config_lib
from dlresearch import data, train
from dlresearch import workdir as workdir_lib
from dlresearch.ablation import provenance, writeup
from dlresearch.ablation.measures import best_value, mean_std
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import (
    DEFAULT_SEEDS,
    PRESETS,
    DataDirs,
    Experiment,
    ExperimentResult,
    Part,
    Tuning,
    Variant,
)
from dlresearch.errors import ConfigError
from dlresearch.metrics import (
    INIT_DIAGNOSTICS_FILE,
    METRICS_FILE,
    TRAIN_LOSS,
    atomic_write_text,
    eval_key,
    member_records,
)


def run_configs(
    part: Part, seeds: Sequence[int], overrides: Mapping[str, Any]
) -> list[ml_collections.ConfigDict]:
    """The config of every variant: part base, then the variant, the seeds, the user's overrides."""
    configs = []
    for variant in part.variants:
        config = config_lib.apply_overrides(part.config, variant.overrides)
        config.sweep.seed = tuple(int(s) for s in seeds)
        config = config_lib.apply_overrides(config, overrides)
        config_lib.validate(config)
        if part.tuning:
            config_lib.validate(tuning_config(config, part.tuning))
        configs.append(config)
    return configs


@functools.cache
def _sizes(data_json: str) -> tuple[int, int]:
    """Training and evaluation examples of a data config (loading it also checks the files before
    any training)."""
    dataset = data.load(ml_collections.ConfigDict(json.loads(data_json)))
    return len(dataset.train_labels), len(dataset.test_labels)


def _check_data(part: str, config: ml_collections.ConfigDict) -> tuple[int, int]:
    try:
        return _sizes(json.dumps(config.data.to_dict(), sort_keys=True))
    except ConfigError as error:
        flag = "--cifar_dir" if config.data.name == "cifar10" else "--data_dir"
        raise ConfigError(f"part {part!r}: {error} (set {flag}, or leave the part out)") from None


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def tuning_config(config: ml_collections.ConfigDict, tuning: Tuning) -> ml_collections.ConfigDict:
    """The tuning run of a variant: the whole grid on the tuning seeds, with a held-out split.

    Selection reads final values and the training curve only, so the run evaluates once, at its
    end, and measures no diagnostics (neither changes what it trains).
    """
    return config_lib.apply_overrides(
        config,
        {
            "sweep.lr": tuning.grid,
            "sweep.seed": tuning.seeds,
            "data.holdout": tuning.holdout,
            "eval.every_steps": 0,
            "diagnostics.every_steps": 0,
        },
    )


def _train(
    part: Part,
    variant: Variant,
    config: ml_collections.ConfigDict,
    run_dir: str,
    name: str,
    log: Callable[[str], None],
    *,
    measure_at_init: bool,
) -> Run:
    """Train (or resume, or read back) one variant's sweep in `run_dir`."""
    members = config_lib.sweep_members(config)
    log(f"{name}: {len(members)} member(s) x {config.train.steps} steps ...")
    start = time.perf_counter()
    result = train.run(config, run_dir, measure_at_init=measure_at_init)
    init = (
        _read_json(os.path.join(run_dir, INIT_DIAGNOSTICS_FILE))
        if measure_at_init
        else [{} for _ in members]
    )
    seconds = time.perf_counter() - start
    num_train, num_eval = _check_data(part.name, config)
    run = Run(
        part=part.name,
        variant=variant,
        config=config,
        workdir=run_dir,
        members=result.members,
        history=member_records(os.path.join(run_dir, METRICS_FILE), len(result.members)),
        diverged_at=result.diverged_at,
        num_train=num_train,
        num_eval=num_eval,
        init_diagnostics=init,
        seconds=seconds,
    )
    log(f"{name}: done in {seconds:.0f} s at step {result.step}; {_brief(run)}")
    return run


def run_grid(
    part: Part,
    configs: Sequence[ml_collections.ConfigDict],
    workdir: str,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Run]:
    """Train (or resume, or just read back) every variant of `part`; its runs by variant name.

    With `part.tuning`, each variant first trains its tuning run in `tuning/<part>/<variant>`,
    then its evaluation run at the rate that tuning selected.
    """
    runs = {}
    for i, (variant, config) in enumerate(zip(part.variants, configs, strict=True)):
        name = f"{part.name}/{variant.name} ({i + 1}/{len(configs)})"
        tuning_run = None
        if part.tuning:
            tuning_run = _train(
                part,
                variant,
                tuning_config(config, part.tuning),
                os.path.join(workdir, "tuning", part.name, variant.name),
                f"{name} tuning",
                log,
                measure_at_init=False,
            )
            lr = best_value(tuning_run, "lr", part.tuning.score)
            config = config_lib.apply_overrides(config, {"optim.lr": lr})
        run_dir = os.path.join(workdir, "runs", part.name, variant.name)
        run = _train(
            part, variant, config, run_dir, name, log, measure_at_init=part.init_diagnostics
        )
        run.tuning = tuning_run
        runs[variant.name] = run
    return runs


def _brief(run: Run) -> str:
    parts = []
    for key in (TRAIN_LOSS, eval_key(run.eval_split, "accuracy")):
        values = run.final(key)
        if np.isfinite(values).any():
            parts.append(f"{key} {mean_std(values)}")
    diverged = sum(d is not None for d in run.diverged_at)
    if diverged:
        parts.append(f"{diverged}/{len(run.members)} diverged")
    return ", ".join(parts)


def _selected_parts(experiment: Experiment, parts: list[Part], only: Sequence[str]) -> list[Part]:
    names = [p.name for p in parts]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(
            f"parts={','.join(unknown)} not known; parts of {experiment.name}: {', '.join(names)}"
        )
    return [p for p in parts if not only or p.name in only]


def run_experiment(
    experiment: Experiment,
    *,
    preset: str,
    workdir: str,
    data_dirs: DataDirs | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run (or resume) `experiment`'s preset in `workdir` and write results.csv, plots, report.md.

    Every config is validated and every dataset checked before the first step is trained, so a bad
    setting fails fast with `ConfigError`.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not known; allowed values: {', '.join(PRESETS)}")
    seeds = tuple(DEFAULT_SEEDS[preset] if seeds is None else seeds)
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    data_dirs = data_dirs or DataDirs()
    overrides = overrides or {}
    preset_parts = experiment.parts(preset, data_dirs)
    parts = _selected_parts(experiment, preset_parts, only)
    configs = {p.name: run_configs(p, seeds, overrides) for p in parts}
    for part in parts:
        for config in configs[part.name]:
            _check_data(part.name, config)

    command = writeup.reproduce_command(
        experiment.name,
        preset=preset,
        workdir=workdir,
        data_dirs=data_dirs,
        seeds=seeds,
        only=only,
        overrides=overrides,
    )
    os.makedirs(workdir, exist_ok=True)
    # One process per experiment workdir, as per run workdir (train.run locks those).
    with workdir_lib.lock(workdir):
        start = time.perf_counter()
        runs = {}
        for part in parts:
            runs[part.name] = run_grid(
                part, configs[part.name], workdir, log=lambda s: log(f"[{experiment.name}] {s}")
            )
        results = [(part, part.judge(runs[part.name], workdir)) for part in parts]
        verdict = writeup.experiment_verdict(results, partial=len(parts) < len(preset_parts))
        seconds = time.perf_counter() - start
        rows = writeup.results_rows(parts, runs, {p.name: f for p, f in results})
        atomic_write_text(os.path.join(workdir, "results.csv"), writeup.csv_text(rows))
        report = writeup.report_text(
            experiment.title,
            verdict,
            preset=preset,
            parts=parts,
            command=command,
            seconds=seconds,
            provenance=provenance.stamp(c for p in parts for c in configs[p.name]),
            sections=[writeup.part_section(p, runs[p.name], f, seeds) for p, f in results],
        )
        atomic_write_text(os.path.join(workdir, "report.md"), report)
    log(f"[{experiment.name}] Verdict: {verdict.outcome}. {verdict.reason} ({seconds:.0f} s)")
    return ExperimentResult(experiment, workdir, verdict, seconds)
