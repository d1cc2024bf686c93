"""JAX's persistent compilation cache, on by default, so programs compile once across processes.

A resumed run, a re-run report and a variant with the same shapes load their compiled programs
from disk instead of compiling them again. The cache directory is `$DLRESEARCH_COMPILATION_CACHE`,
by default `jax-compilation-cache` inside the dataset cache (`$DLRESEARCH_DATA_DIR`, by default
`~/.cache/dlresearch`); `DLRESEARCH_COMPILATION_CACHE=off` (or empty) turns it off. A directory
set through JAX itself (`JAX_COMPILATION_CACHE_DIR`) is left as it is.
"""

import os
from pathlib import Path

import jax

from dlresearch import download

CACHE_ENV = "DLRESEARCH_COMPILATION_CACHE"
OFF = ("", "off")


def cache_dir() -> Path | None:
    """Where compiled programs are kept, or None when the cache is switched off."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return download.cache_dir() / "jax-compilation-cache"
    if value.strip().lower() in OFF:
        return None
    return Path(value).expanduser()


def enable_persistent_cache() -> Path | None:
    """Point JAX's persistent compilation cache at `cache_dir()` (before the first compilation).

    Every program is cached, however short its compilation: the programs of a small run compile in
    0.3-2 s each, below JAX's default threshold of 1 s, and together they are most of its start-up.
    Returns the directory in use, or None when off.
    """
    if jax.config.jax_compilation_cache_dir:  # the user chose one through JAX
        return Path(jax.config.jax_compilation_cache_dir)
    directory = cache_dir()
    if directory is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory
