"""The command lines' shared conventions, and the console scripts of `pip install .`.

A command line reports a `errors.UserError` (bad config, input, directory) with `fail`: one
`error:` line on stderr, exit code 2, no traceback. The console scripts, beside the `python -m` forms:

    dlresearch-train --config=NAME|FILE --workdir=...        = python -m dlresearch.main ...
    dlresearch-experiment NAME|FILE --preset=... --workdir=...
                                                 = python -m dlresearch.ablation NAME|FILE ...

`--config=default` names a shipped config (`configs/default.py` in a checkout, `dlresearch.configs`
once installed); a path names any config file. An experiment NAME is one the installed packages
declare in the entry-point group "dlresearch.experiments" (in a checkout: a module of its
`experiments/`); FILE is any experiment script. Each runs as `python -m` or `python FILE` would
(runpy), so the forms cannot drift apart.
"""

import ast
import contextlib
import difflib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import runpy
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import ml_collections
from absl import flags, logging

from dlresearch.errors import Interrupted, UserError

EXPERIMENTS_GROUP = "dlresearch.experiments"
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--help=true")
_PACKAGE = Path(__file__).resolve().parent


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2: how every command line reports a bad config or input."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """How every command line ends its work: a `UserError` as one `error:` line with exit code 2
    (`fail`); a stop by a signal (`Interrupted`, the checkpoint committed) with exit code 128 + the
    signal, as a shell reports a killed process, so a script or loop over commands stops too."""
    try:
        yield
    except UserError as error:
        fail(str(error))
    except Interrupted as stop:
        logging.warning("%s", stop)
        sys.exit(stop.exit_code)


def _checkout() -> Path | None:
    """The repository root when this package runs from a checkout (not installed), else None."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() else None


def _checkout_importable() -> None:
    """A checkout's top-level packages (`experiments`) importable from any directory."""
    checkout = _checkout()
    if checkout and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


# -- help ------------------------------------------------------------------------------------------
def _own_flags() -> list[Any]:
    """The flags the running command defines itself (not those of absl, JAX or Orbax), by name."""
    own = []
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith("dlresearch") or module.endswith(".py") or module == "__main__":
            own += [f for f in module_flags if "." not in f.name]
    return sorted({f.name: f for f in own}.values(), key=lambda f: f.name)


def flags_help() -> str:
    """The running command's own flags, one entry each, then where the rest are listed."""
    lines = ["Flags:"]
    for flag in _own_flags():
        # Said when it tells something: not for an empty value, a config, a help that says it.
        plain = flag.default in (None, "", []) or flag.name == "config" or "default" in flag.help
        default = "" if plain else f" (default: {flag.default_as_str})"
        lines.append(f"  --{flag.name}: {flag.help}{default}")
        if flag.name == "config":
            lines.append(
                "  --config.<field>=<value>: override one field, e.g. --config.optim.lr=0.01"
            )
    lines.append("All flags, those of absl, JAX and Orbax too: --helpfull.")
    return "\n".join(lines)


def _print_help() -> NoReturn:
    """The command's summary (its docstring's first line), its own flags, then the rest of its
    docstring."""
    doc = (getattr(sys.modules["__main__"], "__doc__", None) or "").strip()
    summary, _, rest = doc.partition("\n")
    print("\n\n".join(part for part in (summary, flags_help(), rest.strip()) if part))
    sys.exit(0)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but `--help` shows the command's own flags, and a bad flag (unknown field,
    wrong type) exits 2 with one line, no usage text."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        _print_help()
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))
    except KeyError as error:  # raised by config overrides (`check_overrides` names the field)
        fail(f"bad config override: {error.args[0] if error.args else error}")
    except (AttributeError, TypeError, ValueError) as error:
        fail(f"bad config override: {error}")


# -- configs ---------------------------------------------------------------------------------------
def _shipped_configs() -> Path:
    checkout = _checkout()
    return checkout / "configs" if checkout else _PACKAGE / "configs"


def config_path(value: str) -> str:
    """A `--config` value as a file: a shipped config's name ("default") or a path as given
    (with ml_collections' optional ":argument")."""
    path, colon, argument = value.partition(":")
    shipped = _shipped_configs() / f"{path}.py"
    if not os.path.exists(path) and os.sep not in path and shipped.is_file():
        return f"{shipped}{colon}{argument}"
    return value


def load_config_file(value: str) -> ml_collections.ConfigDict:
    """The config of a config file (`config_path`'s form); `SystemExit` (one `error:` line) when the
    file is missing, a directory, does not compile or its `get_config` fails or returns no config."""
    path, _, argument = value.partition(":")
    names = ", ".join(sorted(p.stem for p in _shipped_configs().glob("[!_]*.py")))
    if not os.path.exists(path):
        fail(f"config file {path!r} does not exist (shipped configs by name: {names})")
    if not os.path.isfile(path):
        fail(f"config file {path!r} is not a file; expected a .py file defining get_config()")
    try:
        loader = importlib.machinery.SourceFileLoader("_dlresearch_config", path)
        module = importlib.util.module_from_spec(
            importlib.util.spec_from_loader(loader.name, loader)
        )
        loader.exec_module(module)
        get_config = module.get_config
    except SyntaxError as error:
        fail(f"config file {path!r} line {error.lineno}: {error.msg}")
    except AttributeError:
        fail(f"config file {path!r} defines no get_config()")
    except Exception as error:  # anything a user's file raises, in one line
        fail(f"config file {path!r} failed to load: {type(error).__name__}: {error}")
    try:
        config = get_config(argument) if argument else get_config()
    except Exception as error:
        fail(f"config file {path!r}: get_config() raised {type(error).__name__}: {error}")
    if not isinstance(config, ml_collections.ConfigDict):
        fail(
            f"config file {path!r}: get_config() returned {config!r} "
            f"({type(config).__name__}), not an ml_collections.ConfigDict"
        )
    return config


