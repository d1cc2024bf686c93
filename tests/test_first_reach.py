"""Steps to a target at step resolution: the first step at which the mean of a per-step training
metric over a trailing window reaches it, computed in the compiled step, exact under resume and the
same in every parallel mode; `Run.steps_to` reads it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config
from fake_runs import fake_run

from dlresearch import train
from dlresearch.ablation import spec
from dlresearch.errors import ConfigError
from dlresearch.metrics import reach_key, read_jsonl

WINDOW = 5
ACCURACY = spec.Target("train/accuracy", 0.3)
LOSS = spec.Target("train/loss", 0.5, below=True)
TARGETS = {
    **spec.first_reach(ACCURACY, LOSS),
    "train.reach_window": WINDOW,
    "sweep.seed": (0, 1),
}


def _reached(workdir: Path) -> list[tuple[int, int, str]]:
    """(member, step, target) of every first-reach record, sorted."""
    return sorted(
        (r["member"], r["step"], key)
        for r in read_jsonl(workdir / "metrics.jsonl")
        for key in r
        if key.startswith("first_reach/")
    )


def test_the_first_step_whose_trailing_mean_reaches_the_target(tmp_path: Path) -> None:
    """Logged every step, the train metrics are the per-step values: the recorded step is the
    first one, from WINDOW on, whose mean over the last WINDOW steps reaches the target."""
    config = small_config(**TARGETS, **{"train.log_every_steps": 1, "train.steps_per_call": 1})
    train.run(config, str(tmp_path))
    records = read_jsonl(tmp_path / "metrics.jsonl")
    for member in (0, 1):
        for target in (ACCURACY, LOSS):
            values = np.asarray(
                [r[target.metric] for r in records if r["member"] == member and target.metric in r],
                np.float32,
            )
            means = np.convolve(values, np.ones(WINDOW, np.float32) / WINDOW, "valid")
            hits = np.flatnonzero(
                means <= target.threshold if target.below else means >= target.threshold
            )
            expected = int(hits[0]) + WINDOW if len(hits) else None
            logged = [
                r["step"] for r in records if r["member"] == member and reach_key(target.spec) in r
            ]
            assert expected is not None and logged == [expected], (member, target)


def test_exact_under_resume(tmp_path: Path) -> None:
    """A run stopped after step 10's checkpoint keeps what it reached by then (its state) and
    recomputes what it reached after, each recorded once."""
    config = small_config(**TARGETS, **{"checkpoint.every_steps": 10, "checkpoint.keep": 4})
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train.run(config, str(full))
    reached = _reached(full)
    steps = [step for _, step, _ in reached]
    assert len(reached) == 4 and min(steps) <= 10 < max(steps)
    shutil.copytree(full, resumed)
    for later in (20, 30, 40):
        shutil.rmtree(resumed / "checkpoints" / str(later))
    train.run(config, str(resumed))
    assert _reached(resumed) == reached


@pytest.mark.parametrize(
    "mode",
    [
        {"parallel.mode": "shard_map"},
        {"parallel.mode": "pmap"},
        {"parallel.mode": "shard_map", "parallel.member_shards": 2},
    ],
    ids=["shard_map", "pmap", "shard_map-2-member-rows"],
)
def test_the_same_in_every_parallel_mode(tmp_path: Path, mode: dict) -> None:
    train.run(small_config(**TARGETS), str(tmp_path / "single"))
    train.run(small_config(**TARGETS, **mode), str(tmp_path / "other"))
    assert _reached(tmp_path / "other") == _reached(tmp_path / "single")


def test_run_steps_to_reads_the_record_and_its_prefix() -> None:
    """A run that recorded the target answers from its record, at step resolution; its prefix
    before that step has not reached it; a run that did not record it reads its log lines."""
    logs = [{"step": 20, "train/accuracy": 0.2}, {"step": 40, "train/accuracy": 0.7}]
    recorded = fake_run(
        "a",
        [[*logs, {"step": 33, reach_key(ACCURACY.spec): 33}]],
        config=spec.first_reach(ACCURACY),
    )
    assert recorded.steps_to(ACCURACY, 0) == 33
    assert recorded.prefix(32).steps_to(ACCURACY, 0) is None
    assert fake_run("b", [logs]).steps_to(ACCURACY, 0) == 40  # its log line


def test_a_malformed_target_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"'train/acc>0.5' is not METRIC>=LEVEL or METRIC<=LEVEL"):
        train.Trainer(small_config(**{"train.reach_targets": ("train/acc>0.5",)}))
