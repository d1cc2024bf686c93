"""Train one config: `python -m dlresearch.main --config=default --workdir=/tmp/run`.

`--config` takes a shipped config by name (default, mnist_mlp) or the path of a config file. Any field can be overridden, e.g. `--config.model.activation=sigmoid --config.optim.name=adam`.
Bad configs, bad data and a workdir in use by another run exit with code 2 and one line saying
what is wrong; nothing is written.
"""

import logging as pylogging
import math
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from dlresearch import config as config_lib
from dlresearch import metrics, train
from dlresearch.cli import fail, parse_flags, prepare_config_argv, reported

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A shipped config by name (default, mnist_mlp) or a config file's path."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics, checkpoints.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete what the workdir holds and start afresh."
)
flags.mark_flags_as_required(["config", "workdir"])


def _not_absl_info(record: pylogging.LogRecord) -> bool:
    """Orbax logs every save and restore at INFO through absl's logger; dlresearch logs through its
    own named loggers. Keep absl's warnings, drop the rest."""
    return record.levelno >= pylogging.WARNING or record.name != "absl"


def closing_summary(
    config: ml_collections.ConfigDict, workdir: str, result: train.RunResult
) -> str:
    """What a finished run prints last: its final metrics (a sweep's best and worst member) and
    where its files are."""
    axes = config_lib.swept_axes(config)
    names = [metrics.tensorboard_run({f"sweep/{a}": m[a] for a in axes}) for m in result.members]
    keys = sorted(
        {k for final in result.final for k in final if k.endswith(("/loss", "/accuracy"))}
    )
    finals = [
        f"{key} "
        + metrics.across_members(
            [final.get(key, math.nan) for final in result.final],
            names,
            higher_is_better=key.endswith("/accuracy"),
        )
        for key in keys
    ]
    return (
        f"finished at step {result.step}/{config.train.steps}; final {'; '.join(finals)}\n"
        f"workdir: {workdir} (metrics.jsonl, config.json, checkpoints/, tensorboard/; "
        "a table of every logged value: dlresearch.readback.load(workdir))"
    )


def run_or_fail(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> None:
    """`train.run`, then its `closing_summary`; a `UserError` reported as one `error:` line with
    exit code 2, a stop by a signal (checkpoint committed) with exit code 128 + the signal, as a
    shell reports a killed process."""
    with reported():
        result = train.run(config, workdir, overwrite=overwrite)
        print(closing_summary(config, workdir, result))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_not_absl_info)
    # JAX logs each absent backend it probes (libtpu on every non-TPU machine) at INFO; a backend
    # that should be there and fails is a WARNING, which stays.
    pylogging.getLogger("jax._src.xla_bridge").setLevel(pylogging.WARNING)
    run_or_fail(_CONFIG.value, _WORKDIR.value, _OVERWRITE.value)


if __name__ == "__main__":
    app.run(main, argv=prepare_config_argv(sys.argv), flags_parser=parse_flags)