def _fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, bool]:
    """Every dotted field path of `config` -> whether it is a sub-config."""
    paths = {}
    for key, value in config.items():
        nested = isinstance(value, ml_collections.ConfigDict)
        paths[prefix + key] = nested
        if nested:
            paths.update(_fields(value, f"{prefix}{key}."))
    return paths


def _unknown_field(field: str, known: dict[str, bool]) -> str:
    """Why `field` is not a field: the nearest known fields, or those of its deepest known parent."""
    leaves = [path for path, nested in known.items() if not nested]
    nearest = difflib.get_close_matches(field, leaves, n=3, cutoff=0.6)
    if nearest:
        return f"the config has no field {field!r}; nearest known fields: {', '.join(nearest)}"
    parent = field
    while parent and not known.get(parent):
        parent = parent.rpartition(".")[0]
    children = [p for p in known if p.rpartition(".")[0] == parent]
    return f"the config has no field {field!r}; fields of {parent or 'the config'}: {', '.join(children)}"


def check_overrides(argv: Sequence[str], config: ml_collections.ConfigDict, flag: str) -> None:
    """Exit with one line naming the field and the nearest known ones if an override
    `--FLAG.<field>=...` in `argv` names no field of `config`."""
    known = _fields(config)
    for arg in argv:
        field = arg.partition("=")[0][len(flag) + 3 :]
        if arg.startswith(f"--{flag}.") and field not in known:
            fail(f"--{flag}.{field}: {_unknown_field(field, known)}")


def prepare_config_argv(argv: list[str]) -> list[str]:
    """`argv` with its `--config=NAME` resolved to the shipped file, after checking that the file
    loads and that every `--config.<field>` override names a field (one `error:` line if not)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i] = "--config=" + config_path(arg.partition("=")[2])
            if any(a in HELP_FLAGS for a in argv[1:]):
                return argv
            check_overrides(argv, load_config_file(argv[i].partition("=")[2]), "config")
    return argv


# -- experiments -----------------------------------------------------------------------------------
def shipped_experiments() -> dict[str, str]:
    """Name -> module of every experiment the installed packages declare (entry points of
    "dlresearch.experiments"); from a checkout, the modules of its `experiments/` package."""
    checkout = _checkout()
    if checkout and (checkout / "experiments" / "__init__.py").is_file():
        names = sorted(p.stem for p in (checkout / "experiments").glob("[!_]*.py"))
        return {name: f"experiments.{name}" for name in names}
    found = importlib.metadata.entry_points(group=EXPERIMENTS_GROUP)
    return {ep.name: ep.value for ep in sorted(found, key=lambda ep: ep.name)}


def _summary(module: str) -> str:
    """The first line of a module's docstring, read without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _experiments_help(known: dict[str, str]) -> str:
    _checkout_importable()
    width = max(map(len, known), default=0)
    listed = "\n".join(f"  {name:<{width}}  {_summary(module)}" for name, module in known.items())
    return (
        "Run an ablation experiment: a shipped one by NAME, or any experiment script by its path.\n\n"
        "  dlresearch-experiment NAME|FILE --preset=quick|standard|paper|test --workdir=DIR [flags]\n"
        "  dlresearch-experiment NAME|FILE --help    (that experiment's flags)\n\n"
        f"Experiments:\n{listed}"
    )


def experiment() -> None:
    """`dlresearch-experiment NAME|FILE [flags]`: run a shipped experiment or a script file."""
    known = shipped_experiments()
    target = sys.argv[1] if len(sys.argv) > 1 else ""
    if target in HELP_FLAGS:
        print(_experiments_help(known))
        sys.exit(0)
    # A script whose declaration is refused (a `ConfigError` as it is imported) ends as any bad
    # input does: one line, exit 2, nothing written.
    if target.endswith(".py") or os.sep in target:
        with reported():
            _run_file(target)
    elif target in known:
        _checkout_importable()
        sys.argv = [f"{sys.argv[0]} {target}", *sys.argv[2:]]
        with reported():
            runpy.run_module(known[target], run_name="__main__", alter_sys=True)
    else:
        fail(
            f"dlresearch-experiment NAME|FILE [flags]: NAME={target!r} is not known and not a "
            f".py file; allowed values: {', '.join(known)} (--help lists them)"
        )


def _run_file(path: str) -> None:
    if not os.path.isfile(path):
        fail(f"experiment script {path!r} is not a file")
    sys.argv = [path, *sys.argv[2:]]
    runpy.run_path(path, run_name="__main__")


def launch_command() -> str:
    """How this process's experiment was started, as the start of a shell command that starts it
    again: `python -m MODULE` for a module, `dlresearch-experiment FILE` for a script file."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return f"python -m {spec.name}"
    path = getattr(main, "__file__", None)
    if path and not spec:
        return f"dlresearch-experiment {shlex.quote(path)}"
    return ""


def train() -> None:
    """`dlresearch-train --config=NAME|FILE --workdir=DIR [flags]`."""
    runpy.run_module("dlresearch.main", run_name="__main__", alter_sys=True)
