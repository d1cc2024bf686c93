"""Where a report came from: code version, configs, libraries, device and date, stamped into it so a
reader can tell which code and settings produced its numbers."""

import datetime
import hashlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import jax
import ml_collections

from dlresearch import config as config_lib

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")


def git_commit() -> str:
    """The commit of the code that ran, '+ local changes' when the tree differs from it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} + local changes" if dirty else commit


def config_hash(configs: Iterable[ml_collections.ConfigDict]) -> str:
    """A short hash of every resolved run config, in order: equal hashes, equal settings."""
    digest = hashlib.sha256()
    for config in configs:
        digest.update(config_lib.to_json(config).encode())
    return digest.hexdigest()[:12]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def stamp(configs: Iterable[ml_collections.ConfigDict]) -> str:
    """One markdown paragraph: commit, config hash, library versions, device, date (UTC)."""
    devices = jax.devices()
    device = f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
    versions = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"**Provenance.** Code {git_commit()}; config hash {config_hash(configs)}; "
        f"Python {platform.python_version()}, {versions}; {device}; written {date}."
    )
