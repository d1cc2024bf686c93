"""Running an experiment: every variant of a part is ONE `train.run` (its seeds, and any
`sweep.lr` grid, a vmapped sweep) in `WORKDIR/runs/<part>/<variant>`. Asked again, finished runs
are read back at once and unfinished ones resume from their checkpoints (`train.run` does both).
`run_experiment` then has each part judged and writes results.csv, the plots and report.md.

Several processes (tasks) can share one experiment: each trains its `Share` of the variants and
reads the others' finished runs back from their files (`FINISHED_FILE` marks a finished run).
"""

import dataclasses
import fcntl
import functools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import ml_collections
import numpy as np

from dlresearch import config as config_lib
from dlresearch import data, models, train
from dlresearch.ablation import provenance, writeup
from dlresearch.ablation.measures import best_value, edge_side, mean_std
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
from dlresearch.ablation.stats import Verdict
from dlresearch.errors import ConfigError, Interrupted
from dlresearch.metrics import (
    INIT_DIAGNOSTICS_FILE,
    METRICS_FILE,
    TRAIN_LOSS,
    atomic_write_text,
    eval_key,
    member_records,
)
from dlresearch.program import Loss, ModelBuilder, cross_entropy

# In a run's workdir, written once `train.run` returned: the step it finished at, its divergences.
FINISHED_FILE = "finished.json"
# In an experiment's workdir: the experiment it holds, and the turn to write its outputs.
EXPERIMENT_FILE = "experiment.json"
WRITER_LOCK_FILE = "outputs.lock"


def run_configs(
    part: Part, seeds: Sequence[int], overrides: Mapping[str, Any]
) -> list[ml_collections.ConfigDict]:
    """The config of every variant: part base, then the variant, the seeds, the user's overrides."""
    configs = []
    for variant in part.variants:
        config = config_lib.apply_overrides(part.config, variant.overrides)
        config.sweep.seed = tuple(int(s) for s in seeds)
        config = config_lib.apply_overrides(config, overrides)
        train.check(config, model=part.model)
        _check_curves(part, config)
        if part.tuning:
            train.check(tuning_config(config, part.tuning), model=part.model)
        configs.append(config)
    return configs


def _check_curves(part: Part, config: ml_collections.ConfigDict) -> None:
    """Judges compare training curves: the logging interval must fit twice in a run (its first
    line, and the one at its last step). An evaluation only at the end is a design of its own."""
    every = config.train.log_every_steps
    if every >= config.train.steps:
        raise ConfigError(
            f"part {part.name!r}: train.steps={config.train.steps} is not above "
            f"train.log_every_steps={every}, so each run logs once; raise train.steps"
        )


@functools.cache
def _sizes(data_json: str) -> tuple[int, int]:
    """Training and evaluation examples of a data config (loading it also checks the files before
    any training)."""
    dataset = data.load(ml_collections.ConfigDict(json.loads(data_json)))
    return len(dataset.train_labels), len(dataset.test_labels)


def check_data(part: str, config: ml_collections.ConfigDict) -> tuple[int, int]:
    """Training and evaluation examples of `config`'s data, loading it (once per data config) to
    check its files; `ConfigError` naming the flag that gives its directory if it cannot."""
    try:
        return _sizes(json.dumps(config.data.to_dict(), sort_keys=True))
    except ConfigError as error:
        flag = (
            "--cifar_dir (--data_dir with --dataset=cifar10)"
            if config.data.name == "cifar10"
            else "--data_dir"
        )
        raise ConfigError(f"part {part!r}: {error} (set {flag}, or leave the part out)") from None


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def tuning_config(
    config: ml_collections.ConfigDict, tuning: Tuning, grid: Sequence[float] = ()
) -> ml_collections.ConfigDict:
    """The tuning run of a variant: the whole grid (or the rates `grid` of an extension) on the
    tuning seeds, with a held-out split.

    Selection reads final values and the training curve only, so the run evaluates once, at its
    end, and measures no diagnostics (neither changes what it trains).
    """
    return config_lib.apply_overrides(
        config,
        {
            "sweep.lr": tuple(grid) or tuning.grid,
            "sweep.seed": tuning.seeds,
            "data.holdout": tuning.holdout,
            "eval.every_steps": 0,
            "diagnostics.every_steps": 0,
        },
    )


