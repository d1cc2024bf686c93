"""The persistent compilation cache: where it lives, its off switch, and that programs land there."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlresearch import compilation, download

REPO = Path(__file__).resolve().parents[1]


def test_default_is_inside_the_dataset_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compilation.CACHE_ENV, raising=False)
    monkeypatch.setenv(download.CACHE_ENV, "/data/cache")
    assert compilation.cache_dir() == Path("/data/cache/jax-compilation-cache")
    monkeypatch.delenv(download.CACHE_ENV)
    assert compilation.cache_dir() == Path("~/.cache/dlresearch/jax-compilation-cache").expanduser()


@pytest.mark.parametrize("value", ["off", "OFF", ""])
def test_off_switch(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(compilation.CACHE_ENV, value)
    assert compilation.cache_dir() is None


def test_explicit_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compilation.CACHE_ENV, "~/jax-cache")
    assert compilation.cache_dir() == Path("~/jax-cache").expanduser()


def _compile_in_fresh_process(cache: str, data_cache: Path) -> None:
    code = (
        "import jax; from dlresearch import compilation; compilation.enable_persistent_cache(); "
        "jax.jit(lambda x: x * 2 + 1)(1.0).block_until_ready()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), download.CACHE_ENV: str(data_cache)}
    env[compilation.CACHE_ENV] = cache
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_a_compiled_program_is_written_to_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _compile_in_fresh_process(str(cache), tmp_path / "data")
    assert any(cache.iterdir())


def test_off_writes_nothing(tmp_path: Path) -> None:
    _compile_in_fresh_process("off", tmp_path)
    assert list(tmp_path.iterdir()) == []
