"""Run one per-device function on one device, under `jax.jit(jax.shard_map(...))`, or under `jax.pmap`.

The per-device function is written once, pmap style: it receives an `axis_name` (None on one
device) and all-reduces with `lax.pmean` over it. Under shard_map the devices form a
`('members', 'data')` mesh: a sweep's members are split over the rows (`parallel.member_shards`),
and the devices of a row split each step's global batch, every device selecting its slice with
`lax.axis_index('data')`; so the batches, and therefore the results, depend neither on the device
count nor on the mesh's shape. The dataset is replicated on every device, or split over `'data'`
(`parallel.shard_dataset`, see `pipeline`). This also covers several hosts: every process loads
the dataset and runs the same program over the global mesh, whose `'members'` axis may span hosts.
"""

import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dlresearch.errors import ConfigError

logger = logging.getLogger(__name__)

MEMBERS = "members"  # the mesh axis over which a sweep's members are split
AXIS = "data"  # the mesh axis over which each step's batch is split
Groups = tuple[tuple[int, int], ...]  # [start, stop) of each group of members


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Join a multi-host run when `parallel.coordinator` asks for one (before any other JAX call).

    JAX's preemption service is left off: it would replace the run's SIGTERM handler with its own,
    and every process would train on after a scheduler's SIGTERM. A run reads its signals itself
    and stops every process together (`first_signal`).
    """
    if not config.coordinator:
        return
    jax.config.update("jax_enable_preemption_service", False)
    if config.coordinator == "auto":  # SLURM, TPU pods, ...: JAX finds the cluster itself
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=config.coordinator,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
    logger.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def first_failure(message: str, size: int = 4096) -> str:
    """The first process's non-empty `message` ('' when none has one), known to every process.

    With several processes an error on one must reach them all: a process that went on alone
    would wait at the next collective for one that has left. A collective when there are several.
    """
    if jax.process_count() == 1:
        return message
    buffer = np.zeros(size, np.uint8)
    encoded = message.encode()[:size]
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    for index, row in enumerate(np.asarray(multihost_utils.process_allgather(buffer))):
        text = row.tobytes().rstrip(b"\0").decode(errors="replace")
        if text:
            return text if index == jax.process_index() else f"process {index}: {text}"
    return ""


def gather_text(text: str) -> list[str]:
    """Every process's `text`, in process order. A collective when there are several."""
    if jax.process_count() == 1:
        return [text]
    encoded = np.frombuffer(text.encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(encoded)))).ravel()
    buffer = np.zeros(int(lengths.max()), np.uint8)
    buffer[: len(encoded)] = encoded
    rows = np.asarray(multihost_utils.process_allgather(buffer))
    return [row[:n].tobytes().decode() for row, n in zip(rows, lengths, strict=True)]


def first_signal(signum: int) -> int:
    """This process's `signum`, else the first other process's non-zero one, else 0: a stop that
    any process was asked for, known to every process, so that all stop at the same step.
    A collective when there are several (one small all-gather)."""
    if jax.process_count() == 1:
        return signum
    signals = np.asarray(multihost_utils.process_allgather(np.int32(signum))).ravel()
    return signum or next((int(s) for s in signals if s), 0)


