"""`python -m benchmarks.run`: every benchmark runs (tiny) and writes the JSON it documents.

Structure only: no timing thresholds, those belong to benchmarks/README.md.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run

REPO = Path(__file__).resolve().parents[1]
# No PyTorch peers here (torch is optional); test_peer_* checks their plumbing with a stand-in.
TINY = ["--steps", "2", "--seeds", "2", "--sweep_k", "2", "--resnet_batch_size", "4"]
TINY += ["--mesh_devices", "2", "--torch_python", ""]


def _benchmark(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # A fresh process, as a user runs it: conftest's 8 forced CPU devices do not apply there.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "out.json"
    result = _benchmark(*TINY, "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("bn_figure", "sweep_speedup", "resnet20", "parallel_modes", "bn_process"):
        assert name in result.stdout  # the table
    assert "mesh_layouts" in result.stderr  # its progress line (2 steps leave no steady rate)
    return json.loads(out.read_text())


def test_environment_fields(report: dict[str, Any]) -> None:
    for key in ("device", "platform", "jax_version", "flax_version", "date", "command"):
        assert isinstance(report[key], str) and report[key]
    assert _positive(report["num_devices"])
    assert len(report["load_average_start"]) == 3


def _check_timing(timing: dict[str, Any]) -> None:
    for key in ("setup_s", "init_s", "first_chunk_s", "eval_s", "total_s"):
        assert _positive(timing[key]), key


def test_bn_figure(report: dict[str, Any]) -> None:
    result = report["bn_figure"]
    assert result["steps"] == 2 and result["seeds"] == 2 and result["batch_size"] == 60
    assert result["steps_per_call"] == 100 and result["includes_compile"] is True
    assert result["dataset"] in ("mnist", "digits")
    assert _positive(result["wall_s"])
    for variant in ("baseline", "batchnorm"):
        values = result[variant]
        assert len(values["test_accuracy"]) == 2
        assert all(0 <= a <= 1 for a in values["test_accuracy"])
        assert values["test_accuracy_mean"] == pytest.approx(sum(values["test_accuracy"]) / 2)
        assert values["curve"]["step"] == [2]
        _check_timing(values["timing"])
        assert values["wall_s"] <= result["wall_s"]


def test_sweep_speedup(report: dict[str, Any]) -> None:
    result = report["sweep_speedup"]
    assert result["k"] == 2 and result["steps"] == 2 and result["includes_compile"] is True
    for key in ("sequential_s", "vmapped_s", "speedup", "sequential_shared_compile_s"):
        assert _positive(result[key]), key
    assert result["speedup"] == pytest.approx(
        result["sequential_s"] / result["vmapped_s"], rel=1e-2
    )
    # Members of a sweep train as they do alone (bitwise on CPU; allow 10 of 10,000 test examples).
    assert 0 <= result["max_abs_accuracy_difference"] <= 1e-3
    for mode in ("vmapped", "sequential", "sequential_shared_compile"):
        _check_timing(result["timing"][mode])


def test_resnet20(report: dict[str, Any]) -> None:
    result = report["resnet20"]
    assert result["depth"] == 20 and result["batch_size"] == 4 and result["steps"] == 2
    assert result["steps_per_call"] == 2  # never longer than the timed steps
    assert result["includes_compile"] is False
    for dtype in ("float32", "bfloat16"):
        values = result[dtype]
        assert _positive(values["images_per_sec"]) and _positive(values["seconds"])
        assert values["train_loss_finite"] is True
        # Mixed precision computes in bfloat16 but keeps float32 parameters.
        assert values["param_dtypes"] == ["float32"]


def test_parallel_modes(report: dict[str, Any]) -> None:
    result = report["parallel_modes"]
    assert result["includes_compile"] is False and result["batch_size"] % report["num_devices"] == 0
    assert result["single"]["devices"] == 1
    for mode in ("single", "shard_map", "pmap"):
        assert _positive(result[mode]["steps_per_sec"]), mode
    assert result["shard_map"]["devices"] == result["pmap"]["devices"] == report["num_devices"]


def test_mesh_layouts(report: dict[str, Any]) -> None:
    result = report["mesh_layouts"]
    assert (result["devices"], result["seeds"], result["steps"]) == (2, 2, 2)
    layouts = {k: v for k, v in result.items() if isinstance(v, dict)}
    assert {k: (v["member_shards"], v["shard_dataset"]) for k, v in layouts.items()} == {
        "2x1": (2, False),
        "1x2": (1, False),
        "1x2_split": (1, True),
    }
    for split in layouts.values():
        for key in ("process_s", "import_s", "setup_s", "first_chunk_s", "main_s"):
            assert _positive(split[key]), key
        assert "steps_per_sec" not in split  # 2 steps: one chunk, no steady steps to time


def test_bn_process(report: dict[str, Any]) -> None:
    result = report["bn_process"]
    assert result["steps"] == 2 and result["seeds"] == 2 and result["includes_compile"] is True
    assert result["peer"] is None and "speedup_vs_peer_warm" not in result
    for cache in ("cold", "warm"):
        runs = result[cache]
        assert runs["process_s"] == pytest.approx(
            runs["baseline"]["process_s"] + runs["batchnorm"]["process_s"], abs=2e-3
        )
        for variant in ("baseline", "batchnorm"):
            split = runs[variant]
            for key in ("import_s", "setup_s", "init_s", "first_chunk_s", "eval_s", "main_s"):
                assert _positive(split[key]), (cache, variant, key)
            assert split["evaluations"] == 1  # eval.every_steps = steps
            assert split["main_s"] <= split["process_s"]
            assert split["eval_fraction"] == pytest.approx(
                split["eval_s"] / (split["first_chunk_s"] + split.get("steady_s", 0.0)), rel=1e-2
            )


def test_peer_reads_the_last_json_line_of_the_torch_python(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho warming up\necho '{\"images_per_sec\": 5.0}'\n")
    fake.chmod(0o755)
    peer = run.run_peer(argparse.Namespace(torch_python=str(fake)), "resnet20", "4", "2")
    assert peer is not None and peer["images_per_sec"] == 5.0 and peer["python"] == str(fake)
    assert run.run_peer(argparse.Namespace(torch_python=""), "resnet20", "4", "2") is None


def test_only_runs_the_named_benchmark_and_digits_stand_in(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = _benchmark("--only", "bn_figure", *TINY, "--data_dir", "", "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "bn_figure" in report and "sweep_speedup" not in report and "resnet20" not in report
    assert "parallel_modes" not in report
    assert report["bn_figure"]["dataset"] == "digits" and "note" in report["bn_figure"]


def test_an_unknown_benchmark_exits_2_listing_the_names() -> None:
    result = _benchmark("--only", "nosuch")
    assert result.returncode == 2
    assert "bn_figure" in result.stderr and "Traceback" not in result.stderr