@contextmanager
def stop_on_signal() -> Iterator[None]:
    """SIGINT and SIGTERM raise `errors.Interrupted` wherever the experiment is.

    Inside `train.run` its own handler takes over (it commits the run's checkpoint, then raises
    `Interrupted`) and restores this one; outside a run nothing is half-done that a rerun would
    not redo, so stopping at once is safe. A further signal while stopping is ignored.
    """
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_run(
    config: ml_collections.ConfigDict,
    run_dir: str,
    name: str,
    log: Callable[[str], None],
    *,
    model: ModelBuilder = models.build,
    loss: Loss = cross_entropy,
    measure_at_init: bool = False,
) -> float:
    """Train (or resume, or read back) one sweep in `run_dir` (with `model` and `loss`, as
    `train.run` takes them), then mark it finished (`FINISHED_FILE`); its seconds. `name` labels
    its lines in `log`. `read_run` reads it back.

    The mark is removed first: a run resumed from an earlier checkpoint (its newest deleted) is
    unfinished until `train.run` returns again. A stop raises `errors.Interrupted` (after the run
    committed its checkpoint) with the run left unmarked.
    """
    members = config_lib.sweep_members(config)
    log(f"{name}: {len(members)} member(s) x {config.train.steps} steps ...")
    start = time.perf_counter()
    marker = os.path.join(run_dir, FINISHED_FILE)
    with suppress(FileNotFoundError):
        os.remove(marker)
    result = train.run(config, run_dir, model=model, loss=loss, measure_at_init=measure_at_init)
    atomic_write_text(marker, json.dumps({"step": result.step, "diverged_at": result.diverged_at}))
    seconds = time.perf_counter() - start
    log(f"{name}: done in {seconds:.0f} s at step {result.step}")
    return seconds


def read_run(
    name: str, variant: Variant, config: ml_collections.ConfigDict, run_dir: str, seconds: float
) -> Run | None:
    """The finished run of `config` in `run_dir` read back from its files, as a `Run` of part
    `name` (no lock needed: a finished run is no longer written); None while it is not finished.

    `ConfigError` if `run_dir` holds another config, or a finished run whose metrics.jsonl lacks a
    line its config logs (a damaged run: the message says to delete it and run again).
    """
    path = os.path.join(run_dir, FINISHED_FILE)
    if not os.path.exists(path):
        return None
    stored = _read_json(os.path.join(run_dir, "config.json"))
    changed = [
        c
        for c in config_lib.diff(stored, json.loads(config_lib.to_json(config)))
        if not c.startswith("parallel.")
    ]
    if changed:
        raise ConfigError(f"{run_dir} holds a run with a different config: {'; '.join(changed)}")
    finished = _read_json(path)
    members = config_lib.sweep_members(config)
    num_train, num_eval = check_data(name, config)
    run = Run(
        part=name,
        variant=variant,
        config=config,
        workdir=run_dir,
        members=members,
        history=member_records(os.path.join(run_dir, METRICS_FILE), len(members)),
        diverged_at=finished["diverged_at"],
        num_train=num_train,
        num_eval=num_eval,
        init_diagnostics=(
            _read_json(os.path.join(run_dir, INIT_DIAGNOSTICS_FILE))
            if os.path.exists(os.path.join(run_dir, INIT_DIAGNOSTICS_FILE))
            else [{} for _ in members]
        ),
        seconds=seconds,
    )
    _check_history(run, finished["step"])
    return run


def _check_history(run: Run, last: int) -> None:
    """Refuse a run finished at step `last` whose metrics.jsonl lacks a line its config logs (a
    file cut short or edited after the run finished: its checkpoint cannot recompute them).

    Chunks end at every multiple of each interval, and the train metrics are logged at the last
    step whatever the interval (a run halted by divergence logs them there too).
    """
    config, total = run.config, run.config.train.steps
    at_end = {total} if last == total else set()
    logged = {
        "train metrics": (TRAIN_LOSS, config.train.log_every_steps, {last}),
        "evaluation": (eval_key(run.eval_split, "loss"), config.eval.every_steps, at_end),
    }
    if config.diagnostics.every_steps:
        logged["diagnostics"] = ("diag/", config.diagnostics.every_steps, at_end)
    for what, (key, every, also) in logged.items():
        wanted = set(range(every, last + 1, every) if every else ()) | also
        for member, records in enumerate(run.history):
            have = {r["step"] for r in records if any(k.startswith(key) for k in r)}
            if wanted - have:
                raise ConfigError(
                    f"{run.workdir}/{METRICS_FILE} lacks the {what} of member {member} at step "
                    f"{min(wanted - have)} (the run finished at {last}; the file was cut short or "
                    f"edited since): delete {run.workdir} and run the experiment again to "
                    "recompute it"
                )


