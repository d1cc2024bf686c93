"""Metric outputs: JSON lines, TensorBoard events, and a progress line on stdout.

`metrics.jsonl` has one object per logging event: an integer "step" and flat keys ("train/loss",
"test/accuracy", "lr", ...). In a sweep each line also carries "member" and the member's swept values.
"""

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlresearch.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
INIT_DIAGNOSTICS_FILE = "init_diagnostics.json"  # per member, the diagnostics of its initial state

# Keys of metrics.jsonl besides "step" (and "member", "sweep/<axis>" in a sweep; "diag/..." from
# `diagnostics`; the evaluations' from `eval_key`).
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
GRAD_NORM = "grad_norm"
LR = "lr"
EXAMPLES_PER_SEC = "examples_per_sec"
DIVERGED = "diverged"
# "first_reach/<target>" (`reach_key`): logged at the step a `train.reach_targets` target is reached.
FIRST_REACH = "first_reach"
# The training metrics a `train.reach_targets` target can name (those of every step).
REACHABLE = (TRAIN_LOSS, TRAIN_ACCURACY)


def parse_target(spec: str) -> tuple[str, float, bool]:
    """A `train.reach_targets` entry, "METRIC>=LEVEL" or "METRIC<=LEVEL" with METRIC one of
    `REACHABLE`, as (metric, level, below)."""
    for sign, below in ((">=", False), ("<=", True)):
        metric, found, level = spec.partition(sign)
        if found and metric in REACHABLE:
            try:
                return metric, float(level), below
            except ValueError:
                break
    raise ConfigError(
        f"train.reach_targets entry {spec!r} is not METRIC>=LEVEL or METRIC<=LEVEL with METRIC "
        f"one of {', '.join(REACHABLE)}"
    )


def reach_key(spec: str) -> str:
    """The metrics.jsonl key logged at the step at which target `spec` was first reached."""
    return f"{FIRST_REACH}/{spec}"


# The split name of the train-set evaluation: the model in eval mode on a fixed subset of the
# training split (`eval.train_examples`), logged as "train_eval/loss", "train_eval/accuracy".
TRAIN_EVAL = "train_eval"


def eval_key(split: str, name: str) -> str:
    """The key of an evaluation metric ("loss", "accuracy") on `split` ("test", "validation" or
    `TRAIN_EVAL`)."""
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


def tensorboard_run(tags: dict[str, Any] | None) -> str:
    """A sweep member's TensorBoard run (subdirectory of `tensorboard/`), named by its swept
    values, e.g. "seed=1,lr=0.01"; "" for a single run."""
    swept = {k.removeprefix("sweep/"): v for k, v in (tags or {}).items() if k.startswith("sweep/")}
    return ",".join(f"{axis}={value:g}" for axis, value in swept.items())


class MetricWriter:
    """Writes metrics to `workdir`; a no-op on every process but the first (multi-host).

    TensorBoard gets one run per sweep member (`tensorboard/<swept values>/`, `tensorboard_run`),
    so its charts overlay the members under the same tags.
    A run resumed from a checkpoint at `resume_step` recomputes the steps after it, so what was
    logged after that step is dropped from metrics.jsonl and hidden from TensorBoard (its
    `purge_step`): no step appears twice.
    """

    def __init__(
        self, workdir: str, *, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0
    ) -> None:
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._logdir = os.path.join(workdir, "tensorboard") if enabled and tensorboard else None
        self._resume_step = resume_step
        self._tb: dict[str, Any] = {}
        if enabled:
            _truncate_after(self.path, resume_step)

    def _board(self, run: str) -> Any:
        if run not in self._tb:
            from tensorboardX import SummaryWriter

            # Event files are named by the second and host; a resumed run starting within the same
            # second as its predecessor would reuse (and clobber) its file without a suffix.
            self._tb[run] = SummaryWriter(
                os.path.join(self._logdir, run) if run else self._logdir,
                purge_step=self._resume_step + 1,
                filename_suffix=f".step{self._resume_step}.pid{os.getpid()}",
            )
        return self._tb[run]

    def write(self, step: int, values: dict[str, Any], tags: dict[str, Any] | None = None) -> None:
        """One JSON line; `tags` (member index, swept values) go into the line and name the
        member's TensorBoard run."""
        if not self.enabled:
            return
        record = {"step": int(step), **(tags or {}), **{k: _jsonable(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._logdir is not None:
            board = self._board(tensorboard_run(tags))
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    board.add_scalar(key, value, step)

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        for board in self._tb.values():
            board.flush()

    def close(self) -> None:
        for board in self._tb.values():
            board.close()


def across_members(values: Sequence[float], names: Sequence[str], *, higher_is_better: bool) -> str:
    """A metric of a run's members in words: '0.9917' for one member; for a sweep the best and the
    worst member with their swept values ('best 0.9917 (seed=0,lr=0.01), worst 0.1135 (seed=0,
    lr=5)'). A non-finite value (a diverged member; "nan" as metrics.jsonl holds it) is the worst."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return f"{values[0]:.4f}"

    def rank(i: int) -> float:
        value = values[i]
        if not math.isfinite(value):
            return -math.inf
        return value if higher_is_better else -value

    order = sorted(range(len(values)), key=rank)
    best, worst = order[-1], order[0]
    return f"best {values[best]:.4f} ({names[best]}), worst {values[worst]:.4f} ({names[worst]})"


class Progress:
    """The console's progress line at each train log event: the interval means that the same
    step's metrics.jsonl lines hold, throughput and the time left.

    Throughput and ETA are averaged since the first log line after the (re)start, whose interval
    also holds the compilation, so one slow or fast interval does not swing them.
    """

    def __init__(self, total_steps: int, start_step: int) -> None:
        self.total_steps = total_steps
        self._last_step = start_step
        self._last_time = time.perf_counter()
        self._first: tuple[int, float] | None = None  # step and time of the first log line

    def steps_per_sec(self, step: int) -> float:
        """Steps per second: since the first log line, or over the first interval at it."""
        now = time.perf_counter()
        if self._first is None:
            rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
            self._first = (step, now)
        else:
            rate = (step - self._first[0]) / max(now - self._first[1], 1e-9)
        return rate

    def line(
        self,
        step: int,
        loss: Sequence[float],
        accuracy: Sequence[float],
        names: Sequence[str],
        *,
        interval: int,
        steps_per_sec: float,
        examples_per_sec: float,
    ) -> str:
        """`loss` and `accuracy`: per member (named by `names`), the means over the `interval`
        steps up to `step`."""
        eta = (self.total_steps - step) / max(steps_per_sec, 1e-9)
        width = len(str(self.total_steps))
        means = f"train means over steps {step - interval + 1}-{step}"
        if len(loss) == 1:
            numbers = f"{means}: loss {loss[0]:.4f}, accuracy {accuracy[0]:.4f}"
        else:
            numbers = f"{means}, loss {across_members(loss, names, higher_is_better=False)}"
        return (
            f"step {step:>{width}}/{self.total_steps}  {numbers}  "
            f"{examples_per_sec:,.0f} examples/s  ETA {_duration(eta)}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
