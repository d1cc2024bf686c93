"""Training: the state, the per-device step, compiled chunks of steps, and the run loop.

From the inside out, each layer a plain JAX transformation of the one below:
  1. `Program.train_step(state, batch, rng)`: one step of one sweep member on one device's batch.
  2. `jax.vmap` over the leading member axis of the state (seeds, learning rates, ...): a single run
     is a sweep of one member, so there is one code path.
  3. `Program.train_chunk`: `lax.scan` over K steps of the vmapped step; the batch of each step is
     derived on device from (member seed, step) alone, so data order survives restarts and
     device counts.
  4. `parallel.Parallel.compile`: one device, `jit(shard_map)` or `pmap` over the `'data'` axis.
"""

import dataclasses
import functools
import json
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import pairwise
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct
from jax import lax
from jax.experimental import multihost_utils

from dlresearch import checkpoint, compilation, data, diagnostics, models, optim
from dlresearch import config as config_lib
from dlresearch import workdir as workdir_lib
from dlresearch.metrics import (
    MetricWriter,
    Progress,
    atomic_write_text,
    read_jsonl,
)
from dlresearch.parallel import Parallel, initialize_distributed
from dlresearch.registry import ConfigError

# Streams derived from a member's key, so each kind of randomness is independent of the others.
_INIT, _DATA, _STEP = 0, 1, 2
NOT_DIVERGED = -1


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue exactly; a pytree, checkpointed whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # the member's key; all randomness is fold_in(rng, stream, step)
    diverged_at: jax.Array  # first step with a non-finite loss, or NOT_DIVERGED


class DeviceData(struct.PyTreeNode):
    """The whole dataset on every device, uint8; normalised and augmented inside the step."""

    train_images: jax.Array
    train_labels: jax.Array
    test_images: jax.Array  # padded to a multiple of (eval batch x devices)
    test_labels: jax.Array
    test_mask: jax.Array  # 1 for real examples, 0 for padding


