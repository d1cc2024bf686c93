"""One optimizer's K tuning points as one program vs the same K trials as separate processes.

    python -m benchmarks.tuning_speed --k=8 --problem=mnist_mlp --preset=quick \
        --data_dir=../shared/data/mnist --json=/tmp/tuning_speed.json

The benchmark's tuning run of one arm (`optimizer_benchmark.protocol.tuning_config`: K
quasi-random points on a tuning seed with a held-out split, evaluated at the end) is trained
twice, each as a user runs it, in the same invocation on the same machine:
- one program: ONE `python -m dlresearch.main` process whose sweep is the K points (vmapped);
- sequential: K `python -m dlresearch.main` processes one after another, each one point (the way
  DeepOBS and AlgoPerf run their trials).
Each is timed from process start to exit (imports, data loading, compilation, training, metrics and
checkpoints included). The JSON records both, `ratio` = sequential_s / one_program_s, the machine
and its load. On a GPU machine the same command measures the GPU.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax

from dlresearch import config as config_lib
from dlresearch.optimizer_benchmark import problems, protocol
from dlresearch.optimizer_benchmark.search_space import parse_arm, points

REPO = Path(__file__).resolve().parents[1]


def _flat(section: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _process(fields: dict[str, Any], where: Path) -> float:
    """Seconds of one `python -m dlresearch.main` process training the config `fields`."""
    where.mkdir(parents=True)
    (where / "fields.json").write_text(json.dumps(fields))
    command = [
        sys.executable, "-m", "dlresearch.main",
        f"--config={REPO / 'benchmarks' / 'json_config.py'}:{where / 'fields.json'}",
        f"--workdir={where / 'run'}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    problem = problems.PROBLEMS.get(args.problem)
    setting = protocol.Setting(
        args.problem, problem, problem.config(args.preset, args.data_dir), (0,), args.k
    )
    arm = parse_arm(args.optimizer)
    together = protocol.tuning_config(setting, arm)
    config_lib.validate(together)
    one_program_s = _process(_flat(together.to_dict()), scratch / "one_program")
    trials = []
    for i, point in enumerate(points(arm.space, args.k)):
        alone = {f"sweep.{field}": (value,) for field, value in point.items()}
        trial = config_lib.apply_overrides(together, alone)
        trials.append(_process(_flat(trial.to_dict()), scratch / f"trial_{i}"))
    return {
        "problem": args.problem,
        "preset": args.preset,
        "optimizer": args.optimizer,
        "k": args.k,
        "steps": together.train.steps,
        "batch_size": together.train.batch_size,
        "one_program_s": one_program_s,
        "sequential_s": sum(trials),
        "trial_s": trials,
        "ratio": sum(trials) / one_program_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--problem", default="mnist_mlp")
    parser.add_argument("--preset", default="quick", choices=problems.PRESETS)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(args, Path(scratch))
    result |= {
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.tuning_speed", *sys.argv[1:]]),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
