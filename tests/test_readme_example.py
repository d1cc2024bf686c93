"""The README's "Your own ablation": its example runs as a file outside the project, and the README
lists every config field a script can override."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlresearch import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
README = (ROOT / "README.md").read_text()


def example() -> str:
    """The first python block after the heading, as the acceptance check extracts it."""
    head = re.search(r"^#+ [^\n]*Your own ablation[^\n]*$", README, re.M | re.I)
    assert head, "no heading 'Your own ablation'"
    block = re.compile(r"^```python\n(.*?)^```", re.M | re.S).search(README, head.end())
    assert block, "no python block after the heading"
    return block.group(1)


def _fields(section: object, prefix: str = "") -> list[str]:
    out = []
    for key, value in section.items():
        if hasattr(value, "items"):
            out += _fields(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_the_readme_lists_every_config_field() -> None:
    missing = [f for f in _fields(config_lib.base_config()) if f"`{f}`" not in README]
    assert not missing


def test_the_example_stands_on_the_library_alone() -> None:
    text = example()
    assert len(text.splitlines()) <= 60
    assert not re.search(r"^\s*(from|import)\s+experiments\b", text, re.M)


@pytest.mark.slow
def test_the_example_runs_from_outside_the_project(tmp_path: Path) -> None:
    """Copied elsewhere and run as a script at --preset=test: a report with a verdict and a
    **Result line with a 95% interval."""
    script = tmp_path / "my_ablation.py"
    script.write_text(example())
    workdir = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--preset=test",
            f"--workdir={workdir}",
            f"--data_dir={MNIST}",
            "--config.parallel.mode=single",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (workdir / "report.md").read_text()
    assert re.search(r"^Verdict: (reproduced|not reproduced|inconclusive)\.", report, re.M)
    results = [line for line in report.splitlines() if line.startswith("**Result")]
    assert len(results) == 1 and "95% CI" in results[0]
