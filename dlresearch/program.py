"""The pure functions of a run: its state, the per-device step, chunks of steps, evaluation.

From the inside out, each layer a plain JAX transformation of the one below:
  1. `Program.train_step(state, batch, rng)`: one step of one sweep member on one device's batch.
  2. `jax.vmap` over the leading member axis of the state (seeds, learning rates, ...): a single run
     is a sweep of one member, so there is one code path.
  3. `Program.train_chunk`: `lax.scan` over K steps of the vmapped step; the batch of each step is
     derived on device from (member seed, step) alone (`pipeline.Pipeline`), so data order
     survives restarts, device counts and mesh shapes.
  4. `parallel.Parallel.compile` (called by `train.Trainer`): one device, `jit(shard_map)` over a
     `('members', 'data')` mesh (whole members per row of devices, collectives along `'data'`),
     or `pmap` over `'data'`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax import lax

from dlresearch import config as config_lib
from dlresearch import data, metrics, optim
from dlresearch.parallel import Parallel
from dlresearch.pipeline import DeviceArrays, EvalSplit, Pipeline
from dlresearch.rng import DROPOUT, Stream

NOT_DIVERGED = -1
NOT_REACHED = -1


class Reach(struct.PyTreeNode):
    """One member's progress toward the targets of `train.reach_targets`, in its state."""

    window: jax.Array  # [targets, train.reach_window] its metric at the last steps, a ring by step
    first: jax.Array  # [targets] first step (from 1, as logged) the window's mean reached it


# A loss: per-example losses [B] of float32 logits [B, classes] and int32 labels [B]. A step
# minimises their mean over its batch; evaluation and diagnostics report the same function.
Loss = Callable[[jax.Array, jax.Array], jax.Array]
# A model: called as `models.build` is, `model(config.model, num_classes, axis_name=...,
# dtype=...)`, it returns a Flax module whose `__call__(images, *, train)` maps normalised float32
# images [B, H, W, C] to float32 logits [B, num_classes] (see `train` for the whole contract).
ModelBuilder = Callable[..., nn.Module]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The default loss: softmax cross-entropy against integer labels, per example."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue exactly; a pytree, checkpointed whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # the member's key; all randomness is fold_in(rng, stream, step)
    diverged_at: jax.Array  # first step with a non-finite loss (from 1, as logged), or NOT_DIVERGED
    reach: Reach | None = None  # None: no `train.reach_targets`


@dataclasses.dataclass(frozen=True)
class Targets:
    """The levels of `train.reach_targets`, each reached at the first step (from `window` on) at
    which the mean of its per-step training metric over the trailing `window` steps reaches it:
    computed in the compiled step, so at step resolution, and checkpointed with the state."""

    specs: tuple[
        str, ...
    ]  # e.g. "train/accuracy>=0.75", "train/loss<=0.3" (`metrics.parse_target`)
    window: int

    def __post_init__(self) -> None:
        for spec in self.specs:
            metrics.parse_target(spec)  # a malformed one fails before anything is compiled

    def init(self) -> Reach:
        return Reach(
            window=jnp.zeros((len(self.specs), self.window), jnp.float32),
            first=jnp.full((len(self.specs),), NOT_REACHED, jnp.int32),
        )

    def update(self, reach: Reach, step: jax.Array, values: dict[str, jax.Array]) -> Reach:
        """`reach` after step `step` (counted from 0) whose training metrics are `values`."""
        parsed = [metrics.parse_target(spec) for spec in self.specs]
        current = jnp.stack([values[metric].astype(jnp.float32) for metric, _, _ in parsed])
        window = reach.window.at[:, step % self.window].set(current)
        mean = window.mean(axis=1)
        level = jnp.asarray([threshold for _, threshold, _ in parsed], jnp.float32)
        below = jnp.asarray([b for _, _, b in parsed])
        hit = jnp.where(below, mean <= level, mean >= level) & (step + 1 >= self.window)
        first = jnp.where((reach.first == NOT_REACHED) & hit, step + 1, reach.first)
        return Reach(window=window, first=first)


