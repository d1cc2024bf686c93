"""`python -m dlresearch.main` with a time split: `python -m benchmarks.timed_main SPLIT_JSON FLAGS...`.

The same process as a user's run, with `train.Trainer`'s and the checkpointer's methods timed
(each waits for its result, as the run loop does when it fetches metrics). Writes to SPLIT_JSON the
seconds spent importing, in `Trainer` construction (data loading, data to the device), state
initialisation, the first chunk (compilation, or loading it from the persistent cache, and its
steps), later chunks, evaluations and checkpoints. The process exit is what the caller's wall time
adds to `main_s`.
"""

import time

START = time.perf_counter()

import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
from absl import app  # noqa: E402

from dlresearch import checkpoint, main, train  # noqa: E402
from dlresearch.cli import parse_flags  # noqa: E402

SECONDS: dict[str, float] = {"import_s": time.perf_counter() - START}
CALLS: dict[str, int] = {}


def _timed(owner: Any, name: str, field: str) -> None:
    """Replace `owner.name` with a version that adds its wall time to SECONDS[field]."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = jax.block_until_ready(original(*args, **kwargs))
        SECONDS[field] = SECONDS.get(field, 0.0) + time.perf_counter() - start
        CALLS[field] = CALLS.get(field, 0) + 1
        return result

    setattr(owner, name, timed)


def _train_field(original: Callable[..., Any]) -> Callable[..., Any]:
    first = [True]

    @functools.wraps(original)
    def chunk(self: train.Trainer, *args: Any, **kwargs: Any) -> Any:
        field = "first_chunk_s" if first[0] else "steady_s"
        first[0] = False
        start = time.perf_counter()
        result = jax.block_until_ready(original(self, *args, **kwargs))
        SECONDS[field] = SECONDS.get(field, 0.0) + time.perf_counter() - start
        return result

    return chunk


def run(split_json: str, argv: list[str]) -> None:
    _timed(train.Trainer, "__init__", "setup_s")
    _timed(train.Trainer, "restore", "init_s")  # a fresh state, or the newest checkpoint
    # An evaluation boundary: the evaluation split and the train-set evaluation (eval.train_examples).
    _timed(train._Log, "_eval", "eval_s")
    _timed(checkpoint.Checkpointer, "save", "checkpoint_s")
    _timed(checkpoint.Checkpointer, "close", "checkpoint_s")
    train.Trainer.train_chunk = _train_field(train.Trainer.train_chunk)
    try:
        app.run(main.main, argv=argv, flags_parser=parse_flags)
    except SystemExit as done:
        SECONDS["main_s"] = time.perf_counter() - START
        SECONDS.update(evaluations=CALLS.get("eval_s", 0))
        with open(split_json, "w") as f:
            json.dump({k: round(v, 4) for k, v in SECONDS.items()}, f)
        raise done


if __name__ == "__main__":
    run(sys.argv[1], ["dlresearch.main", *sys.argv[2:]])
