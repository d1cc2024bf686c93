"""Benchmarks of the training system: `python -m benchmarks.run [--only NAME,...] [--steps N] [--json OUT]`.

- `bn_figure`: the BatchNorm paper's MNIST figure: a 784-100-100-100-10 sigmoid MLP (small Gaussian
  init, SGD, batch 60) with and without BatchNorm, `--seeds` seeds of each as one vmapped sweep.
- `sweep_speedup`: `--sweep_k` seeds of that MLP as one vmapped sweep against the same runs one
  after another.
- `resnet20`: training images/s of ResNet-20 (batch 128) in float32 and bfloat16, CIFAR-10-shaped
  synthetic data.
- `parallel_modes`: steps/s of the BatchNorm paper's MLP in modes single, shard_map and pmap over
  every available device (try `XLA_FLAGS=--xla_force_host_platform_device_count=8` on a CPU).
- `mesh_layouts`: steps/s of a `--sweep_k`-seed sweep of that MLP (with BatchNorm) as whole
  processes at `members x data` = D x 1, D/2 x 2, 1 x D (and 1 x D with the dataset split) of
  `--mesh_devices` devices.

Everything goes through `train.Trainer`, chunked, fetched and evaluated the way `train.run` does it,
without its files (metrics, checkpoints). Datasets are read once per process, before any timing.
Prints a table and writes every number to `--json`; see benchmarks/README.md.
"""

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from benchmarks import harness
from dlresearch import train
from dlresearch.config import base_config
from dlresearch.errors import UserError


