"""Where a report came from: code version, configs, libraries, device and date, stamped into it so a
reader can tell which code and settings produced its numbers."""

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import jax
import ml_collections

from dlresearch import config as config_lib

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")


def code_state(path: Path) -> str:
    """Whether `path` (a file or a directory) is committed: 'commit C' when git's checkout holds it
    as it is at its commit C, 'commit C + uncommitted changes' when it differs from C or holds
    files git does not track (a new script), 'not in a git checkout' otherwise."""
    where = path if path.is_dir() else path.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=all", "--", str(path))
    except (OSError, subprocess.CalledProcessError):
        return "not in a git checkout"
    return f"commit {commit} + uncommitted changes" if dirty else f"commit {commit}"


def library_version() -> str:
    """The dlresearch code that ran: its commit in a checkout, else its installed version."""
    package = Path(__file__).resolve().parents[1]
    if (package.parent / "pyproject.toml").is_file():
        return code_state(package)
    return f"version {_version('dlresearch')} (installed)"


def script_version() -> str | None:
    """The experiment script that ran (`__main__`): its name, content hash and `code_state`; None
    when no script file ran (an interactive session)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"script {Path(path).name} (sha256 {digest}, {code_state(Path(path).resolve())})"


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
    """One markdown paragraph: the code (dlresearch's commit or version, the script's hash and
    commit), config hash, library versions, device, date (UTC)."""
    devices = jax.devices()
    device = f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
    versions = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    code = ", ".join(filter(None, [f"dlresearch {library_version()}", script_version()]))
    return (
        f"**Provenance.** Code {code}; config hash {config_hash(configs)}; "
        f"Python {platform.python_version()}, {versions}; {device}; written {date}."
    )
