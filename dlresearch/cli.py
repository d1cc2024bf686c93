"""The command lines' shared conventions, and the console scripts of `pip install .`.

A command line reports a `errors.UserError` (bad config, input, directory) with `fail`: one
`error:` line on stderr, exit code 2, no traceback. The console scripts, beside the `python -m` forms:

    dlresearch-train --config=... --workdir=...              = python -m dlresearch.main ...
    dlresearch-experiment NAME --preset=... --workdir=...    = python -m experiments.NAME ...

Each runs its module as `python -m` does (runpy), so the two forms cannot drift apart.
"""

import pkgutil
import runpy
import sys
from typing import NoReturn

from absl import flags


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2: how every command line reports a bad config or input."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag (unknown field, wrong type) exits 2 without usage text."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))
    except (KeyError, AttributeError, TypeError, ValueError) as error:  # raised by config overrides
        fail(f"bad config override: {error}")


def train() -> None:
    runpy.run_module("dlresearch.main", run_name="__main__", alter_sys=True)


def experiment() -> None:
    import experiments  # the scripts' package, imported only by the command that runs one

    names = sorted(module.name for module in pkgutil.iter_modules(experiments.__path__))
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in names:
        fail(
            f"dlresearch-experiment NAME [flags]: NAME={name!r} is not known; "
            f"allowed values: {', '.join(names)}"
        )
    sys.argv = [f"{sys.argv[0]} {name}", *sys.argv[2:]]
    runpy.run_module(f"experiments.{name}", run_name="__main__", alter_sys=True)
