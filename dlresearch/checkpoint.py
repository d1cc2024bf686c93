"""Orbax checkpoints of the whole train state, restorable onto any device count.

Each checkpoint also holds the train metrics not yet logged (the steps since the last log line),
so a run stopped inside a log interval logs the same mean over it once resumed.

Restores go through a template built from a freshly initialised state placed as the current run
wants it, so the target shardings come from this process, not from the writer (8 devices -> 1 works).

Nothing is deleted on a guess. When restoring the newest checkpoint fails, the cause decides:
- a checkpoint of another state structure (the code or config changed): `CheckpointError` naming
  the differing leaves, nothing touched;
- an I/O error of the file system (EIO, a stale NFS handle, ...): retried, then `CheckpointError`,
  nothing touched;
- anything else means its files are damaged: the checkpoint is moved (not deleted) to
  `<directory>_damaged/<step>-<time>`, logged, and the previous one is tried.
A save that fails (a full disk, whether the file system or TensorStore reports it) is a
`CheckpointError`; the checkpoints already written stay intact.
"""

import datetime
import logging
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlresearch.errors import CheckpointError

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 3
# What a failing write raises: the file system's errors, and TensorStore's (through Orbax) as
# ValueError, e.g. `ValueError: RESOURCE_EXHAUSTED: ...` on a full disk.
_WRITE_ERRORS = (OSError, ValueError)
RETRY_SECONDS = 1.0


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """'path.to.leaf' -> (shape, dtype) of a state or of Orbax's metadata of one."""

    def name(entry: Any) -> str:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                return str(getattr(entry, attribute))
        return str(entry)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        ".".join(name(e) for e in path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in flat
    }


def _differences(expected: dict, found: dict, limit: int = 5) -> str:
    """The leaves that differ, in the order of the state (params before optimizer state)."""
    lines = [
        f"{k} missing"
        if k not in found
        else f"{k} {found[k][1]}{list(found[k][0])} instead of {expected[k][1]}{list(expected[k][0])}"
        for k in expected
        if found.get(k) != expected[k]
    ]
    lines += [f"{k} unexpected" for k in found if k not in expected]
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _reason(error: Exception) -> str:
    """An error's reason on one line: an OSError's text, else the first line of its message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


class Restored(NamedTuple):
    state: Any
    unlogged: dict[str, np.ndarray]  # train metrics [members, steps] since the last log line


def _encode(unlogged: dict[str, np.ndarray]) -> dict[str, Any]:
    # JSON floats round-trip float32 values exactly (NaN included: `json` writes it as NaN).
    return {k: {"dtype": str(v.dtype), "values": v.tolist()} for k, v in unlogged.items()}


def _decode(item: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v["values"], dtype=v["dtype"]) for k, v in item.items()}


class Checkpointer:
    """Saves and restores the train state under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str, *, keep: int) -> None:
        self.directory = directory
        self._manager = ocp.CheckpointManager(
            directory,
            # Named, so that the metadata of a checkpoint can be read before restoring it.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "unlogged": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._saving: int | None = None  # the step of the save in flight, if any

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, step: int, state: Any, unlogged: dict[str, np.ndarray] | None = None) -> None:
        """Start an asynchronous save of `state` and the train metrics `unlogged` (since the last
        log line); a crash during it leaves only a temporary directory."""
        try:
            # A previous save's failure surfaces here, before a new one starts.
            self.wait_until_finished()
            self._saving = step
            args = ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                unlogged=ocp.args.JsonSave(_encode(unlogged or {})),
            )
            saved = self._manager.save(step, args=args, force=True)
        except _WRITE_ERRORS as error:
            raise self._save_error(step, error) from None
        if not saved:
            raise CheckpointError(f"Orbax declined to save step {step} in {self.directory}")

    def wait_until_finished(self) -> None:
        """Block until the last save is committed (raises `CheckpointError` if it failed)."""
        try:
            self._manager.wait_until_finished()
        except _WRITE_ERRORS as error:
            raise self._save_error(self._saving, error) from None
        self._saving = None

    def _save_error(self, step: int | None, error: Exception) -> CheckpointError:
        self._saving = None
        intact = [s for s in self._manager.all_steps() if s != step]
        kept = f"the checkpoint of step {max(intact)} is intact" if intact else "no earlier one"
        return CheckpointError(
            f"saving the checkpoint of step {step} in {self.directory} failed "
            f"({_reason(error)}); {kept}"
        )

    def restore_latest(self, template: Any) -> Restored:
        """The newest readable checkpoint shaped and placed like `template`, or `template` (and
        nothing unlogged) if none."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            restored = self._restore(step, abstract)
            if restored is not None:
                logger.info("restored checkpoint at step %d from %s", step, self.directory)
                return restored
        if steps:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} (tried steps {steps}; moved them to "
                f"{self._damaged_directory()})"
            )
        return Restored(template, {})

    def _restore(self, step: int, abstract: Any) -> Restored | None:
        """The checkpoint of `step`, or None once a damaged checkpoint was moved aside."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self._read(step, abstract)
            except CheckpointError:
                raise
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
                return self._set_aside(step, error)  # a file of it is missing: damaged
            except OSError as error:  # the file system failed, not the checkpoint
                logger.warning(
                    "reading the checkpoint of step %d failed (%s), attempt %d of %d",
                    step,
                    error,
                    attempt,
                    READ_ATTEMPTS,
                )
                if attempt == READ_ATTEMPTS:
                    raise CheckpointError(
                        f"reading the checkpoint of step {step} in {self.directory} failed "
                        f"{READ_ATTEMPTS} times ({error.strerror or error}); nothing was changed, "
                        "run again when the file system is back"
                    ) from None
                time.sleep(RETRY_SECONDS * attempt)
            except Exception as error:  # whatever unreadable files raise: damage
                return self._set_aside(step, error)
        return None

    def _read(self, step: int, abstract: Any) -> Restored:
        items = self._manager.item_metadata(step)
        metadata = items["state"]
        if metadata is None:
            raise ValueError("its metadata cannot be read")  # damaged: set aside by the caller
        found = _leaves(metadata)
        expected = _leaves(abstract)
        if found != expected:
            raise CheckpointError(
                f"the checkpoint of step {step} in {self.directory} holds another state "
                f"structure than this config builds (did the code or config change?): "
                f"{_differences(expected, found)}; nothing was changed"
            )
        args = {"state": ocp.args.StandardRestore(abstract)}
        # Checkpoints written before the unlogged metrics were kept have no such item.
        if "unlogged" in items:
            args["unlogged"] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return Restored(restored.state, _decode(restored.unlogged) if "unlogged" in args else {})

    def _damaged_directory(self) -> str:
        return self.directory.rstrip(os.sep) + "_damaged"

    def _set_aside(self, step: int, error: Exception) -> None:
        """Move the damaged checkpoint of `step` out of the way, keeping its files."""
        if jax.process_index() != 0:  # one process moves it; the others see it gone
            return
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        destination = os.path.join(self._damaged_directory(), f"{step}-{stamp}")
        os.makedirs(self._damaged_directory(), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), destination)
        self._manager.reload()
        first_line = (str(error).splitlines() or [""])[0]
        logger.warning(
            "checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s and trying the "
            "previous one",
            step,
            self.directory,
            type(error).__name__,
            first_line[:300],
            destination,
        )

    def close(self) -> None:
        try:
            self.wait_until_finished()
        finally:
            self._manager.close()
