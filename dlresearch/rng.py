"""The random streams of a sweep member: each kind of randomness folded from its key separately."""

import enum


class Stream(enum.IntEnum):
    """`jax.random.fold_in(member_key, stream)`: independent randomness for each use."""

    INIT = 0  # parameter initialisation
    DATA = 1  # the example order of each epoch
    STEP = 2  # per step: augmentation (folded with the example index) and dropout (`DROPOUT`)
    DIAGNOSTICS = 3  # dropout of the diagnostics' forward passes


# Dropout's key within a step's key (`Stream.STEP`, the step, and the device index under a mesh).
DROPOUT = 1
