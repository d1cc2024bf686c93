"""Integration: the 3x100 MLP of configs/mnist_mlp.py on the real MNIST files reaches 0.97."""

import os
from pathlib import Path

import pytest

from configs import mnist_mlp
from dlresearch import train

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# Skipped on a laptop without the files; in CI (CI=true) missing data is a failure.
@pytest.mark.skipif(
    not MNIST.is_dir() and os.environ.get("CI") != "true",
    reason=f"needs the MNIST files in {MNIST}",
)
def test_mnist_mlp_reaches_97_percent(tmp_path: Path) -> None:
    config = mnist_mlp.get_config()
    config.data.dir = str(MNIST)
    config.parallel.mode = "single"  # the suite forces 8 CPU devices; this test is about accuracy
    result = train.run(config, str(tmp_path))
    assert result.step == config.train.steps
    assert result.final[0]["test/accuracy"] >= 0.97