def device_data(dataset: data.Dataset, eval_batch_size: int, num_devices: int) -> DeviceData:
    """Host arrays of `DeviceData`, the test split padded for an even split over devices."""
    multiple = eval_batch_size * num_devices
    n = len(dataset.test_labels)
    pad = -n % multiple
    return DeviceData(
        train_images=dataset.train_images,
        train_labels=dataset.train_labels.astype(np.int32),
        test_images=np.concatenate([dataset.test_images, np.zeros_like(dataset.test_images[:pad])]),
        test_labels=np.concatenate(
            [dataset.test_labels, np.zeros_like(dataset.test_labels[:pad])]
        ).astype(np.int32),
        test_mask=np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]),
    )


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure functions of one run: model, optimizer and data settings, closed over."""

    model: nn.Module
    optimizer: optim.Optimizer
    batch_size: int  # global batch
    num_devices: int
    num_train: int
    eval_batch_size: int
    augment: bool
    mean: np.ndarray
    std: np.ndarray
    halt_on_nan: bool
    input_shape: tuple[int, ...]

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, rng: jax.Array, hparams: dict[str, jax.Array]) -> TrainState:
        """One member's fresh state; `hparams` holds its lr, weight_decay, momentum, init_scale."""
        dummy = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(jax.random.fold_in(rng, _INIT), dummy, train=False)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p * hparams["init_scale"] if path[-1].key == "kernel" else p,
            variables["params"],
        )
        opt_state = optim.set_hyperparams(
            self.optimizer.tx.init(params),
            learning_rate=hparams["lr"],
            weight_decay=hparams["weight_decay"],
            momentum=hparams["momentum"],
        )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=opt_state,
            rng=rng,
            diverged_at=jnp.full((), NOT_DIVERGED, jnp.int32),
        )

    # -- one step ------------------------------------------------------------------------------
    def loss_fn(
        self, params: Any, batch_stats: Any, images: jax.Array, labels: jax.Array, rng: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = self.model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            rngs={"dropout": rng},
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates.get("batch_stats", {}))

    def train_step(
        self,
        state: TrainState,
        batch: tuple[jax.Array, jax.Array],
        rng: jax.Array,
        *,
        axis_name: str | None,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimizer step on this device's part of the batch (normalised images, labels)."""
        images, labels = batch
        params = state.params
        if axis_name is not None:
            # Mark params as varying over devices before differentiating, so the gradient below is
            # this device's own and pmean gives the global mean under both shard_map and pmap.
            params = lax.pcast(params, axis_name, to="varying")
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(
            params, state.batch_stats, images, labels, rng
        )
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        if axis_name is not None:
            # Synced BatchNorm already averaged its statistics; per-device ("ghost") statistics are
            # averaged here so the running averages stay replicated.
            grads, loss, accuracy, batch_stats = lax.pmean(
                (grads, loss, accuracy, batch_stats), axis_name
            )
        updates, opt_state = self.optimizer.tx.update(grads, state.opt_state, state.params)
        diverged_at = jnp.where(
            (state.diverged_at == NOT_DIVERGED) & ~jnp.isfinite(loss), state.step, state.diverged_at
        )
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
            diverged_at=diverged_at,
        )
        if self.halt_on_nan:
            # A diverged member keeps its last finite state; in a sweep the others go on.
            def keep(old: Any, new: Any) -> Any:
                return jax.tree.map(
                    lambda o, n: jnp.where(diverged_at != NOT_DIVERGED, o, n), old, new
                )

            new_state = new_state.replace(
                params=keep(state.params, new_state.params),
                batch_stats=keep(state.batch_stats, new_state.batch_stats),
                opt_state=keep(state.opt_state, new_state.opt_state),
            )
        metrics = {
            "train/loss": loss,
            "train/accuracy": accuracy,
            "grad_norm": optax.tree.norm(grads),
            "lr": optim.learning_rate(self.optimizer, state.opt_state, state.step),
        }
        return new_state, metrics

    # -- data ----------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    def local_batch(
        self,
        perms: jax.Array,
        first_epoch: jax.Array,
        state: TrainState,
        data_: DeviceData,
        axis_name: str | None,
    ) -> tuple[jax.Array, jax.Array]:
        """This device's slice of the global batch of `state.step`, normalised and augmented."""
        epoch, position = jnp.divmod(state.step, self.steps_per_epoch)
        global_index = lax.dynamic_slice_in_dim(
            perms[epoch - first_epoch], position * self.batch_size, self.batch_size
        )
        local = self.batch_size // self.num_devices
        offset = 0 if axis_name is None else lax.axis_index(axis_name) * local
        index = lax.dynamic_slice_in_dim(global_index, offset, local)
        images = data.normalize(data_.train_images[index], self.mean, self.std)
        if self.augment:
            # Keys per global example position: the same augmentation for any device count.
            aug_key = jax.random.fold_in(jax.random.fold_in(state.rng, _STEP), state.step)
            keys = jax.vmap(lambda i: jax.random.fold_in(aug_key, i))(offset + jnp.arange(local))
            images = data.augment_crop_flip(images, keys)
        return images, data_.train_labels[index]

    def batch_of_step(
        self, state: TrainState, data_: DeviceData, axis_name: str | None
    ) -> tuple[jax.Array, jax.Array]:
        """This device's batch of `state.step`, on its own (for diagnostics)."""
        epoch = state.step // self.steps_per_epoch
        perm = self.epoch_permutation(state, epoch, axis_name=axis_name)
        return self.local_batch(perm[None], epoch, state, data_, axis_name)

    # -- K steps -------------------------------------------------------------------------------
    def epoch_permutation(
        self, state: TrainState, epoch: jax.Array, *, axis_name: str | None
    ) -> jax.Array:
        """The example order of one member's `epoch`: a function of (seed, epoch) only."""
        del axis_name  # the same on every device
        return data.epoch_permutation(jax.random.fold_in(state.rng, _DATA), epoch, self.num_train)

    def train_chunk(
        self,
        states: TrainState,
        data_: DeviceData,
        perms: tuple[jax.Array, ...],
        *,
        num_steps: int,
        axis_name: str | None,
        member_groups: int = 1,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """`num_steps` steps of every member (leading axis of `states`); metrics [members, steps].

        `perms` holds each member's permutations of the epochs the chunk touches, from the current
        one on. They are computed outside (once per epoch, see `Trainer.train`): a sort of the whole
        training set in every chunk would cost as much as the steps of a small model.

        The members are vmapped in `member_groups` groups inside each step. XLA:CPU runs each
        operation on one thread and a small model's step is a chain of them; independent groups
        give every core a chain of its own (8 members on 2 cores: 25-35% faster steps).
        """
        first_epochs = states.step // self.steps_per_epoch
        stacked = jnp.stack(perms, axis=1)  # [members, epochs, examples]

        def member_step(
            state: TrainState, perms: jax.Array, first_epoch: jax.Array
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            batch = self.local_batch(perms, first_epoch, state, data_, axis_name)
            step_key = jax.random.fold_in(jax.random.fold_in(state.rng, _STEP), state.step)
            # Dropout masks differ per device (the only device-count-dependent randomness).
            if axis_name is not None:
                step_key = jax.random.fold_in(step_key, lax.axis_index(axis_name))
            return self.train_step(
                state, batch, jax.random.fold_in(step_key, 1), axis_name=axis_name
            )

        bounds = np.linspace(0, first_epochs.shape[0], member_groups + 1).astype(int)

        def split(tree: Any) -> list[Any]:
            return [jax.tree.map(lambda x, a=a, b=b: x[a:b], tree) for a, b in pairwise(bounds)]

        def concatenate(trees: list[Any]) -> Any:
            return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)

        group_inputs = list(zip(split(stacked), split(first_epochs), strict=True))

        def body(groups: list[TrainState], _: None) -> tuple[list[TrainState], dict[str, Any]]:
            results = [
                jax.vmap(member_step)(group, *inputs)
                for group, inputs in zip(groups, group_inputs, strict=True)
            ]
            return [r[0] for r in results], concatenate([r[1] for r in results])

        if num_steps == 1:
            # XLA:CPU runs convolution gradients inside a loop on a slow generic path (about 25x
            # slower for ResNet-20, jax-ml/jax#12868); one step needs no loop (see Trainer.train).
            groups, metrics = body(split(states), None)
            return concatenate(groups), jax.tree.map(lambda m: m[:, None], metrics)
        groups, metrics = lax.scan(body, split(states), None, length=num_steps)
        return concatenate(groups), jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), metrics)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self, state: TrainState, data_: DeviceData, *, axis_name: str | None
    ) -> dict[str, jax.Array]:
        """Loss and accuracy of one member on the whole evaluation split (running BN averages)."""
        per_device = data_.test_labels.shape[0] // self.num_devices
        offset = 0 if axis_name is None else lax.axis_index(axis_name) * per_device

        def shard(x: jax.Array) -> jax.Array:
            x = lax.dynamic_slice_in_dim(x, offset, per_device)
            return x.reshape(-1, self.eval_batch_size, *x.shape[1:])

        def body(totals: jax.Array, batch: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            images, labels, mask = batch
            logits = self.model.apply(
                {"params": state.params, "batch_stats": state.batch_stats},
                data.normalize(images, self.mean, self.std),
                train=False,
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            correct = jnp.argmax(logits, -1) == labels
            return totals + jnp.stack(
                [(loss * mask).sum(), (correct * mask).sum(), mask.sum()]
            ), None

        batches = (shard(data_.test_images), shard(data_.test_labels), shard(data_.test_mask))
        totals = jnp.zeros(3)
        if axis_name is None:
            totals, _ = lax.scan(body, totals, batches)
        else:  # the sums are per device until the psum
            totals, _ = lax.scan(body, lax.pcast(totals, axis_name, to="varying"), batches)
            totals = lax.psum(totals, axis_name)
        return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}


# -- the run ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    """What a finished (or stopped) run reports back to its caller, one entry per member."""

    members: list[dict[str, float]]
    final: list[dict[str, float]]  # last train and eval metrics per member
    diverged_at: list[int | None]
    step: int
    stopped_early: bool = False


def build_program(
    config: ml_collections.ConfigDict, dataset: data.Dataset, par: Parallel
) -> Program:
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    return Program(
        model=models.build(config.model, dataset.num_classes, axis_name=par.axis_name, dtype=dtype),
        optimizer=optim.build(config.optim, config.train.steps),
        batch_size=config.train.batch_size,
        num_devices=par.num_devices,
        num_train=len(dataset.train_labels),
        eval_batch_size=min(
            config.eval.batch_size, max(1, len(dataset.test_labels) // par.num_devices)
        ),
        augment=dataset.augment,
        mean=dataset.mean,
        std=dataset.std,
        halt_on_nan=config.halt_on_nan,
        input_shape=dataset.train_images.shape[1:],
    )


def init_states(program: Program, members: list[dict[str, float]]) -> TrainState:
    """The states of all members, stacked on a leading member axis."""
    rngs = jnp.stack([jax.random.PRNGKey(int(m["seed"])) for m in members])
    hparams = {
        k: jnp.asarray([m[k] for m in members], jnp.float32)
        for k in ("lr", "weight_decay", "momentum", "init_scale")
    }
    # lax.map rather than vmap: the same values, but XLA:CPU compiles vmapped random initialisers in
    # a time that grows with the member count (2.1 s vs 4.4 s for 16 members); init runs once.
    return jax.lax.map(lambda args: program.init_state(*args), (rngs, hparams))


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool) -> None:
    """Refuse to mix two different configs in one workdir; write the resolved config.

    Call with the workdir locked (`workdir.lock`): `overwrite` empties it but for its lock.
    """
    path = os.path.join(workdir, "config.json")
    new = config_lib.to_json(config)
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            old = json.load(f)
        # How a run executes (mode, hosts) may change between restarts; what it computes may not.
        changed = [
            c for c in config_lib.diff(old, json.loads(new)) if not c.startswith("parallel.")
        ]
        if changed:
            raise ConfigError(
                f"{workdir} holds a run with a different config (pass --overwrite to start afresh): "
                + "; ".join(changed)
            )
    if overwrite:
        workdir_lib.clear(workdir)
    atomic_write_text(path, new)


@contextmanager
def claim_workdir(
    workdir: str, config: ml_collections.ConfigDict, overwrite: bool
) -> Iterator[None]:
    """Process 0 locks `workdir` and checks its config; every process learns the verdict.

    A refusal raises `ConfigError` on every process (none waits at a barrier for the others), and
    the other processes continue only once process 0 has prepared (or emptied) the workdir.
    """
    with ExitStack() as held:
        refusal = ""
        if jax.process_index() == 0:
            try:
                held.enter_context(workdir_lib.lock(workdir))
                prepare_workdir(workdir, config, overwrite)
            except ConfigError as error:
                refusal = str(error)
        refusal = _from_process_0(refusal)
        if refusal:
            raise ConfigError(refusal)
        yield


def _from_process_0(message: str, size: int = 4096) -> str:
    """Process 0's `message` on every process (a collective when there are several)."""
    if jax.process_count() == 1:
        return message
    buffer = np.zeros(size, np.uint8)
    encoded = message.encode()[:size]
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return shared.tobytes().rstrip(b"\0").decode(errors="replace")


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


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


@contextmanager
def _graceful_stop() -> Iterator[list[int]]:
    """SIGTERM/SIGINT append to a list that the run loop reads once per chunk boundary.

    The handlers stay installed until the final checkpoint is committed, so a second signal
    during that save waits for it instead of killing it half-way.
    """
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if received:
            logging.warning("signal %d: already stopping; waiting for the checkpoint", signum)
        else:
            logging.warning("signal %d: stopping after the current chunk with a checkpoint", signum)
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """A config made concrete: devices, data on them, the program, and its compiled functions.

    States passed to and returned by `train`, `evaluate` and `measure` are in the run form of
    `Parallel` (see `Parallel.to_run`); `init_state` gives the canonical form.
    """

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        config_lib.validate(config)
        compilation.enable_persistent_cache()
        self.config = config
        self.par = Parallel(config.parallel.mode)
        self.par.check_batch("train.batch_size", config.train.batch_size)
        self.dataset = data.load(config.data)
        if config.train.batch_size > len(self.dataset.train_labels):
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} exceeds the "
                f"{len(self.dataset.train_labels)} training examples of data.name={config.data.name!r}"
            )
        self.members = config_lib.sweep_members(config)
        self.program = build_program(config, self.dataset, self.par)
        self.data = self.par.to_run(
            self.par.put(
                device_data(self.dataset, self.program.eval_batch_size, self.par.num_devices)
            )
        )
        self._chunks: dict[int, Any] = {}
        self._permutation = self._compile(self.program.epoch_permutation, donate_state=False)
        self._perm_cache: dict[tuple[bytes, int], jax.Array] = {}
        self._evaluate = self._compile(self.program.evaluate, donate_state=False)
        self._measure = self._compile(
            functools.partial(diagnostics.measure, self.program, config), donate_state=False
        )

    def _compile(
        self,
        per_member: Any,
        *,
        in_axes: tuple[int | None, ...] = (0, None),
        donate_state: bool = True,
    ) -> Any:
        """`per_member(state, ..., *, axis_name)` vmapped over members, compiled for the mode."""

        def build(axis_name: str | None) -> Any:
            return jax.vmap(functools.partial(per_member, axis_name=axis_name), in_axes=in_axes)

        return self.par.compile(build, donate_state=donate_state)

    def init_state(self) -> TrainState:
        init = functools.partial(init_states, self.program, self.members)
        return jax.jit(init, out_shardings=self.par.replicated)()

    def train(self, state: TrainState, num_steps: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """`num_steps` steps of every member (donates `state`): one compiled call, or on the CPU
        for a model with convolutions, `num_steps` calls of one step, dispatched without waiting.

        XLA:CPU runs convolutions inside a loop (the `lax.scan` of a chunk) on a slow generic path:
        ResNet-20 trains at 5 instead of 250 images/s (jax-ml/jax#12868). The results are the same
        either way (`train_chunk` of one step is the loop's body).
        """
        if num_steps > 1 and self._one_step_calls:
            metrics = []
            for _ in range(num_steps):
                state, step_metrics = self._train_call(state, 1)
                metrics.append(step_metrics)
            return state, jax.tree.map(lambda *m: jnp.concatenate(m, axis=-1), *metrics)
        return self._train_call(state, num_steps)

    def _train_call(
        self, state: TrainState, num_steps: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        if num_steps not in self._chunks:
            chunk = functools.partial(
                self.program.train_chunk, num_steps=num_steps, member_groups=self._member_groups
            )
            self._chunks[num_steps] = self.par.compile(
                lambda axis_name: functools.partial(chunk, axis_name=axis_name)
            )
        return self._chunks[num_steps](state, self.data, self._permutations(state, num_steps))

    @property
    def _member_groups(self) -> int:
        """Groups of members in a step (see `Program.train_chunk`): one per core on the CPU."""
        if self.par.mesh.devices.flat[0].platform != "cpu":
            return 1
        return min(len(self.members), os.cpu_count() or 1)

    @functools.cached_property
    def _one_step_calls(self) -> bool:
        """Whether `train` runs each step as its own call: a CPU and a model with convolutions."""
        if self.par.mesh.devices.flat[0].platform != "cpu":
            return False
        image = jax.ShapeDtypeStruct((1, *self.program.input_shape), jnp.float32)
        init = functools.partial(self.program.model.init, train=False)
        return "conv_general_dilated" in str(jax.make_jaxpr(init)(jax.random.PRNGKey(0), image))

    def _permutations(self, state: TrainState, num_steps: int) -> tuple[jax.Array, ...]:
        """The epoch permutations a chunk from `state` touches, each computed once per epoch.

        Cached by the members' keys as well, so a Trainer reused for other seeds stays correct.
        """
        start = int(self.par.fetch(state.step)[0])
        spe = self.program.steps_per_epoch
        epochs = range(start // spe, (start + num_steps - 1) // spe + 1)
        seeds = self.par.fetch(state.rng).tobytes()
        for key in [k for k in self._perm_cache if k[0] != seeds or k[1] < epochs[0]]:
            del self._perm_cache[key]
        for epoch in epochs:
            if (seeds, epoch) not in self._perm_cache:
                index = self.par.to_run(self.par.put(np.int32(epoch)))
                self._perm_cache[seeds, epoch] = self._permutation(state, index)
        return tuple(self._perm_cache[seeds, e] for e in epochs)

    def evaluate(self, state: TrainState) -> dict[str, np.ndarray]:
        return self.par.fetch(self._evaluate(state, self.data))

    def measure(self, state: TrainState) -> dict[str, np.ndarray]:
        return self.par.fetch(self._measure(state, self.data))


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False) -> RunResult:
    """Train (or resume) the run of `config` in `workdir`.

    Nothing is written before the config is validated, the data loaded and the workdir locked: a
    bad config or a workdir in use raises `ConfigError` with the workdir as it was. SIGTERM and
    SIGINT stop the run at the next chunk boundary with a committed checkpoint of that step.
    """
    with _graceful_stop() as signals:
        config_lib.validate(config)
        initialize_distributed(config.parallel)
        trainer = Trainer(config)
        with claim_workdir(workdir, config, overwrite):
            return _train(trainer, workdir, signals)


def _train(trainer: Trainer, workdir: str, signals: list[int]) -> RunResult:
    """The run loop on a claimed workdir: resume, then [chunk -> log -> eval -> checkpoint]*."""
    config, par, members = trainer.config, trainer.par, trainer.members
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep
    )
    with ckpt:
        run_state = par.to_run(ckpt.restore_latest(trainer.init_state()))
        step = int(par.fetch(run_state.step)[0])
        writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=step)
        with writer:
            logging.info(
                "%s at step %d: %d member(s), mode %s on %d device(s)",
                "resuming" if step else "starting",
                step,
                len(members),
                par.mode,
                par.num_devices,
            )
            tags = _member_tags(config, members)
            diverged = [
                None if d == NOT_DIVERGED else int(d) for d in par.fetch(run_state.diverged_at)
            ]
            total = config.train.steps
            progress = Progress(total, step)
            pending: list[dict[str, np.ndarray]] = []
            # A run whose members all diverged is finished; asking again does not step it further.
            halted = config.halt_on_nan and None not in diverged
            # A signal before the first chunk: the restored step already has its checkpoint.
            signalled = bool(signals)
            while step < total and not halted and not signalled:
                stop = _next_stop(step, total, _boundaries(config))
                run_state, metrics = trainer.train(run_state, stop - step)
                step = stop
                pending.append(par.fetch(metrics))

                newly = _record_divergence(par.fetch(run_state.diverged_at), diverged, writer, tags)
                if _due(step, config.train.log_every_steps, total) or newly:
                    logged = _log_train(
                        pending, step, total, config.train.batch_size, writer, tags, progress
                    )
                    pending = []
                    logging.info(logged)
                if _due(step, config.eval.every_steps, total):
                    _log_eval(trainer, run_state, step, writer, tags)
                if config.diagnostics.every_steps and _due(
                    step, config.diagnostics.every_steps, total
                ):
                    values = trainer.measure(run_state)
                    for i, tag in enumerate(tags):
                        writer.write(step, {k: float(v[i]) for k, v in values.items()}, tag)
                halted = config.halt_on_nan and None not in diverged
                signalled = bool(signals)  # the one read of this boundary
                if _due(step, config.checkpoint.every_steps, total) or signalled or halted:
                    ckpt.save(step, par.from_run(run_state))
                writer.flush()
            if signalled or halted:
                logging.warning(
                    "stopped at step %d (%s)", step, "all members diverged" if halted else "signal"
                )
            ckpt.wait_until_finished()
    return RunResult(
        members=members,
        final=final_metrics(writer.path, len(members)),
        diverged_at=diverged,
        step=step,
        stopped_early=signalled or halted,
    )


