"""Metric outputs: JSON lines, TensorBoard events, and a progress line on stdout.

`metrics.jsonl` has one object per logging event: an integer "step" and flat keys ("train/loss",
"test/accuracy", "lr", ...). In a sweep each line also carries "member" and the member's swept values.
"""

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from dlresearch.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
INIT_DIAGNOSTICS_FILE = "init_diagnostics.json"  # per member, the diagnostics of its initial state

# Keys of metrics.jsonl besides "step" (and "member", "sweep/<axis>" in a sweep; "diag/..." from
# `diagnostics`; the evaluation split's from `eval_key`).
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
GRAD_NORM = "grad_norm"
LR = "lr"
EXAMPLES_PER_SEC = "examples_per_sec"
DIVERGED = "diverged"


def eval_key(split: str, name: str) -> str:
    """The key of an evaluation metric ("loss", "accuracy") on `split` ("test" or "validation")."""
    return f"{split}/{name}"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete records of a JSON-lines file.

    A torn last line (a crash while appending) is skipped; a bad line before it is damage that
    no crash makes, so it is an error rather than a reason to drop what follows.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ConfigError(
                f"{path} line {number} is not JSON ({line[:60]!r}); the {len(lines) - number} "
                "lines after it are intact: repair or remove that line, then run again"
            ) from None
    return records


def member_records(path: str | os.PathLike, num_members: int) -> list[list[dict[str, Any]]]:
    """Per member, its records of the `metrics.jsonl` at `path`, in step order."""
    records: list[list[dict[str, Any]]] = [[] for _ in range(num_members)]
    for record in read_jsonl(path):
        records[record.get("member", 0)].append(record)
    return records


def _truncate_after(path: str | os.PathLike, step: int) -> None:
    """Drop records logged after `step`."""
    if not os.path.exists(path):
        return
    kept = [r for r in read_jsonl(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; "nan" keeps the line parseable everywhere
    return value


class MetricWriter:
    """Writes metrics to `workdir`; a no-op on every process but the first (multi-host).

    A run resumed from a checkpoint at `resume_step` recomputes the steps after it, so what was
    logged after that step is dropped from metrics.jsonl and hidden from TensorBoard (its
    `purge_step`): no step appears twice.
    """

    def __init__(
        self, workdir: str, *, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0
    ) -> None:
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if enabled:
            _truncate_after(self.path, resume_step)
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            # Event files are named by the second and host; a resumed run starting within the same
            # second as its predecessor would reuse (and clobber) its file without a suffix.
            self._tb = SummaryWriter(
                os.path.join(workdir, "tensorboard"),
                purge_step=resume_step + 1,
                filename_suffix=f".step{resume_step}.pid{os.getpid()}",
            )

    def write(self, step: int, values: dict[str, Any], tags: dict[str, Any] | None = None) -> None:
        """One JSON line; `tags` (member index, swept values) go into the line, not TensorBoard."""
        if not self.enabled:
            return
        record = {"step": int(step), **(tags or {}), **{k: _jsonable(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            prefix = f"member_{tags['member']}/" if tags and "member" in tags else ""
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(prefix + key, value, step)

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A progress line (step, loss, accuracy, throughput, ETA) at each log event."""

    def __init__(self, total_steps: int, start_step: int) -> None:
        self.total_steps = total_steps
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def steps_per_sec(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return rate

    def line(
        self, step: int, loss: float, accuracy: float, steps_per_sec: float, examples_per_sec: float
    ) -> str:
        eta = (self.total_steps - step) / max(steps_per_sec, 1e-9)
        width = len(str(self.total_steps))
        return (
            f"step {step:>{width}}/{self.total_steps}  loss {loss:.4f}  acc {accuracy:.4f}  "
            f"{examples_per_sec:,.0f} ex/s  ETA {_duration(eta)}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
