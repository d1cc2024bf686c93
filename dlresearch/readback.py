"""Runs read back as one tidy table: `load(workdir)`.

    from dlresearch import readback
    table = readback.load("/tmp/sweep")        # a run, a sweep, or an experiment's workdir
    table[table.lr == 0.01].plot(x="step", y="test/accuracy")

One row per member and logged step: the run (for an experiment's workdir, its path such as
`runs/fig1/bn`), the member's index, seed and hyperparameters (lr, weight_decay, momentum,
init_scale), the step, and every metric logged at that step (train means since the previous line,
evaluations, diagnostics; blank where nothing of that kind was logged; the logged learning rate, the
schedule's value at that step, as `scheduled_lr`). A pandas DataFrame where
pandas is installed (`pip install pandas`), else a list of dicts with the same columns.
"""

import json
import os
from pathlib import Path
from typing import Any

import ml_collections

from dlresearch import config as config_lib
from dlresearch.errors import ConfigError
from dlresearch.metrics import LR, METRICS_FILE, member_records

CONFIG_FILE = "config.json"
# The logged learning rate (the schedule's value at the step), beside the member's `lr` column.
SCHEDULED_LR = "scheduled_lr"


def run_dirs(workdir: str | os.PathLike) -> list[Path]:
    """The run directories in `workdir`: itself if it holds a run, else every run below it."""
    root = Path(workdir)
    if (root / CONFIG_FILE).is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob(CONFIG_FILE) if (p.parent / METRICS_FILE).exists())
    if not found:
        raise ConfigError(f"{workdir} holds no run (no {CONFIG_FILE} with a {METRICS_FILE})")
    return found


def run_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of one run: per member and logged step, its settings and that step's metrics."""
    with open(Path(run_dir) / CONFIG_FILE) as f:
        config = ml_collections.ConfigDict(json.load(f))
    members = config_lib.sweep_members(config)
    rows = []
    for index, (member, records) in enumerate(
        zip(members, member_records(Path(run_dir) / METRICS_FILE, len(members)), strict=True)
    ):
        by_step: dict[int, dict[str, Any]] = {}
        for record in records:
            step = record["step"]
            row = by_step.setdefault(step, {"member": index, **member, "step": step})
            for key, value in record.items():
                if key not in ("step", "member") and not key.startswith("sweep/"):
                    row[SCHEDULED_LR if key == LR else key] = value
        rows += [by_step[step] for step in sorted(by_step)]
    return rows


def load(workdir: str | os.PathLike, *, frame: bool | None = None) -> Any:
    """Every run in `workdir` as one table (see the module docstring); `frame`: a pandas DataFrame
    (True), a list of dicts (False), or a DataFrame where pandas is installed (None)."""
    dirs = run_dirs(workdir)
    rows = []
    for run_dir in dirs:
        where = {} if dirs == [Path(workdir)] else {"run": run_dir.relative_to(workdir).as_posix()}
        rows += [{**where, **row} for row in run_rows(run_dir)]
    if frame is False:
        return rows
    try:
        import pandas
    except ImportError:
        if frame:
            raise
        return rows
    return pandas.DataFrame(rows)