def _variant_run(
    part: Part,
    variant: Variant,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    name: str = "",
    log: Callable[[str], None] = print,
) -> Run | None:
    """A variant's evaluation run (with its tuning run), trained first when `name` is given (the
    variant's label in the log); None if it has not finished (and was not trained here)."""
    tuning_run = None
    if part.tuning:
        tuning_run = _tuning_run(part, variant, config, workdir, name=name, log=log)
        if tuning_run is None:
            return None
        lr = best_value(tuning_run, "lr", part.tuning.score)
        if name:
            log(f"{name} tuning: selected lr {lr:g} (by {part.tuning.metric})")
        config = config_lib.apply_overrides(config, {"optim.lr": lr})
    run_dir = os.path.join(workdir, "runs", part.stored, variant.name)
    seconds = (
        train_run(
            config,
            run_dir,
            name,
            log,
            model=part.model,
            loss=part.loss,
            measure_at_init=part.init_diagnostics,
        )
        if name
        else 0.0
    )
    run = read_run(part.name, variant, config, run_dir, seconds)
    if run is not None:
        run.tuning = tuning_run
        if name:
            log(f"{name}: {_brief(run)}")
    return run


def _tuning_run(
    part: Part,
    variant: Variant,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    name: str,
    log: Callable[[str], None],
) -> Run | None:
    """A variant's tuning run, its grid extended where the selected rate lies at an edge: one
    decade beyond that edge (`Tuning.extension`), trained as a run of its own in `extend-<k>`
    inside the tuning run's directory, the selection then made over the union; at most
    `tuning.extensions` times. Trained (or resumed) when `name` is given, else read back; the runs
    merged as one, or None while one of them is not finished."""
    assert part.tuning is not None
    tuning_dir = os.path.join(workdir, "tuning", part.stored, variant.name)
    pieces: list[Run] = []
    added: tuple[float, ...] = ()
    for k in range(part.tuning.extensions + 1):
        run_dir = os.path.join(tuning_dir, f"extend-{k}") if k else tuning_dir
        grid_config = tuning_config(config, part.tuning, added)
        rates = ", ".join(f"{r:g}" for r in added)
        what = f"{name} tuning" + (f" extension {k} (lr {rates})" if k else "")
        seconds = (
            train_run(grid_config, run_dir, what, log, model=part.model, loss=part.loss)
            if name
            else 0.0
        )
        piece = read_run(part.name, variant, grid_config, run_dir, seconds)
        if piece is None:
            return None
        pieces.append(piece)
        merged = _merged(pieces)
        grid = [m["lr"] for m in merged.members]
        side = edge_side(grid, best_value(merged, "lr", part.tuning.score))
        if side is None:
            break
        added = part.tuning.extension(grid, side)
    return merged


def _merged(pieces: Sequence[Run]) -> Run:
    """A tuning run and its extensions as one run over the union of their grids."""
    first, extensions = pieces[0], pieces[1:]
    if not extensions:
        return first
    grid = sorted({m["lr"] for p in pieces for m in p.members})
    return dataclasses.replace(
        first,
        config=config_lib.apply_overrides(first.config, {"sweep.lr": tuple(grid)}),
        members=[m for p in pieces for m in p.members],
        history=[h for p in pieces for h in p.history],
        diverged_at=[d for p in pieces for d in p.diverged_at],
        init_diagnostics=[d for p in pieces for d in p.init_diagnostics],
        seconds=sum(p.seconds for p in pieces),
        extensions=tuple(tuple(p.config.sweep.lr) for p in extensions),
    )


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


