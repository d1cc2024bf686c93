"""The command lines: console scripts = `python -m` forms (checked without installing), help,
config names and files, unknown fields, and what `pip install .` installs."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dlresearch import cli
from dlresearch.ablation.spec import DEFAULT_SEEDS, PRESETS
from dlresearch.config import base_config

ROOT = Path(__file__).resolve().parents[1]


def run_script(function: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from dlresearch import cli; cli.{function}()"
    return subprocess.run(
        [sys.executable, "-c", command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_experiment_names_the_experiments() -> None:
    result = run_script("experiment", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("error: dlresearch-experiment NAME|FILE [flags]: NAME='nope'")
    assert (
        "activations, all, batchnorm, dropout, initialization, optimizers, residual"
        in result.stderr
    )


def test_experiment_help_lists_the_experiments(tmp_path: Path) -> None:
    result = run_script("experiment", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^  (\w+)  ", result.stdout, re.M)
    assert listed == sorted(cli.shipped_experiments()) and "batchnorm" in listed


def test_experiment_help_shows_its_own_flags_first(tmp_path: Path) -> None:
    result = run_script("experiment", "batchnorm", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[:40]
    for flag in ("preset", "workdir", "data_dir", "seeds", "parts", "config"):
        assert any(re.match(rf"\s*--{flag}\b", line) for line in head), flag
    assert "--jax_" not in result.stdout and "--helpfull" in result.stdout
    seeds = next(line for line in head if line.strip().startswith("--seeds"))
    for preset, values in DEFAULT_SEEDS.items():
        assert f"{','.join(map(str, values))} for {preset}" in seeds
    presets = next(line for line in head if line.strip().startswith("--preset"))
    assert f"<{'|'.join(PRESETS)}>" in presets and "standard" in PRESETS
    assert all(f"{preset}: {what}" in presets for preset, what in PRESETS.items())


def test_experiment_runs_the_named_script() -> None:
    # The script's own flag parser answers: the preset is checked before any work.
    result = run_script("experiment", "batchnorm", "--preset=nope", "--workdir=/nonexistent")
    assert result.returncode == 2 and "--preset" in result.stderr and "nope" in result.stderr


def test_train_runs_main() -> None:
    result = run_script("train", "--config=configs/default.py")
    assert result.returncode == 2 and "workdir" in result.stderr


def test_train_help_shows_its_own_flags(tmp_path: Path) -> None:
    result = run_script("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s*--workdir\b", result.stdout, re.M)
    assert re.search(r"^\s*--config\b", result.stdout, re.M)
    assert "--jax_" not in result.stdout


def test_unknown_field_is_one_line_naming_the_nearest(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    result = run_script(
        "train", "--config=default", f"--workdir={workdir}", "--config.optim.lrr=0.1", cwd=tmp_path
    )
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "optim.lrr" in lines[0] and "nearest known fields: optim.lr," in lines[0]
    assert not workdir.exists()


def test_experiment_unknown_field_is_one_line(tmp_path: Path) -> None:
    result = run_script(
        "experiment", "batchnorm", f"--workdir={tmp_path / 'x'}", "--config.model.nmae=x"
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "model.name" in result.stderr
    assert not (tmp_path / "x").exists()


def test_shipped_configs_by_name_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("default", "mnist_mlp"):
        assert Path(cli.config_path(name)) == ROOT / "configs" / f"{name}.py"
        assert cli.load_config_file(cli.config_path(name)).data.name in ("digits", "mnist")
    (tmp_path / "default").mkdir()  # a path that exists is a path, not a name
    assert cli.config_path("default") == "default"
    assert cli.config_path("sub/x.py:arg") == "sub/x.py:arg"


CONFIG_FILES = {
    "missing.py": (None, "does not exist (shipped configs by name: default, mnist_mlp)"),
    "adir": ("dir", "is not a file"),
    "syntax.py": ("def get_config(:\n", "line 1: invalid syntax"),
    "raises.py": (
        "def get_config():\n    raise RuntimeError('boom')\n",
        "raised RuntimeError: boom",
    ),
    "answer.py": ("def get_config():\n    return 42\n", "returned 42 (int)"),
    "none.py": ("x = 1\n", "defines no get_config()"),
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_file_errors_are_one_line(name: str, tmp_path: Path, capsys) -> None:
    content, expected = CONFIG_FILES[name]
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        cli.load_config_file(str(path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and err.startswith(f"error: config file '{path}'") and expected in err
    )


def test_config_file_error_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def get_config():\n    return 42\n")
    result = run_script("train", "--config=bad.py", f"--workdir={tmp_path / 'w'}", cwd=tmp_path)
    assert (
        result.returncode == 2
        and result.stderr.count("\n") == 1
        and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "w").exists()


def test_check_overrides_accepts_every_field() -> None:
    config = base_config()
    cli.check_overrides(
        ["--config.optim.lr=1", "--config.model.depth=3", "--other"], config, "config"
    )


# -- packaging -------------------------------------------------------------------------------------
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The distribution of each top-level import whose name differs from it.
DISTRIBUTIONS = {
    "absl": "absl-py",
    "ml_collections": "ml-collections",
    "orbax": "orbax-checkpoint",
    "tensorflow_datasets": "tensorflow-datasets",
    "sklearn": "scikit-learn",
    "tensorboardX": "tensorboardX",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower()


def test_install_declares_runtime_dependencies_only() -> None:
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not runtime & {"pytest", "hypothesis", "ruff"}
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    checkout = {_name(line) for line in lines if line.strip() and not line.startswith("#")}
    assert runtime <= checkout and {"pytest", "hypothesis", "ruff"} <= checkout
    imported = set()
    for path in [*ROOT.glob("dlresearch/**/*.py"), *ROOT.glob("experiments/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    optional = {"pandas"}  # dlresearch.readback's DataFrame, where pandas is installed
    third_party = imported - set(sys.stdlib_module_names) - {"dlresearch", "experiments"} - optional
    assert third_party, imported
    for module in third_party:
        assert DISTRIBUTIONS.get(module, module).lower() in runtime, module


def test_install_puts_everything_under_dlresearch() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert all(p == "dlresearch" or p.startswith("dlresearch.") for p in setuptools["packages"])
    # Every subpackage of the library is installed (a missing one imports in a checkout only).
    subpackages = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("dlresearch/**/__init__.py")
    }
    assert subpackages <= set(setuptools["packages"])
    assert setuptools["package-dir"] == {
        "dlresearch.configs": "configs",
        "dlresearch.experiments": "experiments",
    }
    declared = PYPROJECT["project"]["entry-points"][cli.EXPERIMENTS_GROUP]
    assert declared == {n: f"dlresearch.{m}" for n, m in cli.shipped_experiments().items()}


def test_library_imports_nothing_from_experiments() -> None:
    for path in ROOT.glob("dlresearch/**/*.py"):
        assert not re.search(r"^\s*(from|import) experiments\b", path.read_text(), re.M), path
