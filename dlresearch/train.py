"""Training a config: the `Trainer` (devices, data, compiled programs) and the run loop `run`.

The pure functions it compiles are in `program`; `Trainer.chunks` steps a state from one chunk
boundary to the next, and `run` adds what a run in a workdir needs around it: resuming, logging,
evaluation, diagnostics, checkpoints and a graceful stop.

Your own model and loss run on the same loop (sweeps, parallel modes, checkpoints, exact resume,
metrics): `run(config, workdir, model=..., loss=...)`. The config's own are the defaults, passed
the same way (`models.build`, `program.cross_entropy`).
- `model(model_config, num_classes, *, axis_name, dtype) -> flax.linen.Module`, called with the
  config's `model` section: a builder like `models.build`. The module's
  `__call__(images, *, train: bool)` maps normalised float32 images [B, H, W, C] to float32
  logits [B, num_classes]; with `train=True` it may draw from the "dropout" rng and update a
  "batch_stats" collection (BatchNorm), which evaluation then uses with `train=False`. In a
  parallel mode each device sees its part of the batch; `axis_name` names the device axis for a
  BatchNorm that syncs its statistics (None on one device). Parameters named "kernel" are scaled
  by `sweep.init_scale`; diagnostics need the layers it sows (see `diagnostics`).
- `loss(logits, labels) -> per-example losses [B]`, labels int32 [B]: a step minimises its mean
  over the batch, and `train/loss` and the evaluations' loss report it.
The workdir records the config, not the code: resume a run with the model and loss it started with.
"""

import dataclasses
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from dlresearch import checkpoint, compilation, data, diagnostics, metrics, models
from dlresearch import config as config_lib
from dlresearch import workdir as workdir_lib
from dlresearch.errors import ConfigError, Interrupted
from dlresearch.metrics import MetricWriter, Progress, atomic_write_text
from dlresearch.parallel import (
    MEMBERS,
    MemberGroups,
    Parallel,
    first_signal,
    gather_text,
    initialize_distributed,
)
from dlresearch.program import (
    NOT_DIVERGED,
    NOT_REACHED,
    Loss,
    ModelBuilder,
    TrainState,
    build_program,
    cross_entropy,
    init_states,
    member_inputs,
)

logger = logging.getLogger(__name__)

# A stop request (SIGTERM, SIGINT) is honoured within about this many seconds: chunks are cut to
# what the measured step time allows (see `Trainer.chunks`).
STOP_WITHIN_SECONDS = 10.0


@dataclasses.dataclass
class RunResult:
    """What a finished (or stopped) run reports back to its caller, one entry per member."""

    members: list[dict[str, float]]
    final: list[dict[str, float]]  # last train and eval metrics per member
    diverged_at: list[int | None]
    step: int
    stopped_early: bool = False  # every member diverged and `halt_on_nan` stopped the run


def _boundaries(config: ml_collections.ConfigDict) -> list[int]:
    """Intervals at which a chunk must end; absolute multiples, so resumed runs chunk identically."""
    intervals = [
        config.train.steps_per_call,
        config.train.log_every_steps,
        config.eval.every_steps,
        config.checkpoint.every_steps,
        config.diagnostics.every_steps,
    ]
    return [i for i in intervals if i > 0]


