"""Runs of `dlresearch.main` as separate processes on CPU devices, one or several of one
multi-host run (`jax.distributed` on 127.0.0.1): the launcher the multi-process tests share; and
a command interrupted once it has written a given file (`interrupt`)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_command(
    workdir: Path, *flags: str, devices: int, steps: int = 30, every: int = 30
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a short run of configs/default.py on `devices` CPU
    devices, evaluated and checkpointed every `every` steps."""
    command = [
        sys.executable,
        "-m",
        "dlresearch.main",
        f"--config={ROOT}/configs/default.py",
        f"--workdir={workdir}",
        f"--config.train.steps={steps}",
        "--config.train.batch_size=32",
        "--config.train.log_every_steps=10",
        f"--config.eval.every_steps={every}",
        f"--config.checkpoint.every_steps={every}",
        *flags,
    ]
    env = {
        **os.environ,
        "XLA_FLAGS": "",
        "JAX_NUM_CPU_DEVICES": str(devices),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    return command, env


def start_processes(
    workdir: Path,
    flags_of: Callable[[int], Sequence[str]] = lambda i: (),
    *,
    num: int = 2,
    devices: int = 2,
    cwd_of: Callable[[int], Path] = lambda i: ROOT,
    **run: int,
) -> list[subprocess.Popen]:
    """The `num` processes of one run in `workdir` (process i gets `flags_of(i)` and runs in
    `cwd_of(i)`), stdout and stderr together as text; `run` goes to `main_command`."""
    port = free_port()
    procs = []
    for i in range(num):
        command, env = main_command(
            workdir,
            f"--config.parallel.coordinator=127.0.0.1:{port}",
            f"--config.parallel.num_processes={num}",
            f"--config.parallel.process_id={i}",
            *flags_of(i),
            devices=devices,
            **run,
        )
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=cwd_of(i),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def finish(procs: Sequence[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Each process's output, once all ended (every one killed if they outlast `timeout`)."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()


def interrupt(command: Sequence[str], workdir: Path, pattern: str) -> tuple[int, bool]:
    """Start `command` (which writes into `workdir`) and SIGINT it once `pattern` matches a path
    there: its exit code, and whether it wrote a report.md."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not list(workdir.glob(pattern)) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=300), (workdir / "report.md").exists()
