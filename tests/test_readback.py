"""Runs read back as one tidy table, and TensorBoard runs named by the members' swept values."""

import sys
from pathlib import Path

import pytest

from dlresearch import readback, train
from dlresearch.metrics import read_jsonl, tensorboard_run


def test_a_sweep_reads_back_one_row_per_member_and_step(make_config, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # the list-of-dicts form, pandas or not
    config = make_config(**{"sweep.seed": (0, 1), "sweep.lr": (0.01, 0.1), "train.steps": 20})
    result = train.run(config, str(tmp_path / "sweep"))
    rows = readback.load(tmp_path / "sweep")
    assert isinstance(rows, list)
    logged = {
        (r.get("member", 0), r["step"]) for r in read_jsonl(tmp_path / "sweep" / "metrics.jsonl")
    }
    assert sorted((r["member"], r["step"]) for r in rows) == sorted(logged)
    for row in rows:
        member = result.members[row["member"]]
        assert (row["seed"], row["lr"]) == (member["seed"], member["lr"])
    last = [r for r in rows if r["step"] == 20]
    assert [r["test/accuracy"] for r in last] == [m["test/accuracy"] for m in result.final]
    for row in (r for r in rows if "train/loss" in r):  # a constant rate, logged in float32
        assert row["scheduled_lr"] == pytest.approx(row["lr"], rel=1e-6)
    boards = {p.name for p in (tmp_path / "sweep" / "tensorboard").iterdir()}
    assert boards == {f"seed={m['seed']:g},lr={m['lr']:g}" for m in result.members}


def test_an_experiment_workdir_reads_back_every_run(make_config, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    for name, width in (("narrow", 16), ("wide", 32)):
        train.run(
            make_config(**{"model.width": width, "train.steps": 10}), str(tmp_path / "runs" / name)
        )
    rows = readback.load(tmp_path)
    assert {r["run"] for r in rows} == {"runs/narrow", "runs/wide"}
    with pytest.raises(ImportError):
        readback.load(tmp_path, frame=True)


def test_no_run_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(readback.ConfigError, match="holds no run"):
        readback.load(tmp_path)


def test_tensorboard_run_names() -> None:
    assert tensorboard_run(None) == ""
    assert tensorboard_run({"member": 3, "sweep/seed": 2, "sweep/lr": 0.001}) == "seed=2,lr=0.001"
