"""A finished run asked for more steps trains on, as if given the larger budget from the start."""

import json
from pathlib import Path

import pytest

from dlresearch import train
from dlresearch.errors import ConfigError
from dlresearch.metrics import METRICS_FILE


def _lines(workdir: Path) -> str:
    return (workdir / METRICS_FILE).read_text()


@pytest.mark.parametrize("schedule", ["constant", "piecewise"])
def test_extended_run_ends_as_a_run_given_the_budget(make_config, tmp_path: Path, schedule) -> None:
    extra = {"optim.schedule": schedule}
    if schedule == "piecewise":
        extra["optim.boundaries"] = (30,)  # past the first budget: the extension crosses it
    extended, full = tmp_path / "extended", tmp_path / "full"
    train.run(make_config(**{"train.steps": 20, **extra}), str(extended))
    first = _lines(extended)
    result = train.run(make_config(**{"train.steps": 40, **extra}), str(extended))
    reference = train.run(make_config(**{"train.steps": 40, **extra}), str(full))
    assert _lines(extended).startswith(first)  # every line already logged is kept
    keys = ("train/loss", "train/accuracy", "test/loss", "test/accuracy", "lr")
    assert result.step == 40
    assert [{k: m[k] for k in keys} for m in result.final] == [
        {k: m[k] for k in keys} for m in reference.final
    ]
    steps = [json.loads(line)["step"] for line in _lines(extended).splitlines()]
    assert max(steps) == 40


def test_a_decaying_schedule_cannot_be_extended(make_config, tmp_path: Path) -> None:
    train.run(make_config(**{"train.steps": 20, "optim.schedule": "cosine"}), str(tmp_path))
    before = _lines(tmp_path)
    with pytest.raises(ConfigError, match=r"train.steps: 20 -> 40 \(a cosine schedule decays"):
        train.run(make_config(**{"train.steps": 40, "optim.schedule": "cosine"}), str(tmp_path))
    assert _lines(tmp_path) == before


def test_fewer_steps_are_refused(make_config, tmp_path: Path) -> None:
    train.run(make_config(**{"train.steps": 20}), str(tmp_path))
    with pytest.raises(ConfigError, match=r"train.steps: 20 -> 10"):
        train.run(make_config(**{"train.steps": 10}), str(tmp_path))
