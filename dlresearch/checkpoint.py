"""Orbax checkpoints of the whole train state, restorable onto any device count.

Restores go through a template built from a freshly initialised state placed as the current run
wants it, so the target shardings come from this process, not from the writer (8 devices -> 1 works).
A newest checkpoint that cannot be read is reported and the previous one used; none readable is an\nerror, never a silent fresh start.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from dlresearch.registry import ConfigError


class CheckpointError(ConfigError):
    """No readable checkpoint in a directory that has some."""


class Checkpointer:
    def __init__(self, directory: str, *, keep: int) -> None:
        self.directory = directory
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def save(self, step: int, state: Any) -> None:
        """Asynchronous save; a save interrupted by a crash leaves only a temporary directory."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

    def restore_latest(self, template: Any) -> Any:
        """The newest readable checkpoint shaped and placed like `template`, or `template` if none."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        steps = sorted(self._manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )
            except Exception as error:
                first_line = (str(error).splitlines() or [""])[0]
                logging.warning(
                    "checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
                    step,
                    self.directory,
                    type(error).__name__,
                    first_line,
                )
                continue
            # The unreadable newer ones would otherwise clash with the steps about to be saved again.
            for damaged in steps[:i]:
                logging.warning("deleting unreadable checkpoint at step %d", damaged)
                self._manager.delete(damaged)
            logging.info("restored checkpoint at step %d from %s", step, self.directory)
            return restored.state
        if steps:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} (tried steps {steps})"
            )
        return template

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
