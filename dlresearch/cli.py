"""The console scripts that `pip install .` puts on the PATH, beside the `python -m` forms.

    dlresearch-train --config=... --workdir=...              = python -m dlresearch.main ...
    dlresearch-experiment NAME --preset=... --workdir=...    = python -m experiments.NAME ...

Each runs its module as `python -m` does (runpy), so the two forms cannot drift apart.
"""

import pkgutil
import runpy
import sys

import experiments
from dlresearch.registry import fail


def train() -> None:
    runpy.run_module("dlresearch.main", run_name="__main__", alter_sys=True)


def experiment() -> None:
    names = sorted(module.name for module in pkgutil.iter_modules(experiments.__path__))
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in names:
        fail(
            f"dlresearch-experiment NAME [flags]: NAME={name!r} is not known; "
            f"allowed values: {', '.join(names)}"
        )
    sys.argv = [f"{sys.argv[0]} {name}", *sys.argv[2:]]
    runpy.run_module(f"experiments.{name}", run_name="__main__", alter_sys=True)