def _log_eval(
    trainer: Trainer, run_state: TrainState, step: int, writer: MetricWriter, tags: list[dict]
) -> None:
    results = trainer.evaluate(run_state)
    split = trainer.dataset.eval_split
    for i, tag in enumerate(tags):
        values = {
            f"{split}/loss": float(results["loss"][i]),
            f"{split}/accuracy": float(results["accuracy"][i]),
        }
        writer.write(step, values, tag)
    logging.info("step %d: %s/accuracy %s", step, split, np.round(results["accuracy"], 4).tolist())


def final_metrics(path: str, num_members: int) -> list[dict[str, float]]:
    """The last value of every metric per member, read back from `metrics.jsonl`.

    Read from the file rather than kept in memory, so a finished run asked again reports the same.
    """
    final: list[dict[str, float]] = [{} for _ in range(num_members)]
    for record in read_jsonl(path):
        final[record.get("member", 0)].update(
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


def _record_divergence(
    diverged_at: np.ndarray,
    diverged: list[int | None],
    writer: MetricWriter,
    tags: list[dict[str, Any]],
) -> bool:
    newly = False
    for i, d in enumerate(diverged_at):
        if d != NOT_DIVERGED and diverged[i] is None:
            diverged[i] = int(d)
            newly = True
            writer.write(int(d), {"diverged": True}, tags[i])
            logging.warning("member %d diverged (non-finite loss) at step %d", i, int(d))
    return newly


def _log_train(
    pending: list[dict[str, np.ndarray]],
    step: int,
    total: int,
    batch_size: int,
    writer: MetricWriter,
    tags: list[dict[str, Any]],
    progress: Progress,
) -> str:
    """Write the mean train metrics since the last log line (lr: its latest value)."""
    stacked = {
        k: np.concatenate([p[k] for p in pending], axis=1) for k in pending[0]
    }  # [members, steps]
    steps_per_sec = progress.steps_per_sec(step)
    for i, tag in enumerate(tags):
        values = {k: float(np.mean(v[i])) for k, v in stacked.items() if k != "lr"}
        values["lr"] = float(stacked["lr"][i, -1])
        values["examples_per_sec"] = steps_per_sec * batch_size * len(tags)
        writer.write(step, values, tag)
    return progress.line(
        step,
        float(np.nanmean(stacked["train/loss"][:, -1])),
        float(np.nanmean(stacked["train/accuracy"][:, -1])),
        steps_per_sec,
        steps_per_sec * batch_size * len(tags),
    )