# -- the benchmarks --------------------------------------------------------------------------------
def bn_figure(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """Both curves of the BatchNorm paper's Fig. 1(a), each a vmapped sweep over seeds."""
    chunk = args.steps_per_call
    # About 50 points per curve, at chunk boundaries so evaluation never splits a chunk.
    eval_every = chunk * max(1, steps // (50 * chunk))
    result: dict[str, Any] = {
        **harness.dataset(args.data_dir),
        "steps": steps,
        "batch_size": harness.bn_mlp_config(args.data_dir).train.batch_size,
        "seeds": args.seeds,
        "steps_per_call": chunk,
        "eval_every_steps": eval_every,
        "includes_compile": True,
    }
    start = time.perf_counter()
    for variant, normalization in (("baseline", "none"), ("batchnorm", "batchnorm")):
        config = harness.bn_mlp_config(args.data_dir)
        config.model.normalization = normalization
        config.train.steps = steps
        config.sweep.seed = tuple(range(args.seeds))
        harness.preload(config, chunk)
        timing = harness.Timing()
        trainer, state = harness.start(config, timing)
        _, curve = harness.run_timed(trainer, state, steps, timing, eval_every)
        final = curve[-1][1]
        result[variant] = {
            "wall_s": round(timing.total_s, 3),
            "test_accuracy_mean": float(np.mean(final)),
            "test_accuracy": [float(a) for a in final],
            "curve": {
                "step": [s for s, _ in curve],
                "test_accuracy_mean": [round(float(np.mean(a)), 4) for _, a in curve],
            },
            "timing": timing.to_json(),
        }
    result["wall_s"] = round(time.perf_counter() - start, 3)
    return result


def sweep_speedup(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """K seeds as one vmapped program against the same K runs one after another."""
    k = args.sweep_k
    base = harness.bn_mlp_config(args.data_dir)
    base.train.steps = steps
    harness.preload(base, args.steps_per_call)

    vmapped_config = base.copy_and_resolve_references()
    vmapped_config.sweep.seed = tuple(range(k))
    vmapped = harness.Timing()
    trainer, state = harness.start(vmapped_config, vmapped)
    _, curve = harness.run_timed(trainer, state, steps, vmapped)
    vmapped_accuracy = curve[-1][1]

    # What a user of the library does: one config, hence one Trainer (and its compilation), per seed.
    sequential = harness.Timing()
    sequential_accuracy = []
    for seed in range(k):
        config = base.copy_and_resolve_references()
        config.seed = seed
        trainer, state = harness.start(config, sequential)
        _, curve = harness.run_timed(trainer, state, steps, sequential)
        sequential_accuracy.append(curve[-1][1][0])

    # The best a hand-written loop can do: one Trainer, its compiled programs reused for every seed.
    shared = harness.Timing()
    trainer = harness.timed(shared, "setup_s", lambda: train.Trainer(base))
    for seed in range(k):
        members = [{**trainer.members[0], "seed": seed}]
        state = harness.timed(
            shared,
            "init_s",
            lambda members=members: jax.block_until_ready(trainer.init_state(members)),
        )
        harness.run_timed(trainer, state, steps, shared)

    return {
        **harness.dataset(args.data_dir),
        "k": k,
        "steps": steps,
        "batch_size": base.train.batch_size,
        "steps_per_call": base.train.steps_per_call,
        "includes_compile": True,
        "method": (
            "wall time of: vmapped = one Trainer with sweep.seed=range(K); sequential = K Trainers, "
            "one per seed (each compiles, as K separate runs do); sequential_shared_compile = one "
            "Trainer whose compiled programs train every seed in turn. Each: setup, init, training "
            "in chunks of steps_per_call with per-chunk metric fetch, final evaluation. Dataset "
            "read before timing."
        ),
        "vmapped_s": round(vmapped.total_s, 3),
        "sequential_s": round(sequential.total_s, 3),
        "speedup": round(sequential.total_s / vmapped.total_s, 3),
        "sequential_shared_compile_s": round(shared.total_s, 3),
        "speedup_vs_shared_compile": round(shared.total_s / vmapped.total_s, 3),
        "max_abs_accuracy_difference": float(
            np.max(np.abs(np.asarray(vmapped_accuracy) - np.asarray(sequential_accuracy)))
        ),
        "timing": {
            "vmapped": vmapped.to_json(),
            "sequential": sequential.to_json(),
            "sequential_shared_compile": shared.to_json(),
        },
    }


def resnet20(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """Training throughput after a warm-up chunk that compiles the program."""
    batch = args.resnet_batch_size
    chunk = min(args.steps_per_call, steps)
    # Whole chunks only: a shorter last chunk would compile a second program inside the timing.
    timed_steps = chunk * max(1, steps // chunk)
    result: dict[str, Any] = {
        "dataset": "synthetic_cifar10: uniform random uint8 pixels and labels, 50,000 32x32x3 "
        "train images, crop+flip augmentation in the step as for CIFAR-10",
        "depth": 20,
        "batch_size": batch,
        "steps": timed_steps,
        "steps_per_call": chunk,
        "includes_compile": False,
    }
    for dtype in ("float32", "bfloat16"):
        config = harness.resnet20_config(dtype, batch)
        harness.preload(config, chunk)
        trainer, state = harness.start(config, harness.Timing())
        state, _, compile_s = harness.timed_chunks(
            trainer, state, chunk, 1
        )  # warm-up: compiles the chunk
        state, losses, elapsed = harness.timed_chunks(trainer, state, chunk, timed_steps // chunk)
        result[dtype] = {
            "images_per_sec": round(timed_steps * batch / elapsed, 2),
            "seconds": round(elapsed, 3),
            "compile_and_first_chunk_s": round(compile_s, 3),
            "train_loss_last": float(np.mean(losses[-1])),
            "train_loss_finite": bool(np.all(np.isfinite(np.concatenate(losses, axis=-1)))),
            "param_dtypes": sorted({str(p.dtype) for p in jax.tree.leaves(state.params)}),
        }
    result["peer"] = run_peer(args, "resnet20", str(batch), str(max(timed_steps, 10)))
    if result["peer"]:
        result["float32_vs_peer"] = round(
            result["float32"]["images_per_sec"] / result["peer"]["images_per_sec"], 3
        )
    return result


def parallel_modes(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """Step throughput of one workload in each parallel mode, on every available device.

    The global batch is 64 per device, the same in every mode (single runs it on one device).
    """
    chunk = min(args.steps_per_call, steps)
    timed_steps = chunk * max(1, steps // chunk)
    batch = 64 * jax.device_count()
    result: dict[str, Any] = {
        **harness.dataset(args.data_dir),
        "model": "784-100-100-100-10 sigmoid MLP (bn_figure's baseline)",
        "batch_size": batch,
        "steps": timed_steps,
        "steps_per_call": chunk,
        "includes_compile": False,
    }
    for mode in ("single", "shard_map", "pmap"):
        config = harness.bn_mlp_config(args.data_dir)
        config.train.batch_size = batch
        config.parallel.mode = mode
        harness.preload(config, chunk)
        trainer, state = harness.start(config, harness.Timing())
        state, _, compile_s = harness.timed_chunks(
            trainer, state, chunk, 1
        )  # warm-up: compiles the chunk
        _, _, elapsed = harness.timed_chunks(trainer, state, chunk, timed_steps // chunk)
        result[mode] = {
            "devices": trainer.par.num_devices,
            "steps_per_sec": round(timed_steps / elapsed, 2),
            "examples_per_sec": round(timed_steps * batch / elapsed, 1),
            "compile_and_first_chunk_s": round(compile_s, 3),
        }
    return result


# -- whole processes, as a user runs them, and the PyTorch peer ----------------------------------
def run_peer(args: argparse.Namespace, *argv: str) -> dict[str, Any] | None:
    """benchmarks/torch_peers.py run by `--torch_python`, its JSON plus `process_s` (the whole
    process, torch import included); None without a torch interpreter."""
    if not args.torch_python:
        return None
    start = time.perf_counter()
    result = subprocess.run(
        [args.torch_python, str(Path(__file__).with_name("torch_peers.py")), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    process_s = time.perf_counter() - start
    return {
        **json.loads(result.stdout.splitlines()[-1]),
        "python": args.torch_python,
        "process_s": round(process_s, 3),
    }


def _main_flags(
    data_dir: str, normalization: str, steps: int, seeds: int, batch_size: int = 60
) -> list[str]:
    """The BatchNorm-paper run of ../shared/acceptance/speed as `dlresearch.main` flags."""
    config = {
        "data.name": "mnist" if data_dir else "digits",
        "data.dir": data_dir,
        "model.name": "mlp",
        "model.depth": 3,
        "model.width": 100,
        "model.activation": "sigmoid",
        "model.kernel_init": "small_normal",
        "model.init_std": 0.01,
        "model.normalization": normalization,
        "optim.name": "sgd",
        "optim.lr": 0.5,
        "train.batch_size": batch_size,
        "train.steps": steps,
        "train.log_every_steps": min(1000, steps),
        "eval.every_steps": steps,
        "checkpoint.every_steps": steps,
        "sweep.seed": ",".join(map(str, range(seeds))),
    }
    return ["--config=configs/default.py", *(f"--config.{k}={v}" for k, v in config.items())]


def bn_process(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """The BatchNorm-paper workload as two `dlresearch.main` processes (without and with
    BatchNorm, `--seeds` vmapped seeds each), timed whole, with a fresh compilation cache ("cold")
    and again with the cache it filled ("warm"); against PyTorch eager running the same 2 x seeds
    runs one after another."""
    result: dict[str, Any] = {
        **harness.dataset(args.data_dir),
        "steps": steps,
        "seeds": args.seeds,
        "includes_compile": True,
        "method": "wall time of the processes, start to exit, one after another; the split "
        "comes from benchmarks/timed_main.py inside each",
    }
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "DLRESEARCH_COMPILATION_CACHE": os.path.join(scratch, "cache")}
        env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
        for cache in ("cold", "warm"):
            runs: dict[str, Any] = {}
            for variant, normalization in (("baseline", "none"), ("batchnorm", "batchnorm")):
                workdir = os.path.join(scratch, f"{cache}-{variant}")
                split = workdir + ".json"
                flags = _main_flags(args.data_dir, normalization, steps, args.seeds)
                command = [sys.executable, "-m", "benchmarks.timed_main", split, *flags]
                start = time.perf_counter()
                subprocess.run(
                    [*command, f"--workdir={workdir}"],
                    cwd=repo,
                    env=env,
                    check=True,
                    capture_output=True,
                )
                runs[variant] = {"process_s": round(time.perf_counter() - start, 3)}
                runs[variant].update(json.loads(Path(split).read_text()))
                training_s = runs[variant]["first_chunk_s"] + runs[variant].get("steady_s", 0.0)
                runs[variant]["eval_fraction"] = round(runs[variant]["eval_s"] / training_s, 4)
            runs["process_s"] = round(sum(r["process_s"] for r in runs.values()), 3)
            result[cache] = runs
    peer = (
        run_peer(args, "bn_mlp", args.data_dir, str(steps), str(args.seeds))
        if args.data_dir
        else None
    )
    result["peer"] = peer
    if peer:
        for cache in ("cold", "warm"):
            result[f"speedup_vs_peer_{cache}"] = round(
                peer["process_s"] / result[cache]["process_s"], 3
            )
    return result


def _layouts(devices: int) -> list[tuple[str, int, bool]]:
    """(name, member_shards, shard_dataset) of `mesh_layouts`: members x data = D x 1, D/2 x 2,
    1 x D, and 1 x D with the dataset split over 'data'."""
    shards = sorted({devices, max(1, devices // 2), 1}, reverse=True)
    layouts = [(f"{m}x{devices // m}", m, False) for m in shards]
    return [*layouts, (f"1x{devices}_split", 1, True)] if devices > 1 else layouts


def mesh_layouts(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """A `--sweep_k`-seed sweep of the BatchNorm-paper MLP (with BatchNorm) as one whole
    `dlresearch.main` process per `members x data` layout of `--mesh_devices` devices, one after
    another in the same run (on a CPU, `--mesh_devices` virtual devices; else every device)."""
    cpu = jax.default_backend() == "cpu"
    devices = args.mesh_devices if cpu else jax.device_count()
    batch = 64  # the paper's 60 does not split over 8 devices
    result: dict[str, Any] = {
        **harness.dataset(args.data_dir),
        "model": "784-100-100-100-10 sigmoid MLP with BatchNorm (bn_process's batchnorm variant)",
        "devices": devices,
        "seeds": args.sweep_k,
        "steps": steps,
        "batch_size": batch,
        "steps_per_call": args.steps_per_call,
        "includes_compile": False,
        "method": "one dlresearch.main process per layout (benchmarks/timed_main.py), one after "
        "another; steps_per_sec = the steps after the first chunk (which compiles) / their time",
    }
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "DLRESEARCH_COMPILATION_CACHE": os.path.join(scratch, "cache")}
        env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
        if cpu:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        for name, member_shards, split in _layouts(devices):
            flags = _main_flags(args.data_dir, "batchnorm", steps, args.sweep_k, batch)
            flags += [
                "--config.parallel.mode=shard_map",
                f"--config.parallel.member_shards={member_shards}",
                f"--config.parallel.shard_dataset={split}",
                f"--config.train.steps_per_call={args.steps_per_call}",
            ]
            result[name] = _timed_process(repo, env, os.path.join(scratch, name), flags)
            result[name].update(member_shards=member_shards, shard_dataset=split)
            steady_steps = steps - min(args.steps_per_call, steps)
            if result[name].get("steady_s"):
                rate = steady_steps / result[name]["steady_s"]
                result[name]["steps_per_sec"] = round(rate, 2)
                result[name]["member_steps_per_sec"] = round(rate * args.sweep_k, 1)
    return result


def _timed_process(repo: Path, env: dict[str, str], workdir: str, flags: list[str]) -> dict:
    """`dlresearch.main FLAGS` in a process of its own: its `process_s` and `timed_main` split."""
    split = workdir + ".json"
    command = [sys.executable, "-m", "benchmarks.timed_main", split, *flags]
    start = time.perf_counter()
    subprocess.run(
        [*command, f"--workdir={workdir}"], cwd=repo, env=env, check=True, capture_output=True
    )
    return {
        "process_s": round(time.perf_counter() - start, 3),
        **json.loads(Path(split).read_text()),
    }


BENCHMARKS: dict[str, Callable[[argparse.Namespace, int], dict[str, Any]]] = {
    "bn_figure": bn_figure,
    "sweep_speedup": sweep_speedup,
    "resnet20": resnet20,
    "parallel_modes": parallel_modes,
    "bn_process": bn_process,
    "mesh_layouts": mesh_layouts,
}
DEFAULT_STEPS = {
    "bn_figure": 50_000,
    "sweep_speedup": 2_000,
    "resnet20": 500,
    "parallel_modes": 1_000,
    "bn_process": 3_000,
    "mesh_layouts": 1_000,
}
# The rows of the printed table: paths into each benchmark's JSON.
TABLE = {
    "bn_figure": (
        "wall_s",
        "baseline.test_accuracy_mean",
        "batchnorm.test_accuracy_mean",
    ),
    "sweep_speedup": (
        "sequential_s",
        "vmapped_s",
        "speedup",
        "sequential_shared_compile_s",
        "speedup_vs_shared_compile",
    ),
    "resnet20": ("float32.images_per_sec", "bfloat16.images_per_sec", "float32_vs_peer"),
    "parallel_modes": (
        "single.steps_per_sec",
        "shard_map.steps_per_sec",
        "pmap.steps_per_sec",
    ),
    "mesh_layouts": tuple(f"{name}.steps_per_sec" for name in ("8x1", "4x2", "1x8", "1x8_split")),
    "bn_process": (
        "cold.process_s",
        "warm.process_s",
        "peer.process_s",
        "speedup_vs_peer_cold",
        "speedup_vs_peer_warm",
    ),
}


# -- command line ----------------------------------------------------------------------------------
def positive(text: str) -> int:
    """An argparse type: a positive integer."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _names(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {','.join(unknown) or text!r}; allowed: {', '.join(BENCHMARKS)}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", type=_names, default=list(BENCHMARKS), help="NAME[,NAME...]")
    parser.add_argument(
        "--steps",
        type=positive,
        help="training steps of every benchmark (defaults: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--steps_per_call",
        type=positive,
        default=base_config().train.steps_per_call,
        help="steps per compiled call (train.steps_per_call)",
    )
    parser.add_argument(
        "--data_dir",
        help=f"MNIST IDX files (default {harness.DEFAULT_MNIST} if it exists; '' = the embedded digits)",
    )
    parser.add_argument(
        "--seeds", type=positive, default=10, help="bn_figure and bn_process seeds per variant"
    )
    parser.add_argument(
        "--sweep_k", type=positive, default=16, help="sweep_speedup and mesh_layouts seeds"
    )
    parser.add_argument(
        "--mesh_devices",
        type=positive,
        default=8,
        help="mesh_layouts' virtual CPU devices (on an accelerator: every device)",
    )
    parser.add_argument("--resnet_batch_size", type=positive, default=128)
    parser.add_argument(
        "--torch_python",
        default=sys.executable if importlib.util.find_spec("torch") else "",
        help="a Python with torch for the PyTorch peers (default: this one if it has torch; "
        "'' = no peers)",
    )
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_data_dir()
    return args


def default_data_dir() -> str:
    """The shared MNIST beside the repository if it is there, else "" (the embedded digits)."""
    return str(harness.DEFAULT_MNIST) if harness.DEFAULT_MNIST.is_dir() else ""


def environment(argv: list[str]) -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "device": device.device_kind,
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *argv]),
        "cpu_count": os.cpu_count(),
        # Other jobs on a shared machine skew timings; this records how busy it was.
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def _lookup(result: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None where it is absent (e.g. no peer)."""
    for key in path.split("."):
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def table(report: dict[str, Any]) -> str:
    rows = [("benchmark", "metric", "value")]
    for name, paths in TABLE.items():
        if name in report:
            values = [(path, _lookup(report[name], path)) for path in paths]
            rows += [(name, path, f"{value:.4g}") for path, value in values if value is not None]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    report = environment(argv)
    for name in args.only:
        steps = args.steps or DEFAULT_STEPS[name]
        print(f"{name}: {steps} steps ...", file=sys.stderr, flush=True)
        report[name] = BENCHMARKS[name](args, steps)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    try:
        main()
    except UserError as error:  # e.g. a --data_dir without MNIST: one line, exit code 2
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