def _check_replication(parts: Sequence[Part], seeds: Sequence[int], overrides: Mapping) -> None:
    """Refuse what would count one run as several: a repeated seed, an evaluation seed that is a
    tuning seed, or an override of an axis the runner sweeps itself (`sweep.*`: the seeds, a
    tuning grid) or of a rate a part tunes."""
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(
            f"seeds={','.join(map(str, seeds))} repeats seed(s) {', '.join(map(str, repeated))}: "
            "each seed must be distinct (a repeated seed is one run counted twice)"
        )
    tuning = sorted({s for p in parts if p.tuning for s in p.tuning.seeds} & set(seeds))
    if tuning:
        raise ConfigError(
            f"seeds={','.join(map(str, seeds))} include the tuning seed(s) "
            f"{', '.join(map(str, tuning))}: evaluation seeds must differ from the tuning seeds"
        )
    swept = sorted(k for k in overrides if k.startswith("sweep."))
    if swept:
        raise ConfigError(
            f"config.{swept[0]} is set by the experiment itself (seeds: --seeds; learning rates: "
            "each part's tuning); leave it out"
        )
    tuned = [p.name for p in parts if p.tuning]
    if "optim.lr" in overrides and tuned:
        raise ConfigError(
            f"config.optim.lr: parts {', '.join(tuned)} tune the learning rate themselves; leave "
            "it out, or run only parts without tuning (--parts)"
        )


@dataclasses.dataclass(frozen=True)
class Share:
    """The variants one process of an experiment trains: of its variants in part order, the k-th
    (its tuning run, then its evaluation run) goes to task k % count. Every task reads the others'
    finished runs back; the last to finish writes the report."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"num_tasks={self.count} must be at least 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"task_index={self.index} must be in 0..{self.count - 1} (num_tasks={self.count})"
            )

    def trains(self, k: int) -> bool:
        return k % self.count == self.index


def claim_workdir(workdir: str, name: str, *, record: bool = True) -> None:
    """Refuse a `workdir` that holds another experiment than `name`; if `record`, record `name`
    in it (`EXPERIMENT_FILE`). Several processes of one experiment share its workdir."""
    path = os.path.join(workdir, EXPERIMENT_FILE)
    if record and not os.path.exists(path):
        os.makedirs(workdir, exist_ok=True)
        with _sole_writer(workdir):  # tasks starting together: one writes, the others read it
            if not os.path.exists(path):
                atomic_write_text(path, json.dumps({"experiment": name}))
    if os.path.exists(path):
        held = _read_json(path)["experiment"]
        if held != name:
            raise ConfigError(
                f"{workdir} holds experiment {held!r} (its {EXPERIMENT_FILE}); give {name} "
                "another --workdir"
            )


@contextmanager
def _sole_writer(workdir: str) -> Iterator[None]:
    """Wait until no other task of the experiment writes its shared files (`EXPERIMENT_FILE`, the
    outputs), then hold that turn: tasks finishing together both write the same report from the
    same runs, one after the other."""
    with open(os.path.join(workdir, WRITER_LOCK_FILE), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
        yield


def run_experiment(
    experiment: Experiment,
    *,
    preset: str,
    workdir: str,
    data_dirs: DataDirs | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Sequence[str] = (),
    share: Share = Share(),
    report_only: bool = False,
    log: Callable[[str], None] = print,
) -> ExperimentResult | None:
    """Run (or resume) `experiment`'s preset in `workdir` and write results.csv, plots, report.md.

    Every config is validated and every dataset checked before the first step is trained, so a bad
    setting fails fast with `ConfigError`, with nothing written. This process trains its `share`
    of the variants, then reads every run back: while one is not finished (another task is on
    it), it returns None and leaves the report to the task that finishes last. `report_only`
    trains nothing and refuses (`ConfigError`) while any run is not finished. SIGINT or SIGTERM
    anywhere raises `errors.Interrupted` (after the current run committed its checkpoint) with
    nothing judged or written.
    """
    with stop_on_signal():
        start = time.perf_counter()
        plan = _plan(experiment, preset, data_dirs or DataDirs(), seeds, overrides or {}, only)
        claim_workdir(workdir, experiment.name, record=not report_only)

        def say(line: str) -> None:
            log(f"[{experiment.name}] {line}")

        runs = _collect(plan, workdir, share=share, train=not report_only, log=say)
        missing = [name for name, run in runs.items() if run is None]
        if missing and report_only:
            raise ConfigError(
                f"{len(missing)} of {len(runs)} variants have not finished ({', '.join(missing)}); "
                "run the experiment (or each of its tasks) to finish them"
            )
        if missing:
            say(
                f"{len(missing)} of {len(runs)} variants are not finished yet "
                f"({', '.join(missing)}): the task that finishes last writes the report"
            )
            return None
        with _sole_writer(workdir):
            verdict = _write_outputs(plan, runs, workdir, start)
    seconds = time.perf_counter() - start
    say(f"Verdict: {verdict.outcome}. {verdict.reason} ({seconds:.0f} s)")
    return ExperimentResult(experiment, workdir, verdict, seconds)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """An experiment's checked grid: what `run_experiment` trains, reads back and reports."""

    experiment: Experiment
    preset: str
    data_dirs: DataDirs
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any]
    only: Sequence[str]
    parts: list[Part]
    partial: bool  # only some of the preset's parts
    configs: dict[str, list[ml_collections.ConfigDict]]  # per part, per variant


