"""Test set-up: 8 CPU devices for every multi-device feature, and small configs."""

import dataclasses
import os

# Must be set before JAX initialises its backend, i.e. before any test module imports jax.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import ml_collections
import pytest

from dlresearch import ablation
from dlresearch.ablation import comparison
from dlresearch.config import apply_overrides, base_config


def small_config(**overrides: object) -> ml_collections.ConfigDict:
    """A digits MLP run of a few seconds; `overrides` use dotted field names ("model.depth")."""
    config = base_config()
    config.parallel.mode = "single"
    config.model.width = 32
    config.optim.lr = 0.01
    config.train.steps = 40
    config.train.batch_size = 32
    config.train.steps_per_call = 10
    config.train.log_every_steps = 10
    config.eval.every_steps = 20
    config.checkpoint.every_steps = 20
    return apply_overrides(config, overrides)


@pytest.fixture
def make_config():
    return small_config


@pytest.fixture(scope="module")
def no_figures():
    """The ablation judges of a module write no figures: every plotting function returns its
    file name (for modules that test verdicts; tests/test_ablation.py draws the figures)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_curves", "plot_layers", "plot_percentiles"):
            patch.setattr(ablation, name, lambda outdir, filename, *args, **kwargs: filename)
        # The judges a Comparison derives draw through its own module.
        patch.setattr(comparison, "plot_curves", lambda outdir, filename, *args, **kwargs: filename)
        yield


@pytest.fixture(autouse=True)
def offline_data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test sees an empty download cache and no public mirror: no test reaches the internet
    or the user's own cache (tests that download serve files from 127.0.0.1)."""
    from dlresearch import data

    monkeypatch.setenv("DLRESEARCH_DATA_DIR", str(tmp_path_factory.mktemp("data-cache")))
    monkeypatch.delenv("DLRESEARCH_DATA_MIRROR", raising=False)
    for name, source in data.DOWNLOADS.items():
        monkeypatch.setitem(data.DOWNLOADS, name, dataclasses.replace(source, mirrors=()))
