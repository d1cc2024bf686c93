"""One process per workdir: an exclusive lock held for the life of a run (or an experiment), and
one config per workdir (`claim`).

The lock is `fcntl.flock` on `WORKDIR/run.lock`, so the operating system releases it when its
holder dies (a crash or SIGKILL never leaves a stale lock). The file names its holder (pid, host,
since when) for the refusal message, and is removed on a clean release.
"""

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import jax
import ml_collections

from dlresearch import config as config_lib
from dlresearch.errors import ConfigError
from dlresearch.metrics import atomic_write_text
from dlresearch.parallel import first_failure

LOCK_FILE = "run.lock"


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            holder = json.load(f)
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError):  # its holder has not written its details yet
        return "another process"


def _acquire(path: str) -> int:
    """An open descriptor of `path` holding its exclusive lock; ConfigError if another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise ConfigError(
                f"{os.path.dirname(path)} is in use by {_holder(path)} (one run per workdir; "
                f"wait for it to finish or stop it)"
            ) from None
        # A holder that released between our open and flock removed the file we locked: retry on
        # the path's current file, or two processes would each hold "the" lock.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def check_name(workdir: str) -> None:
    """Raise `ConfigError` unless a checkpoint can be written under `workdir`: Orbax needs a path
    of UTF-8 text (a name with a byte like 0xff would train, then fail at the first save)."""
    path = os.path.abspath(workdir)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"workdir {os.fsencode(path)!r} is not UTF-8 text, which checkpoints need; "
            "choose a name of UTF-8 characters"
        ) from None


def _take(workdir: str) -> int:
    """A descriptor holding `workdir`'s lock, its file naming this process (the directory created
    if need be); `ConfigError` if another holds it or the file system refuses (a file in its
    place, no permission, a name too long, a full disk), leaving nothing behind."""
    path = os.path.join(workdir, LOCK_FILE)
    created = not os.path.lexists(workdir)
    fd = None
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = _acquire(path)
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        details = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, details.encode(), 0)
        return fd
    except OSError as error:
        if fd is not None:  # held: its file is ours to remove
            with suppress(OSError):
                os.unlink(path)
            os.close(fd)
        if created:
            with suppress(OSError):
                os.rmdir(workdir)
        raise ConfigError(
            f"cannot use the workdir {workdir} ({error.strerror or error}"
            f"{f': {error.filename}' if error.filename else ''})"
        ) from None


@contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Hold `workdir`'s lock (creating the directory) or raise ConfigError naming the holder, or
    what the file system refused."""
    path = os.path.join(workdir, LOCK_FILE)
    fd = _take(workdir)
    try:
        yield
    finally:
        # Unlink while still holding the lock (see `_acquire` for why that is safe).
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def clear(workdir: str) -> None:
    """Delete everything in a locked `workdir` but its lock (`--overwrite`)."""
    for entry in os.scandir(workdir):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


# Schedules whose rate at a step does not depend on `train.steps`: a finished run with one of
# these trains on to a larger `train.steps` exactly as a run given that budget from the start.
EXTENDABLE_SCHEDULES = ("constant", "piecewise")


def _changes(old: dict, new: dict) -> list[str]:
    """The differences that forbid continuing the run of config `old` under config `new`.

    How a run executes (mode, hosts) may change between restarts; what it computes may not, but
    for a larger `train.steps` under a schedule that does not depend on it (an extended run).
    """
    changed = [c for c in config_lib.diff(old, new) if not c.startswith("parallel.")]
    before, after = old["train"]["steps"], new["train"]["steps"]
    schedule = new["optim"]["schedule"]
    if after > before and old["optim"]["schedule"] == schedule:
        steps = f"train.steps: {before!r} -> {after!r}"
        if schedule in EXTENDABLE_SCHEDULES:
            changed.remove(steps)
        else:
            changed[changed.index(steps)] = (
                f"{steps} (a {schedule} schedule decays over train.steps, so a run cannot be "
                f"extended; only a {' or '.join(EXTENDABLE_SCHEDULES)} schedule can)"
            )
    return changed


def prepare(workdir: str, config: ml_collections.ConfigDict, overwrite: bool) -> None:
    """Refuse to mix two different configs in one workdir; write the resolved config.

    A larger `train.steps` is no different run but the same one extended, where the schedule
    allows (`EXTENDABLE_SCHEDULES`): it resumes from its last checkpoint and trains on.
    Call with the workdir locked (`lock`): `overwrite` empties it but for its lock.
    """
    path = os.path.join(workdir, "config.json")
    new = config_lib.to_json(config)
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            old = json.load(f)
        changed = _changes(old, json.loads(new))
        if changed:
            raise ConfigError(
                f"{workdir} holds a run with a different config (pass --overwrite to start afresh): "
                + "; ".join(changed)
            )
    if overwrite:
        clear(workdir)
    atomic_write_text(path, new)


@contextmanager
def claim(workdir: str, config: ml_collections.ConfigDict, overwrite: bool) -> Iterator[None]:
    """Process 0 locks `workdir` and checks its config; every process learns the verdict.

    A refusal raises `ConfigError` on every process (none waits at a barrier for the others), and
    the other processes continue only once process 0 has prepared (or emptied) the workdir.
    """
    with ExitStack() as held:
        refusal = ""
        if jax.process_index() == 0:
            try:
                held.enter_context(lock(workdir))
                prepare(workdir, config, overwrite)
            except ConfigError as error:
                refusal = str(error)
            except OSError as error:  # writing config.json (a full disk)
                refusal = f"cannot prepare the workdir {workdir} ({error.strerror or error})"
        refusal = first_failure(refusal)
        if refusal:
            raise ConfigError(refusal)
        yield