class Parallel:
    """One execution mode over a `('members', 'data')` mesh of devices.

    `member_shards` rows of devices each run whole members of a sweep (their share of the
    leading member axis); the devices of a row split every step's batch and all-reduce over
    `'data'`. One row (the default) is pure data parallelism: every device runs every member.
    Under pmap the mesh is that one row.

    The state lives in a canonical form, split over `'members'` (`by_member`; replicated where
    there is one row). Under pmap it runs in a stacked form with a leading device axis;
    `to_run`/`from_run` convert, so checkpoints and evaluation see the same arrays in every mode.
    """

    def __init__(
        self,
        mode: str,
        devices: list[jax.Device] | None = None,
        *,
        member_shards: int = 1,
        shard_dataset: bool = False,
    ) -> None:
        devices = jax.devices() if devices is None else devices
        if mode == "single":
            devices = devices[:1]
        if mode == "shard_map" and len(devices) == 1:
            # The same computation without the collectives' bookkeeping: 15% faster per step of a
            # small MLP on the CPU, where one device is the usual case.
            mode = "single"
        if len(devices) % member_shards:
            raise ConfigError(
                f"parallel.member_shards={member_shards} does not divide the {len(devices)} "
                f"device(s) of parallel.mode={mode!r}; use one of {_divisors(len(devices))}"
            )
        self.mode = mode
        self.member_shards = member_shards
        self.data_shards = len(devices) // member_shards
        self.shard_dataset = shard_dataset and self.data_shards > 1
        self.mesh = jax.sharding.Mesh(
            np.array(devices).reshape(member_shards, self.data_shards), (MEMBERS, AXIS)
        )
        self.num_devices = len(devices)
        self.by_member = NamedSharding(self.mesh, P(MEMBERS))
        self._stacked = NamedSharding(self.mesh, P(AXIS))

    @property
    def layout(self) -> str:
        """The mesh's shape as the run's start line names it: 'members x data = M x D'."""
        return f"members x data = {self.member_shards} x {self.data_shards}"

    @property
    def platform(self) -> str:
        return self.mesh.devices.flat[0].platform

    @property
    def axis_name(self) -> str | None:
        return None if self.mode == "single" else AXIS

    def check_batch(self, field: str, batch_size: int) -> None:
        if batch_size % self.data_shards:
            raise ConfigError(
                f"{field}={batch_size} is not divisible by the {self.data_shards} devices of the "
                f"'data' axis ({self.layout}, parallel.mode={self.mode!r}); use a multiple of "
                f"{self.data_shards}"
            )

    def check_members(self, num_members: int) -> None:
        if num_members % self.member_shards:
            raise ConfigError(
                f"parallel.member_shards={self.member_shards} does not divide the sweep's "
                f"{num_members} member(s); use one of {_divisors(num_members)} or a sweep of a "
                f"multiple of {self.member_shards} members"
            )

    def data_specs(self, tree: Any) -> Any:
        """The mesh placement of the dataset `tree` (leading axis: examples): split over `'data'`
        with `shard_dataset`, else replicated."""
        spec = P(AXIS) if self.shard_dataset else P()
        return jax.tree.map(lambda _: spec, tree)

    def put(self, tree: Any, specs: Any = None) -> Any:
        """Host arrays -> arrays on the mesh, placed by `specs` (a tree of `PartitionSpec`s;
        default: replicated); works across processes."""
        specs = jax.tree.map(lambda _: P(), tree) if specs is None else specs

        def put_leaf(x: Any, spec: P) -> jax.Array:
            x = np.asarray(x)
            sharding = NamedSharding(self.mesh, spec)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree.map(put_leaf, tree, specs)

    def to_run(self, tree: Any) -> Any:
        if self.mode != "pmap":
            return tree
        n = self.num_devices
        stack = jax.jit(
            lambda t: jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (n, *x.shape)), t),
            out_shardings=self._stacked,
        )
        return stack(tree)

    def from_run(self, tree: Any) -> Any:
        if self.mode != "pmap":
            return tree
        first = jax.jit(lambda t: jax.tree.map(lambda x: x[0], t), out_shardings=self.by_member)
        return first(tree)

    def compile(
        self,
        build: Callable[[str | None], Callable[..., Any]],
        in_specs: tuple[Any, ...],
        *,
        donate_state: bool = True,
    ) -> Callable[..., Any]:
        """Compile the per-device function `build(axis_name)` of (state, *inputs) for this mode.

        `in_specs` places each argument on the mesh (`P(MEMBERS)` for those with a leading member
        axis, `data_specs` for the dataset, `P()` for the rest); every output has a leading
        member axis. Under pmap all are replicated with the leading device axis of `to_run`.
        The state (first argument) is donated unless `donate_state` is False.
        """
        donate = (0,) if donate_state else ()
        if self.mode == "single":
            return jax.jit(build(None), donate_argnums=donate)
        if self.mode == "pmap":
            return jax.pmap(build(AXIS), axis_name=AXIS, donate_argnums=donate)
        mapped = jax.shard_map(build(AXIS), mesh=self.mesh, in_specs=in_specs, out_specs=P(MEMBERS))
        return jax.jit(mapped, donate_argnums=donate)

    def member_groups(self, num_members: int) -> Groups:
        """[start, stop) of each group of members that `Trainer` runs as a concurrent call.

        One group per core on a one-device CPU: XLA:CPU runs a small model's step as one chain of
        operations, so one chain per core keeps the cores busy (8 members of the BatchNorm
        paper's MLP on 2 cores: chunks 12-18% faster than two groups inside one call, whose
        operations interleave on both threads). One group elsewhere: accelerators and several
        devices run all members in one call.
        """
        groups = 1
        if self.mode == "single" and self.platform == "cpu":
            groups = min(num_members, os.cpu_count() or 1)
        bounds = np.linspace(0, num_members, groups + 1).astype(int).tolist()
        return tuple(pairwise(bounds))

    def fetch(self, tree: Any) -> Any:
        """Outputs -> host numpy on every process: a replicated array from this process's first
        device, one split over `'members'` gathered from all (a collective across processes)."""

        def whole(x: jax.Array) -> np.ndarray:
            if self.mode == "pmap":
                return np.asarray(x.addressable_data(0))[0]
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(whole, tree)


# Runs the concurrent calls of every `MemberGroups` of the process.
_GROUP_CALLS = ThreadPoolExecutor(thread_name_prefix="member-groups")


@functools.partial(jax.jit, static_argnums=1)
def _split(tree: Any, groups: Groups) -> list[Any]:
    """`tree` (leading member axis) as one tree per group [start, stop) of members."""
    return [jax.tree.map(lambda x, a=a, b=b: x[a:b], tree) for a, b in groups]


@jax.jit
def _join(trees: list[Any]) -> Any:
    """The inverse of `_split`: the groups' trees as one, members in order."""
    return jax.tree.map(lambda *parts: jax.numpy.concatenate(parts), *trees)


class MemberGroups:
    """Calls functions of a leading member axis, compiled by `Parallel.compile`, as one concurrent
    call per group of `Parallel.member_groups` (one call where there is one group)."""

    def __init__(self, par: Parallel) -> None:
        self.par = par
        self.compiled: dict[tuple[Any, ...], list[Any]] = {}  # one compiled call per group

    def __call__(self, call: Any, args: tuple[Any, ...], per_member: tuple[bool, ...]) -> Any:
        """`call(*args)`, the outputs of the groups joined; `per_member` marks the arguments with
        a leading member axis (the first is the state)."""
        groups = self.par.member_groups(int(args[0].step.shape[-1]))
        if len(groups) == 1:
            return call(*args)
        columns = [
            _split(a, groups) if m else [a] * len(groups)
            for a, m in zip(args, per_member, strict=True)
        ]
        parts = list(zip(*columns, strict=True))
        # Compiled for these inputs' structure and shapes (which fix the groups; a chunk may touch
        # one epoch or two), here and once per group size, not in the threads.
        key = (call, jax.tree.structure(args), tuple(map(jax.typeof, jax.tree.leaves(args))))
        if key not in self.compiled:
            self.compiled[key] = [call.lower(*part).compile() for part in parts]
        return _join(list(_GROUP_CALLS.map(lambda c, part: c(*part), self.compiled[key], parts)))
