"""Any experiment script runs from any directory (`dlresearch-experiment FILE`), and its report
names that file in a shell-quoted reproduce command and stamps the script's hash and git state."""

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dlresearch.ablation import provenance, writeup
from dlresearch.ablation.spec import DataDirs

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''"""A tiny ablation: a larger learning rate lowers the final training loss."""

from dlresearch import ablation
from dlresearch.ablation import stats


def judge(runs, outdir):
    low, high = (runs[v].final("train/loss") for v in ("low", "high"))
    effect = stats.paired_difference(low, high, name="loss drop")
    return ablation.Findings(stats.verdict(effect, claim="greater"))


def parts(preset, dirs):
    config = ablation.make_config(
        {"model.width": 16, "train.batch_size": 16, "parallel.mode": "single"},
        ablation.cadence(20, logs=2, evals=1, checkpoints=1),
    )
    return [
        ablation.Part(
            name="lr", title="Learning rate", claim="a larger rate trains faster", source="none",
            rule="reproduced when the loss drop has a 95% interval above 0", config=config,
            variants=(
                ablation.Variant("low", {"optim.lr": 0.0001}),
                ablation.Variant("high", {"optim.lr": 0.01}),
            ),
            judge=judge, kind="speed", quote="a larger rate trains faster",
        )
    ]


if __name__ == "__main__":
    ablation.main(ablation.Experiment("tiny", "Tiny", parts))
'''


def test_a_script_file_runs_from_anywhere(tmp_path: Path) -> None:
    user = tmp_path / "my work"
    user.mkdir()
    script = user / "my_ablation.py"
    script.write_text(SCRIPT)
    workdir = user / "out dir"
    command = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from dlresearch import cli; cli.experiment()"
    result = subprocess.run(
        [sys.executable, "-c", command, str(script), "--preset=test", f"--workdir={workdir}"],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (workdir / "report.md").read_text()
    produced = next(line for line in report.splitlines() if "Produced by `" in line)
    command_line = produced.split("Produced by `")[1].split("`")[0]
    words = shlex.split(command_line)
    assert words[:2] == ["dlresearch-experiment", str(script)]
    assert f"--workdir={workdir}" in words  # quoted: the path has a space
    digest = hashlib.sha256(SCRIPT.encode()).hexdigest()[:12]
    assert f"script my_ablation.py (sha256 {digest}, not in a git checkout)" in report


def test_reproduce_command_quotes_each_value(monkeypatch) -> None:
    monkeypatch.setattr(writeup.cli, "launch_command", lambda: "python -m experiments.x")
    command = writeup.reproduce_command(
        "x",
        preset="test",
        workdir="/tmp/a b",
        data_dirs=DataDirs(dataset="fashion_mnist", dir="/data/m nist"),
        seeds=(5, 6),
        only=(),
        overrides={"sweep.seed": (5, 6), "model.activation": "tanh"},
    )
    words = shlex.split(command)
    assert words == [
        "python",
        "-m",
        "experiments.x",
        "--preset=test",
        "--workdir=/tmp/a b",
        "--dataset=fashion_mnist",
        "--data_dir=/data/m nist",
        "--seeds=5,6",
        "--config.sweep.seed=5 6",
        "--config.model.activation=tanh",
    ]
    assert "--config.sweep.seed='5 6'" in command


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_code_state_sees_an_uncommitted_script(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(
        tmp_path,
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    script = tmp_path / "new.py"
    script.write_text("print(1)\n")
    assert provenance.code_state(script).endswith("+ uncommitted changes")  # untracked
    _git(tmp_path, "add", "new.py")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "y")
    state = provenance.code_state(script)
    assert state.startswith("commit ") and "uncommitted" not in state
    script.write_text("print(2)\n")
    assert provenance.code_state(script).endswith("+ uncommitted changes")
    assert provenance.code_state(Path("/")) == "not in a git checkout"


GOOD = {
    "arms": '(ablation.Variant("narrow", {}, "narrow"), ablation.Variant("wide", {"model.width": 64}))',
    "budget": 'ablation.Budget(steps={"test": 20, "quick": 40, "standard": 60, "paper": 80})',
    "direction": '"lower"',
    "tuning": "None",
}
# Per field, a value `ablation.Comparison` refuses and what its one line says.
BAD = {
    "direction": ('"down"', "direction='down'"),
    "budget": ('ablation.Budget(steps={"test": 20, "quick": 40})', "budget: every preset"),
    "arms": ('(ablation.Variant("only", {}, "alone"),)', "arms: at least two"),
    "tuning": ("(0.1, 0.01, 0.001, 0.0001, 0.00001)", "tuning=(0.1, 0.01, 0.001"),
    "Tuning": (
        'ablation.Tuning(grid=(), score=len, metric="loss")',
        "Tuning.grid=(); allowed: a tuple of at least 5 positive learning rates",
    ),
}
DECLARED = """from dlresearch import ablation

COMPARISON = ablation.Comparison(
    name="mine", title="Mine", claim="wider is better", source="folklore",
    base={{"model.width": 16}}, arms={arms}, budget={budget},
    measure=ablation.test_error(), direction={direction}, tuning={tuning},
)

if __name__ == "__main__":
    ablation.main(COMPARISON.experiment())
"""
ENTRY = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); from dlresearch import cli; cli.experiment()"
)
COMMANDS = {
    "dlresearch-experiment": [sys.executable, "-c", ENTRY],
    "python -m dlresearch.ablation": [sys.executable, "-m", "dlresearch.ablation"],
}


@pytest.mark.parametrize(
    "field, command",
    [
        ("direction", "dlresearch-experiment"),
        ("budget", "python -m dlresearch.ablation"),
        ("arms", "dlresearch-experiment"),
        ("tuning", "dlresearch-experiment"),
        ("Tuning", "python -m dlresearch.ablation"),
    ],
)
def test_a_refused_declaration_is_one_error_line_exit_2_nothing_written(
    tmp_path: Path, field: str, command: str
) -> None:
    value, message = BAD[field]
    script = tmp_path / "my_ablation.py"
    script.write_text(DECLARED.format(**{**GOOD, field.lower(): value}))
    workdir = tmp_path / "out"
    result = subprocess.run(
        [*COMMANDS[command], str(script), "--preset=test", f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(output) == 1 and output[0].startswith("error: ") and message in output[0], output
    assert not workdir.exists()