@dataclasses.dataclass(frozen=True)
class Program:
    """The pure functions of one run: model, loss, optimizer and input pipeline, closed over."""

    model: nn.Module
    loss: Loss
    optimizer: optim.Optimizer
    pipeline: Pipeline
    halt_on_nan: bool
    input_shape: tuple[int, ...]
    targets: Targets | None = None

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, rng: jax.Array, hparams: dict[str, jax.Array]) -> TrainState:
        """One member's fresh state; `hparams` holds its `config.HPARAMS` (lr, ..., init_scale)."""
        dummy = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(jax.random.fold_in(rng, Stream.INIT), dummy, train=False)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p * hparams["init_scale"] if path[-1].key == "kernel" else p,
            variables["params"],
        )
        opt_state = optim.set_hyperparams(self.optimizer.tx.init(params), **optim.injected(hparams))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=opt_state,
            rng=rng,
            diverged_at=jnp.full((), NOT_DIVERGED, jnp.int32),
            reach=self.targets.init() if self.targets else None,
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
        return self.loss(logits, labels).mean(), (logits, updates.get("batch_stats", {}))

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
        # Counted as metrics.jsonl counts steps: the loss of the s-th step is logged at step s.
        diverged_at = jnp.where(
            (state.diverged_at == NOT_DIVERGED) & ~jnp.isfinite(loss),
            state.step + 1,
            state.diverged_at,
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
        step_metrics = {
            metrics.TRAIN_LOSS: loss,
            metrics.TRAIN_ACCURACY: accuracy,
            metrics.GRAD_NORM: optax.tree.norm(grads),
            metrics.LR: optim.learning_rate(self.optimizer, state.opt_state, state.step),
        }
        if self.targets:
            reach = self.targets.update(state.reach, state.step, step_metrics)
            new_state = new_state.replace(reach=reach)
        return new_state, step_metrics

    # -- K steps -------------------------------------------------------------------------------
    def train_chunk(
        self,
        states: TrainState,
        arrays: DeviceArrays,
        perms: tuple[jax.Array, ...],
        *,
        num_steps: int,
        axis_name: str | None,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """`num_steps` steps of every member (leading axis of `states`); metrics [members, steps].

        `perms` holds each member's permutations of the epochs the chunk touches, from the current
        one on. They are computed outside (once per epoch, see `Trainer.train_chunk`): a sort of the whole
        training set in every chunk would cost as much as the steps of a small model.
        """
        first_epochs = states.step // self.pipeline.steps_per_epoch
        stacked = jnp.stack(perms, axis=1)  # [members, epochs, examples]

        def member_step(
            state: TrainState, perms: jax.Array, first_epoch: jax.Array
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            batch = self.pipeline.local_batch(perms, first_epoch, state, arrays, axis_name)
            step_key = jax.random.fold_in(jax.random.fold_in(state.rng, Stream.STEP), state.step)
            # Dropout masks differ per device (the only device-count-dependent randomness).
            if axis_name is not None:
                step_key = jax.random.fold_in(step_key, lax.axis_index(axis_name))
            return self.train_step(
                state, batch, jax.random.fold_in(step_key, DROPOUT), axis_name=axis_name
            )

        def body(states: TrainState, _: None) -> tuple[TrainState, dict[str, jax.Array]]:
            return jax.vmap(member_step)(states, stacked, first_epochs)

        if num_steps == 1:
            # XLA:CPU runs convolution gradients inside a loop on a slow generic path (about 25x
            # slower for ResNet-20, jax-ml/jax#12868); one step needs no loop (see Trainer.train_chunk).
            states, metrics = body(states, None)
            return states, jax.tree.map(lambda m: m[:, None], metrics)
        states, metrics = lax.scan(body, states, None, length=num_steps)
        return states, jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), metrics)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self, state: TrainState, split: EvalSplit, *, axis_name: str | None
    ) -> dict[str, jax.Array]:
        """Loss and accuracy of one member on all of `split` (the evaluation split or the training
        subset of `DeviceArrays`), in eval mode: no dropout, BatchNorm's running averages."""

        def body(totals: jax.Array, batch: tuple[jax.Array, ...]) -> tuple[jax.Array, None]:
            images, labels, mask = batch
            logits = self.model.apply(
                {"params": state.params, "batch_stats": state.batch_stats},
                self.pipeline.normalize(images),
                train=False,
            )
            loss = self.loss(logits, labels)
            correct = jnp.argmax(logits, -1) == labels
            return totals + jnp.stack(
                [(loss * mask).sum(), (correct * mask).sum(), mask.sum()]
            ), None

        batches = self.pipeline.eval_batches(split, axis_name)
        # Zeros typed like the member's state: on a mesh, varying over its rows of members.
        totals = jnp.zeros(3) + jnp.zeros_like(state.step, jnp.float32)
        if axis_name is None:
            totals, _ = lax.scan(body, totals, batches)
        else:  # the sums are per device until the psum
            totals, _ = lax.scan(body, lax.pcast(totals, axis_name, to="varying"), batches)
            totals = lax.psum(totals, axis_name)
        return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}


def build_program(
    config: ml_collections.ConfigDict,
    dataset: data.Dataset,
    par: Parallel,
    *,
    model: ModelBuilder,
    loss: Loss,
) -> Program:
    """The program of `config` on `dataset` in the parallel mode `par`, with the module `model`
    builds (the config's own: `models.build`) and `loss` (the default: `cross_entropy`)."""
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    return Program(
        model=model(config.model, dataset.num_classes, axis_name=par.axis_name, dtype=dtype),
        loss=loss,
        optimizer=optim.build(config.optim, config.train.steps),
        pipeline=Pipeline(
            batch_size=config.train.batch_size,
            data_shards=par.data_shards,
            num_train=len(dataset.train_labels),
            eval_batch_size=min(
                config.eval.batch_size, max(1, len(dataset.test_labels) // par.data_shards)
            ),
            train_eval_examples=config.eval.train_examples,
            augment=dataset.augment,
            mean=dataset.mean,
            std=dataset.std,
            sharded=par.shard_dataset,
        ),
        halt_on_nan=config.halt_on_nan,
        input_shape=dataset.train_images.shape[1:],
        targets=(
            Targets(tuple(config.train.reach_targets), config.train.reach_window)
            if config.train.reach_targets
            else None
        ),
    )


def member_inputs(members: list[dict[str, float]]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The keys and the state hyperparameters of `members`, stacked for `init_states`."""
    keys = jnp.stack([jax.random.PRNGKey(int(m["seed"])) for m in members])
    hparams = {k: jnp.asarray([m[k] for m in members], jnp.float32) for k in config_lib.HPARAMS}
    return keys, hparams


def init_states(program: Program, keys: jax.Array, hparams: dict[str, jax.Array]) -> TrainState:
    """The states of all members (see `member_inputs`), stacked on a leading member axis."""
    # lax.map rather than vmap: the same values, but XLA:CPU compiles vmapped random initialisers in
    # a time that grows with the member count (2.1 s vs 4.4 s for 16 members); init runs once.
    return jax.lax.map(lambda args: program.init_state(*args), (keys, hparams))
