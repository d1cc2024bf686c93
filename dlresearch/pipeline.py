"""The input pipeline: which examples each step and each evaluation sees, and on which device.

The dataset lives on the devices as uint8 (`DeviceArrays`), replicated on every device or, with
`parallel.shard_dataset`, split over the mesh's `'data'` axis. A step's global batch is a function
of (member seed, step) alone: the member's permutation of its epoch (`epoch_permutation`, a
function of (seed, epoch)), the step's slice of it, then normalisation and augmentation in JAX.
Each device trains on its own slice of that global batch, so the batches, and the numbers, do not
depend on the device count or on where the dataset lives.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from dlresearch import data
from dlresearch.rng import Stream

Batch = tuple[jax.Array, jax.Array]  # normalised (augmented) images, int32 labels


class EvalSplit(struct.PyTreeNode):
    """Examples an evaluation reads in full, uint8, padded to a multiple of (eval batch x data
    shards); the mask marks the real ones."""

    images: jax.Array
    labels: jax.Array
    mask: jax.Array  # 1 for real examples, 0 for padding


class DeviceArrays(struct.PyTreeNode):
    """The dataset on the devices, uint8; normalised and augmented inside the step.

    Replicated, every device holds all of it; sharded, each device of the `'data'` axis holds its
    block of rows (the training split padded with rows no permutation reaches).
    """

    train_images: jax.Array
    train_labels: jax.Array
    eval: EvalSplit  # the evaluation split (test or validation)
    train_eval: EvalSplit | None  # the fixed training subset (`train_eval_subset`); None: off


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The batches of one run: batch size, data shards and normalisation, closed over.

    Its functions take one member's state (its `step` and `rng`) and run on one device, inside
    the member vmap; `axis_name` is the mesh's `'data'` axis (None on one device).
    """

    batch_size: int  # global batch
    data_shards: int  # devices along the 'data' axis; each trains on batch_size / data_shards
    num_train: int
    eval_batch_size: int
    train_eval_examples: int  # the size of the training subset evaluated (0: none)
    augment: bool
    mean: np.ndarray
    std: np.ndarray
    sharded: bool  # whether `DeviceArrays` is split over the 'data' axis

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    def host_arrays(self, dataset: data.Dataset) -> DeviceArrays:
        """Host arrays of `DeviceArrays`: the evaluation split and the training subset padded for
        an even split over the data shards (and an eval batch), the training split, when sharded,
        to a multiple of them."""
        train_pad = -self.num_train % self.data_shards if self.sharded else 0
        subset = train_eval_subset(self.num_train, self.train_eval_examples)
        return DeviceArrays(
            train_images=_pad(dataset.train_images, train_pad),
            train_labels=_pad(dataset.train_labels.astype(np.int32), train_pad),
            eval=self._eval_split(dataset.test_images, dataset.test_labels),
            train_eval=self._eval_split(dataset.train_images[subset], dataset.train_labels[subset])
            if len(subset)
            else None,
        )

    def _eval_split(self, images: np.ndarray, labels: np.ndarray) -> EvalSplit:
        n = len(labels)
        pad = -n % (self.eval_batch_size * self.data_shards)
        return EvalSplit(
            images=_pad(images, pad),
            labels=_pad(labels.astype(np.int32), pad),
            mask=np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]),
        )

    def epoch_permutation(
        self, state: Any, epoch: jax.Array, *, axis_name: str | None
    ) -> jax.Array:
        """The example order of one member's `epoch`: a function of (seed, epoch) only."""
        del axis_name  # the same on every device
        return data.epoch_permutation(
            jax.random.fold_in(state.rng, Stream.DATA), epoch, self.num_train
        )

    def local_batch(
        self,
        perms: jax.Array,
        first_epoch: jax.Array,
        state: Any,
        arrays: DeviceArrays,
        axis_name: str | None,
    ) -> Batch:
        """This device's slice of the global batch of `state.step`, normalised and augmented.

        `perms` holds the member's permutations of consecutive epochs from `first_epoch` on.
        """
        epoch, position = jnp.divmod(state.step, self.steps_per_epoch)
        global_index = lax.dynamic_slice_in_dim(
            perms[epoch - first_epoch], position * self.batch_size, self.batch_size
        )
        local = self.batch_size // self.data_shards
        offset = 0 if axis_name is None else lax.axis_index(axis_name) * local
        if self.sharded and axis_name is not None:
            raw_images, labels = _gather(arrays, global_index, axis_name)
        else:
            index = lax.dynamic_slice_in_dim(global_index, offset, local)
            raw_images, labels = arrays.train_images[index], arrays.train_labels[index]
        images = self.normalize(raw_images)
        if self.augment:
            # Keys per global example position: the same augmentation for any device count.
            aug_key = jax.random.fold_in(jax.random.fold_in(state.rng, Stream.STEP), state.step)
            keys = jax.vmap(lambda i: jax.random.fold_in(aug_key, i))(offset + jnp.arange(local))
            images = data.augment_crop_flip(images, keys)
        return images, labels

    def batch_of_step(self, state: Any, arrays: DeviceArrays, axis_name: str | None) -> Batch:
        """This device's batch of `state.step`, on its own (for diagnostics)."""
        epoch = state.step // self.steps_per_epoch
        perm = self.epoch_permutation(state, epoch, axis_name=axis_name)
        return self.local_batch(perm[None], epoch, state, arrays, axis_name)

    def eval_batches(
        self, split: EvalSplit, axis_name: str | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """This device's block of `split` as (images, labels, mask), each shaped
        [batches, eval batch, ...]; images as stored (`normalize` them per batch)."""
        per_device = split.labels.shape[0] // self.data_shards
        offset = 0 if axis_name is None else lax.axis_index(axis_name) * per_device

        def block(x: jax.Array) -> jax.Array:
            if not (self.sharded and axis_name is not None):  # sharded: the block is x
                x = lax.dynamic_slice_in_dim(x, offset, per_device)
            return x.reshape(-1, self.eval_batch_size, *x.shape[1:])

        return block(split.images), block(split.labels), block(split.mask)

    def normalize(self, images: jax.Array) -> jax.Array:
        return data.normalize(images, self.mean, self.std)


def train_eval_subset(num_train: int, examples: int) -> np.ndarray:
    """The indices of the training examples a train-set evaluation reads: `examples` of them
    (all when fewer), evenly spaced over the training split. Fixed by the two sizes alone, so the
    same for every seed, member, resume and device count."""
    count = min(examples, num_train)
    return np.arange(count) * num_train // max(count, 1)


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((rows, *x.shape[1:]), x.dtype)]) if rows else x


def _gather(arrays: DeviceArrays, global_index: jax.Array, axis_name: str) -> Batch:
    """This device's slice of the rows `global_index` of a training split sharded over
    `axis_name`: each device contributes the rows it holds (zeros elsewhere), and a
    `psum_scatter` hands each device the sum over its slice, which is exactly its rows."""
    rows = arrays.train_labels.shape[0]  # this device's block
    owner, row = jnp.divmod(global_index, rows)
    mine = owner == lax.axis_index(axis_name)

    def take(x: jax.Array) -> jax.Array:
        picked = jnp.where(mine.reshape(-1, *([1] * (x.ndim - 1))), x[row], 0)
        return lax.psum_scatter(picked, axis_name, scatter_dimension=0, tiled=True)

    return take(arrays.train_images), take(arrays.train_labels)