def _next_stop(step: int, total: int, intervals: list[int]) -> int:
    return min([total] + [(step // i + 1) * i for i in intervals])


def _chunk_length(remaining: int, max_chunk: int | None) -> int:
    """The next chunk of the `remaining` steps to a boundary: all of them, or `max_chunk` while
    at least twice that remain (so the last piece has `max_chunk` to `2 * max_chunk - 1` steps:
    few distinct lengths to compile, none of one step unless the boundaries ask for it)."""
    if max_chunk is None or remaining < 2 * max_chunk:
        return remaining
    return max_chunk


def _max_chunk(seconds_per_step: float, steps_per_call: int) -> int | None:
    """The longest chunk for which `_chunk_length`'s pieces stay within `STOP_WITHIN_SECONDS`: a
    power of two (None where a whole `steps_per_call` fits)."""
    fits = int(STOP_WITHIN_SECONDS / max(seconds_per_step, 1e-12))
    if fits >= steps_per_call:
        return None
    return 1 << max(0, ((fits + 1) // 2).bit_length() - 1)


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


class _CompileClock:
    """Seconds JAX spent tracing, lowering and compiling in this process, so far (from its
    monitoring events; a persistent-cache hit counts as a compilation of the time it took)."""

    seconds = 0.0

    @classmethod
    def record(cls, event: str, duration: float, **kwargs: Any) -> None:
        if event.startswith("/jax/core/compile/"):
            cls.seconds += duration


jax.monitoring.register_event_duration_secs_listener(_CompileClock.record)


class _Stop:
    """SIGTERM/SIGINT during a run. While the run is set up (nothing written yet; a download may
    be waiting on a slow mirror) a signal raises `Interrupted` at once; from `defer` on (from the
    start where there are several processes) it is recorded, and the run loop reads it once per
    chunk boundary (`requested`).

    The handlers stay installed until the final checkpoint is committed, so a second signal
    during that save waits for it instead of killing it half-way.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.deferred = False

    def handler(self, signum: int, frame: Any) -> None:
        if not self.deferred:
            raise Interrupted(signum)
        if self.received:
            logger.warning("signal %d: already stopping; waiting for the checkpoint", signum)
        else:
            logger.warning("signal %d: stopping after the current chunk with a checkpoint", signum)
        self.received.append(signum)

    def defer(self) -> None:
        self.deferred = True

    def requested(self) -> int:
        """The signal that stops the run (0: none), the same on every process: a signal to any
        one process stops them all at the same step. A collective when there are several."""
        return first_signal(self.received[0] if self.received else 0)


@contextmanager
def _graceful_stop() -> Iterator[_Stop]:
    """A `_Stop` whose handler serves SIGTERM and SIGINT inside the block."""
    stop = _Stop()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """A config made concrete: devices, data on them, the program, and its compiled functions.

    Its states (`init_state`, `restore`, `chunks`) are placed for its parallel mode; they go back
    to this Trainer's methods, and `par.fetch` reads them on the host.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        *,
        model: ModelBuilder = models.build,
        loss: Loss = cross_entropy,
    ) -> None:
        """`model` and `loss` as `run` takes them."""
        check(config, model=model)
        compilation.enable_persistent_cache()
        self.config = config
        self.par = Parallel(
            config.parallel.mode,
            member_shards=config.parallel.member_shards,
            shard_dataset=config.parallel.shard_dataset,
        )
        self.par.check_batch("train.batch_size", config.train.batch_size)
        self.members = config_lib.sweep_members(config)
        self.par.check_members(len(self.members))
        self.dataset = data.load_on_every_process(config)
        self.program = build_program(config, self.dataset, self.par, model=model, loss=loss)
        host_arrays = self.program.pipeline.host_arrays(self.dataset)
        self._array_specs = self.par.data_specs(host_arrays)
        self.arrays = self.par.to_run(self.par.put(host_arrays, self._array_specs))
        self._init = jax.jit(
            functools.partial(init_states, self.program), out_shardings=self.par.by_member
        )
        self._chunks: dict[int, Any] = {}
        self._groups = MemberGroups(self.par)
        # The longest chunk `STOP_WITHIN_SECONDS` allows (None: no cut), from the steps' time
        # measured on the previous chunk. A chunk of one-step calls is free to cut, so its first
        # one is a step, to measure.
        self._max_chunk: int | None = 1 if self._one_step_calls else None
        self._permutation = self._compile(
            self.program.pipeline.epoch_permutation, P(), donate_state=False
        )
        self._perm_cache: dict[tuple[bytes, int], jax.Array] = {}
        # One function for either split of `DeviceArrays` (placed alike; compiled per shape).
        self._evaluate = self._compile(
            self.program.evaluate, self._array_specs.eval, donate_state=False
        )
        self._measure = self._compile(
            functools.partial(diagnostics.measure, self.program, config),
            self._array_specs,
            donate_state=False,
        )

    def _compile(self, per_member: Any, other_specs: Any, *, donate_state: bool = True) -> Any:
        """`per_member(state, other, *, axis_name)` vmapped over members (the state's leading
        axis), compiled for the mode; `other` is shared by all members, placed by `other_specs`."""

        def build(axis_name: str | None) -> Any:
            return jax.vmap(functools.partial(per_member, axis_name=axis_name), in_axes=(0, None))

        return self.par.compile(build, (P(MEMBERS), other_specs), donate_state=donate_state)

    def _fresh(self, members: list[dict[str, float]]) -> TrainState:
        """Fresh states of `members` in the canonical (checkpointed) placement."""
        return self._init(*self.par.put(member_inputs(members)))

    def init_state(self, members: list[dict[str, float]] | None = None) -> TrainState:
        """Fresh states of `members` (default: the config's sweep), one compiled init for all."""
        return self.par.to_run(self._fresh(self.members if members is None else members))

    def restore(self, ckpt: checkpoint.Checkpointer) -> checkpoint.Restored:
        """The newest checkpoint of `ckpt` (its state placed to run), or the fresh state."""
        state, unlogged = ckpt.restore_latest(self._fresh(self.members))
        return checkpoint.Restored(self.par.to_run(state), unlogged)

    def save(
        self,
        ckpt: checkpoint.Checkpointer,
        step: int,
        state: TrainState,
        unlogged: dict[str, np.ndarray],
    ) -> None:
        ckpt.save(step, self.par.from_run(state), unlogged)

    def chunks(
        self, state: TrainState, until: int | None = None
    ) -> Iterator[tuple[int, TrainState, dict[str, np.ndarray]]]:
        """Train `state` to step `until` (default `train.steps`), yielding after every chunk its
        (step, state, metrics on the host as [members, steps] arrays).

        Chunks end at every multiple of the config's intervals (steps per call, logging,
        evaluation, checkpoints, diagnostics), so a resumed run logs, evaluates and saves where an
        uninterrupted one does; and they are cut shorter where the step time measured on the
        previous chunk (its compilation left out, so from the first chunk on) would make one last
        over `STOP_WITHIN_SECONDS`, so that a stop request is read soon enough. Neither
        changes the numbers: compiled chunks of any length give bitwise-equal states.
        Each state yielded is donated to the next chunk: use it before asking for the next one.
        """
        step = int(self.par.fetch(state.step)[0])
        total = self.config.train.steps if until is None else until
        intervals = _boundaries(self.config)
        while step < total:
            length = _chunk_length(_next_stop(step, total, intervals) - step, self._max_chunk)
            compiling = _CompileClock.seconds
            started = time.perf_counter()
            state, chunk_metrics = self.train_chunk(state, length)
            host_metrics = self.par.fetch(chunk_metrics)  # waits for the chunk to end
            # The steps' time, without the compilation a chunk of a new length includes.
            ran = time.perf_counter() - started - (_CompileClock.seconds - compiling)
            self._max_chunk = _max_chunk(max(ran, 0.0) / length, self.config.train.steps_per_call)
            step += length
            yield step, state, host_metrics

    def train_chunk(
        self, state: TrainState, num_steps: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """`num_steps` steps of every member (donates `state`): one compiled call (on a one-device
        CPU, one concurrent call per group of members: `parallel.MemberGroups`), or on the CPU
        for a model with convolutions, `num_steps` calls of one step, dispatched without waiting.

        XLA:CPU runs convolutions inside a loop (the `lax.scan` of a chunk) on a slow generic path:
        ResNet-20 trains at 5 instead of 250 images/s (jax-ml/jax#12868). The results are the same
        either way (`Program.train_chunk` of one step is the loop's body).
        """
        if num_steps > 1 and self._one_step_calls:
            step_metrics = []
            for _ in range(num_steps):
                state, one = self._train_call(state, 1)
                step_metrics.append(one)
            return state, jax.tree.map(lambda *m: jnp.concatenate(m, axis=-1), *step_metrics)
        return self._train_call(state, num_steps)

    def _train_call(
        self, state: TrainState, num_steps: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        if num_steps not in self._chunks:
            chunk = functools.partial(self.program.train_chunk, num_steps=num_steps)
            self._chunks[num_steps] = self.par.compile(
                lambda axis_name: functools.partial(chunk, axis_name=axis_name),
                (P(MEMBERS), self._array_specs, P(MEMBERS)),
            )
        args = (state, self.arrays, self._permutations(state, num_steps))
        return self._groups(self._chunks[num_steps], args, (True, False, True))

    @functools.cached_property
    def _one_step_calls(self) -> bool:
        """Whether `train_chunk` runs each step as its own call: a CPU and a model with convolutions."""
        if self.par.platform != "cpu":
            return False
        image = jax.ShapeDtypeStruct((1, *self.program.input_shape), jnp.float32)
        init = functools.partial(self.program.model.init, train=False)
        return "conv_general_dilated" in str(jax.make_jaxpr(init)(jax.random.PRNGKey(0), image))

    def _permutations(self, state: TrainState, num_steps: int) -> tuple[jax.Array, ...]:
        """The epoch permutations a chunk from `state` touches, each computed once per epoch.

        Cached by the members' keys as well, so a Trainer reused for other seeds stays correct.
        """
        start = int(self.par.fetch(state.step)[0])
        spe = self.program.pipeline.steps_per_epoch
        epochs = range(start // spe, (start + num_steps - 1) // spe + 1)
        seeds = self.par.fetch(state.rng).tobytes()
        for key in [k for k in self._perm_cache if k[0] != seeds or k[1] < epochs[0]]:
            del self._perm_cache[key]
        for epoch in epochs:
            if (seeds, epoch) not in self._perm_cache:
                index = self.par.to_run(self.par.put(np.int32(epoch)))
                self._perm_cache[seeds, epoch] = self._groups(
                    self._permutation, (state, index), (True, False)
                )
        return tuple(self._perm_cache[seeds, e] for e in epochs)

    def evaluate(self, state: TrainState, split: str = "eval") -> dict[str, np.ndarray]:
        """Loss and accuracy per member on the evaluation split ("eval") or on the fixed training
        subset ("train_eval", when `eval.train_examples` > 0)."""
        examples = getattr(self.arrays, split)
        return self.par.fetch(self._groups(self._evaluate, (state, examples), (True, False)))

    def measure(self, state: TrainState) -> dict[str, np.ndarray]:
        return self.par.fetch(self._groups(self._measure, (state, self.arrays), (True, False)))


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    model: ModelBuilder = models.build,
    loss: Loss = cross_entropy,
    overwrite: bool = False,
    measure_at_init: bool = False,
) -> RunResult:
    """Train (or resume) the run of `config` in `workdir`, with the module `model` builds and
    `loss` (see the module docstring; the defaults are the config's model and cross-entropy).

    Nothing is written before the config is validated (and found the same on every process), the
    data loaded and the workdir locked: a bad config or a workdir in use raises `ConfigError` with
    the workdir as it was. SIGTERM and SIGINT stop the run at the next chunk boundary with a
    committed checkpoint of that step, then raise `errors.Interrupted` (asked again, the run
    resumes there); a signal to any one process of a multi-host run stops every process at the
    same step. Until the data is loaded (a download included), a signal to a single-process run
    raises `errors.Interrupted` at once: nothing is written yet.
    `measure_at_init` writes the diagnostics of the initial state to `INIT_DIAGNOSTICS_FILE`
    (once; a run asked again keeps the file).
    """
    workdir = os.path.abspath(workdir)  # Orbax needs an absolute path
    with _graceful_stop() as stop:
        check(config, model=model)
        workdir_lib.check_name(workdir)
        initialize_distributed(config.parallel)
        if jax.process_count() > 1:
            # A process that stopped alone would leave the others waiting at a collective: the
            # signal is read at the first chunk boundary, by every process together.
            stop.defer()
        _check_processes_agree(config)
        trainer = Trainer(config, model=model, loss=loss)
        stop.defer()
        with workdir_lib.claim(workdir, config, overwrite):
            if measure_at_init:
                _measure_at_init(trainer, workdir)
            return _train(trainer, workdir, stop)


def check(config: ml_collections.ConfigDict, *, model: ModelBuilder = models.build) -> None:
    """Raise `ConfigError` (one line) on what `run` refuses before any work: a bad field
    (`config.validate`), then what the module `model` builds from the config's `model` section
    says of it (`models.build`: unknown names, a ResNet depth that is not 6n+2, ...), and the
    diagnostics' layer and unit against that module's hidden layers. No device or data is touched;
    the module is built for 10 classes (its names and shapes do not depend on the count)."""
    config_lib.validate(config)
    diagnostics.check(config, model(config.model, 10, axis_name=None, dtype=jnp.float32))


# Fields that may differ between the processes of a multi-host run: each has its own id, and each
# host may hold its own copy of the data.
PER_PROCESS_FIELDS = ("parallel.process_id", "data.dir")


def _check_processes_agree(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` on every process, naming the differing fields, unless every process
    runs the same config (but for `PER_PROCESS_FIELDS`). A collective when there are several."""
    resolved = json.loads(config_lib.to_json(config))
    for field in PER_PROCESS_FIELDS:
        section, name = field.split(".")
        del resolved[section][name]
    first, *others = [json.loads(t) for t in gather_text(json.dumps(resolved))]
    differing = [
        f"process {i} {line}"
        for i, other in enumerate(others, 1)
        for line in config_lib.diff(first, other)
    ]
    if differing:
        raise ConfigError(
            "every process must run the same config (but for "
            f"{' and '.join(PER_PROCESS_FIELDS)}); against process 0's: " + "; ".join(differing)
        )


def _measure_at_init(trainer: Trainer, workdir: str) -> None:
    path = os.path.join(workdir, metrics.INIT_DIAGNOSTICS_FILE)
    if os.path.exists(path):
        return
    values = trainer.measure(trainer.init_state())
    per_member = [{k: float(v[i]) for k, v in values.items()} for i in range(len(trainer.members))]
    if jax.process_index() == 0:
        atomic_write_text(path, json.dumps(per_member))


def _train(trainer: Trainer, workdir: str, stop: _Stop) -> RunResult:
    """The run loop on a claimed workdir: resume, then [chunk -> log -> eval -> checkpoint]*."""
    config, par, members = trainer.config, trainer.par, trainer.members
    total = config.train.steps
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep
    )
    with ckpt:
        state, unlogged = trainer.restore(ckpt)
        step = int(par.fetch(state.step)[0])
        writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=step)
        with writer:
            logger.info(
                "%s at step %d: %d member(s), mode %s on %d device(s), %s%s",
                "resuming" if step else "starting",
                step,
                len(members),
                par.mode,
                par.num_devices,
                par.layout,
                ", dataset split over 'data'" if par.shard_dataset else "",
            )
            diverged = [None if d == NOT_DIVERGED else int(d) for d in par.fetch(state.diverged_at)]
            log = _Log(trainer, writer, step, diverged, unlogged, _first_reach(par, state))
            # A run whose members all diverged is finished; asking again does not step it further.
            halted = config.halt_on_nan and None not in diverged
            # A signal before the first chunk: the restored step already has its checkpoint.
            signalled = stop.requested()
            chunks = iter(()) if halted or signalled else trainer.chunks(state)
            for step, state, chunk_metrics in chunks:
                log.boundary(step, state, chunk_metrics)
                halted = config.halt_on_nan and None not in diverged
                signalled = stop.requested()  # the one read of this boundary
                if signalled or halted or _due(step, config.checkpoint.every_steps, total):
                    trainer.save(ckpt, step, state, log.unlogged)
                writer.flush()
                if signalled or halted:
                    break
            if signalled or halted:
                logger.warning(
                    "stopped at step %d (%s)", step, "all members diverged" if halted else "signal"
                )
            ckpt.wait_until_finished()
    if signalled:
        raise Interrupted(signalled, step)
    return RunResult(
        members=members,
        final=final_metrics(writer.path, len(members)),
        diverged_at=diverged,
        step=step,
        stopped_early=halted,
    )


class _Log:
    """What the run loop writes at a chunk boundary: train means, divergence, eval, diagnostics."""

    def __init__(
        self,
        trainer: Trainer,
        writer: MetricWriter,
        step: int,
        diverged: list[int | None],
        unlogged: dict[str, np.ndarray],
        first_reach: np.ndarray | None,
    ) -> None:
        self.trainer, self.config, self.writer = trainer, trainer.config, writer
        self.tags = _member_tags(trainer.config, trainer.members)
        self.names = [metrics.tensorboard_run(tag) for tag in self.tags]  # "seed=0,lr=0.1"
        self.progress = Progress(trainer.config.train.steps, step)
        # Chunk metrics since the last log line (a resumed run starts with its checkpoint's).
        self.pending: list[dict[str, np.ndarray]] = [unlogged] if unlogged else []
        self.diverged = diverged  # per member, updated in place as members diverge
        self.first_reach = first_reach  # [members, targets] as logged so far (None: no targets)

    @property
    def unlogged(self) -> dict[str, np.ndarray]:
        """The train metrics [members, steps] not yet in a log line: saved with a checkpoint."""
        if not self.pending:
            return {}
        return {k: np.concatenate([p[k] for p in self.pending], axis=1) for k in self.pending[0]}

    def boundary(self, step: int, state: TrainState, chunk_metrics: dict[str, np.ndarray]) -> None:
        config, total = self.config, self.config.train.steps
        self.pending.append(chunk_metrics)
        newly = self._divergence(self.trainer.par.fetch(state.diverged_at))
        self._reached(_first_reach(self.trainer.par, state))
        if _due(step, config.train.log_every_steps, total) or newly:
            logger.info(self._train(step))
            self.pending = []
        if _due(step, config.eval.every_steps, total):
            self._eval(step, state)
        if config.diagnostics.every_steps and _due(step, config.diagnostics.every_steps, total):
            self._write(step, self.trainer.measure(state))

    def _write(self, step: int, per_member: dict[str, np.ndarray]) -> None:
        for i, tag in enumerate(self.tags):
            self.writer.write(step, {k: float(v[i]) for k, v in per_member.items()}, tag)

    def _divergence(self, diverged_at: np.ndarray) -> bool:
        newly = False
        for i, d in enumerate(diverged_at):
            if d != NOT_DIVERGED and self.diverged[i] is None:
                self.diverged[i] = int(d)
                newly = True
                self.writer.write(int(d), {metrics.DIVERGED: True}, self.tags[i])
                logger.warning("member %d diverged (non-finite loss) at step %d", i, int(d))
        return newly

    def _reached(self, first_reach: np.ndarray | None) -> None:
        """Log each `train.reach_targets` target a member reached since the last boundary, at the
        step it was reached (a resumed run recomputes those after its checkpoint)."""
        if first_reach is None or self.first_reach is None:
            return
        newly = (first_reach != NOT_REACHED) & (self.first_reach == NOT_REACHED)
        for member, target in zip(*np.nonzero(newly), strict=True):
            spec = self.config.train.reach_targets[target]
            step = int(first_reach[member, target])
            self.writer.write(step, {metrics.reach_key(spec): step}, self.tags[member])
        self.first_reach = first_reach

    def _train(self, step: int) -> str:
        """Write the mean train metrics since the last log line (lr: its latest value)."""
        stacked = self.unlogged
        steps_per_sec = self.progress.steps_per_sec(step)
        examples_per_sec = steps_per_sec * self.config.train.batch_size * len(self.tags)
        for i, tag in enumerate(self.tags):
            values = {k: float(np.mean(v[i])) for k, v in stacked.items() if k != metrics.LR}
            values[metrics.LR] = float(stacked[metrics.LR][i, -1])
            values[metrics.EXAMPLES_PER_SEC] = examples_per_sec
            self.writer.write(step, values, tag)
        return self.progress.line(
            step,
            [float(np.mean(v)) for v in stacked[metrics.TRAIN_LOSS]],
            [float(np.mean(v)) for v in stacked[metrics.TRAIN_ACCURACY]],
            self.names,
            interval=stacked[metrics.TRAIN_LOSS].shape[1],
            steps_per_sec=steps_per_sec,
            examples_per_sec=examples_per_sec,
        )

    def _eval(self, step: int, state: TrainState) -> None:
        """The evaluation split's loss and accuracy, and the training subset's (eval mode)."""
        splits = {self.trainer.dataset.eval_split: "eval"}
        if self.trainer.arrays.train_eval is not None:
            splits[metrics.TRAIN_EVAL] = "train_eval"
        values, line = {}, []
        for name, split in splits.items():
            results = self.trainer.evaluate(state, split)
            values.update({metrics.eval_key(name, k): results[k] for k in ("loss", "accuracy")})
            accuracy = [float(a) for a in results["accuracy"]]
            line.append(
                f"{metrics.eval_key(name, 'accuracy')} "
                + metrics.across_members(accuracy, self.names, higher_is_better=True)
            )
        self._write(step, values)
        logger.info("step %d: %s", step, ", ".join(line))


def _first_reach(par: Parallel, state: TrainState) -> np.ndarray | None:
    """Per member and `train.reach_targets` target, the step it was first reached, or
    NOT_REACHED; None without targets."""
    return None if state.reach is None else par.fetch(state.reach.first)


def final_metrics(path: str, num_members: int) -> list[dict[str, float]]:
    """The last value of every metric per member, read back from `metrics.jsonl`.

    Read from the file rather than kept in memory, so a finished run asked again reports the same.
    """
    final: list[dict[str, float]] = [{} for _ in range(num_members)]
    for last, records in zip(final, metrics.member_records(path, num_members), strict=True):
        for record in records:
            last.update(
                {k: v for k, v in record.items() if k != "step" and not k.startswith("sweep/")}
            )
    return final


def _member_tags(
    config: ml_collections.ConfigDict, members: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """Per-member fields of each metrics line: none for a single run, index + swept values in a sweep."""
    if len(members) == 1:
        return [{}]
    axes = config_lib.swept_axes(config)
    return [{"member": i, **{f"sweep/{a}": m[a] for a in axes}} for i, m in enumerate(members)]