def _plan(
    experiment: Experiment,
    preset: str,
    data_dirs: DataDirs,
    seeds: Sequence[int] | None,
    overrides: Mapping[str, Any],
    only: Sequence[str],
) -> _Plan:
    """Every check before any work: preset, seeds, parts, overrides, configs and datasets."""
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not known; allowed values: {', '.join(PRESETS)}")
    seeds = tuple(DEFAULT_SEEDS[preset] if seeds is None else seeds)
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    preset_parts = [
        dataclasses.replace(p, tuning=p.tuning.for_preset(preset)) if p.tuning else p
        for p in experiment.parts(preset, data_dirs)
    ]
    parts = _selected_parts(experiment, preset_parts, only)
    _check_replication(parts, seeds, overrides)
    configs = {p.name: run_configs(p, seeds, overrides) for p in parts}
    for part in parts:
        for config in configs[part.name]:
            check_data(part.name, config)
    partial = len(parts) < len(preset_parts)
    return _Plan(experiment, preset, data_dirs, seeds, overrides, only, parts, partial, configs)


def _collect(
    plan: _Plan, workdir: str, *, share: Share, train: bool, log: Callable[[str], None]
) -> dict[str, Run | None]:
    """Train this process's share of the variants (if `train`), then read every run back; by
    'part/variant', each variant's evaluation run (None: not finished)."""
    variants = [
        (part, variant, config)
        for part in plan.parts
        for variant, config in zip(part.variants, plan.configs[part.name], strict=True)
    ]
    # Parts that share their runs (`Part.runs`) train each once: k counts distinct runs.
    stored = {(p.stored, v.name): None for p, v, _ in variants}
    index = {where: k for k, where in enumerate(stored)}
    runs: dict[str, Run | None] = {}
    for part, variant, config in variants:
        k = index.pop((part.stored, variant.name), None)
        if train and k is not None and share.trains(k):
            name = f"{part.name}/{variant.name} ({k + 1}/{len(stored)})"
            runs[f"{part.name}/{variant.name}"] = _variant_run(
                part, variant, config, workdir, name=name, log=log
            )
    for part, variant, config in variants:
        key = f"{part.name}/{variant.name}"
        if key not in runs:
            runs[key] = _variant_run(part, variant, config, workdir)
    return {f"{p.name}/{v.name}": runs[f"{p.name}/{v.name}"] for p, v, _ in variants}


def _write_outputs(
    plan: _Plan, runs: Mapping[str, Run | None], workdir: str, start: float
) -> Verdict:
    """Judge every part and write results.csv, its plots and report.md; the experiment's verdict."""
    by_part = {p.name: {v.name: runs[f"{p.name}/{v.name}"] for v in p.variants} for p in plan.parts}
    results = [(part, part.judge(by_part[part.name], workdir)) for part in plan.parts]
    verdict = writeup.experiment_verdict(results, partial=plan.partial)
    rows = writeup.results_rows(plan.parts, by_part, {p.name: f for p, f in results})
    atomic_write_text(os.path.join(workdir, "results.csv"), writeup.csv_text(rows))
    command = writeup.reproduce_command(
        plan.experiment.name,
        preset=plan.preset,
        workdir=workdir,
        data_dirs=plan.data_dirs,
        seeds=plan.seeds,
        only=plan.only,
        overrides=plan.overrides,
    )
    report = writeup.report_text(
        plan.experiment.title,
        verdict,
        preset=plan.preset,
        parts=plan.parts,
        command=command,
        seconds=time.perf_counter() - start,
        provenance=provenance.stamp(c for p in plan.parts for c in plan.configs[p.name]),
        sections=[writeup.part_section(p, by_part[p.name], f, plan.seeds) for p, f in results],
    )
    atomic_write_text(os.path.join(workdir, "report.md"), report)
    return verdict
