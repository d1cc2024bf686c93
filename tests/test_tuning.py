"""The tuning rule (issue 20): the grid and seeds per preset, and per arm the grid-edge
extension, trained as runs of their own, resumable, split over tasks, and reported with each
arm's final grid."""

import csv
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_runs import fake_run

from dlresearch.ablation import measures, runner, spec, stats
from dlresearch.errors import ConfigError

SCORE = measures.final_score("train/loss")
QUICK_GRID = spec.log_grid(1e-3, 1e-1)  # 5 rates over 2 decades, 2 per decade


# -- the rule per preset ---------------------------------------------------------------------------
def test_standard_and_paper_densify_the_grid_to_three_rates_per_decade_on_two_seeds() -> None:
    declared = spec.Tuning(QUICK_GRID, SCORE, "training loss")
    for preset in ("standard", "paper"):
        tuning = declared.for_preset(preset)
        assert tuning.grid == (0.001, 0.00215, 0.00464, 0.01, 0.0215, 0.0464, 0.1)
        assert tuning.seeds == spec.THOROUGH_TUNING_SEEDS and len(tuning.seeds) >= 2
        assert tuning.per_decade == 3
    # Any range: at least 3 rates in every decade, the end points kept.
    wide = spec.Tuning(spec.log_grid(0.003, 5.0), SCORE, "training loss").for_preset("standard")
    assert (wide.grid[0], wide.grid[-1]) == (0.003, 5.0)
    assert len(wide.grid) - 1 >= 3 * math.log10(5.0 / 0.003)
    # A grid already that dense is kept whole.
    dense = spec.Tuning(spec.log_grid(0.01, 1.0, 9), SCORE, "training loss")
    assert dense.for_preset("paper").grid == dense.grid


def test_quick_and_test_tune_as_declared() -> None:
    declared = spec.Tuning(QUICK_GRID, SCORE, "training loss")
    assert declared.for_preset("test") is declared
    quick = declared.for_preset("quick")
    assert (quick.grid, quick.seeds, quick.extensions) == (declared.grid, declared.seeds, 0)
    assert declared.extensions == spec.MAX_EXTENSIONS
    assert declared.seeds == spec.TUNING_SEEDS == (1000,)


def test_tuning_seeds_are_no_evaluation_seeds() -> None:
    tuning = set(spec.TUNING_SEEDS) | set(spec.THOROUGH_TUNING_SEEDS)
    for preset in spec.PRESETS:
        assert not tuning & set(spec.DEFAULT_SEEDS[preset]), preset
    assert spec.DEFAULT_SEEDS["standard"] == (100, 101, 102, 103, 104, 105)


def test_an_extension_is_one_decade_beyond_the_edge_at_the_grid_density() -> None:
    quick = spec.Tuning(QUICK_GRID, SCORE, "training loss")
    assert quick.extension(QUICK_GRID, "high") == (0.316, 1.0)
    assert quick.extension(QUICK_GRID, "low") == (0.0001, 0.000316)
    standard = quick.for_preset("standard")
    assert standard.extension(standard.grid, "high") == (0.215, 0.464, 1.0)
    assert standard.extension(standard.grid, "low") == (0.0001, 0.000215, 0.000464)


def test_the_runner_applies_the_preset_rule_to_every_part() -> None:
    for preset in ("standard", "quick"):
        plan = runner._plan(EXPERIMENT, preset, spec.DataDirs(), None, SINGLE, ())
        (part,) = plan.parts
        assert part.tuning == TUNING.for_preset(preset)
        assert plan.seeds == spec.DEFAULT_SEEDS[preset]


def test_evaluation_seeds_that_are_tuning_seeds_are_refused() -> None:
    for preset, seeds in (("quick", (1, 1000)), ("standard", (100, 1001))):
        with pytest.raises(ConfigError, match="include the tuning seed"):
            runner._plan(EXPERIMENT, preset, spec.DataDirs(), seeds, SINGLE, ())
    runner._plan(EXPERIMENT, "quick", spec.DataDirs(), (1, 1001), SINGLE, ())


# -- the extension on fabricated tuning runs -------------------------------------------------------
def _tuned(lr: float, grid: list[float], extensions=(), diverged=()) -> dict:
    """An evaluation run at `lr` whose tuning run trained `grid` (one seed), the rates of
    `extensions` added by extension, those in `diverged` diverged."""
    tuning = fake_run("t", [[{"step": 10, "train/loss": 1.0}] for _ in grid])
    tuning.members = [{"seed": 1000, "lr": v} for v in grid]
    tuning.diverged_at = [5 if v in diverged else None for v in grid]
    tuning.extensions = tuple(extensions)
    run = fake_run("arm", [[{"step": 10, "train/loss": 1.0}]], lr=lr, tuning=tuning)
    return {"arm": run}


def test_notes_an_edge_that_still_wins_after_two_extensions() -> None:
    grid = [*QUICK_GRID, 0.316, 1.0, 3.16, 10.0]
    (note,) = measures.tuning_edge_notes(_tuned(10.0, grid, [(0.316, 1.0), (3.16, 10.0)]))
    assert note.startswith("arm: the selected lr 10 is the highest of the grid")
    assert "still at that edge after 2 extension(s)" in note
    # Inside its final grid: nothing to note.
    assert measures.tuning_edge_notes(_tuned(0.316, grid, [(0.316, 1.0), (3.16, 10.0)])) == []


def test_notes_a_top_edge_whose_extension_diverged() -> None:
    grid = [*QUICK_GRID, 0.316, 1.0]
    runs = _tuned(0.1, grid, [(0.316, 1.0)], diverged=(0.316, 1.0))
    (note,) = measures.tuning_edge_notes(runs)
    assert note == (
        "arm: the selected lr 0.1 was the highest of its grid; the decade above it diverged at "
        "lr 0.316, 1 (on a tuning seed), so 0.1 is the highest stable rate tried."
    )
    # A decade above that trained (no divergence), or a rate selected below the top: no note.
    assert measures.tuning_edge_notes(_tuned(0.1, grid, [(0.316, 1.0)])) == []
    assert measures.tuning_edge_notes(_tuned(0.01, grid, [(0.316, 1.0)], (0.316, 1.0))) == []
    # A downward extension's divergence is no such note.
    low = [0.0001, 0.000316, *QUICK_GRID]
    assert measures.tuning_edge_notes(_tuned(0.001, low, [(0.0001, 0.000316)], (0.0001,))) == []


# -- end to end on the digits data set -------------------------------------------------------------
SINGLE = {"parallel.mode": "single"}
TARGET = 0.3  # the "inside" arm's score is best nearest this rate: inside the first extension


def _forced(run, members: tuple[int, ...]) -> float:
    """A score that forces each arm's selection: "up" prefers high rates, "down" low ones,
    "inside" the rate nearest `TARGET` (lower is better)."""
    lr = run.members[members[0]]["lr"]
    return {"up": -lr, "down": lr}.get(run.variant.name, abs(math.log10(lr / TARGET)))


TUNING = spec.Tuning(QUICK_GRID, _forced, "forced score", holdout=0.2)  # 287 of 1,437


def _judge(runs, outdir: str) -> spec.Findings:
    effect = stats.paired_difference([1.0, 2.0], [0.0, 0.5], name="none")
    verdict = stats.Verdict(stats.Outcome.INCONCLUSIVE, "a test of the tuning only.", (effect,))
    return spec.Findings(verdict, notes=measures.tuning_edge_notes(runs))


PART = spec.Part(
    name="p",
    title="Tuning",
    claim="none",
    source="none",
    rule="none",
    config=spec.make_config(
        {
            "data.name": "digits",
            "model.depth": 1,
            "model.width": 8,
            "train.batch_size": 32,
            **spec.cadence(20, logs=2, evals=1, checkpoints=2),
        }
    ),
    variants=(spec.Variant("up"), spec.Variant("down"), spec.Variant("inside")),
    judge=_judge,
    tuning=TUNING,
    kind="value",
    quote="none",
)
EXPERIMENT = spec.Experiment("tuning", "Tuning", lambda preset, dirs: [PART])


def _run(workdir: Path, **kwargs) -> runner.ExperimentResult | None:
    return runner.run_experiment(
        EXPERIMENT,
        preset="test",
        workdir=str(workdir),
        overrides=SINGLE,
        log=lambda line: None,
        **kwargs,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment trained by two tasks, one after the other (the last writes the report)."""
    workdir = tmp_path_factory.mktemp("tuning") / "w"
    assert _run(workdir, share=runner.Share(0, 2)) is None  # "down" is task 1's
    with pytest.raises(ConfigError, match="1 of 3 variants have not finished"):
        _run(workdir, report_only=True)
    assert _run(workdir, share=runner.Share(1, 2)) is not None
    return workdir


def _tuning_rows(workdir: Path) -> dict[str, list[float]]:
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    out: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "tuning":
            out.setdefault(row["variant"], []).append(float(row["lr"]))
    return {name: sorted(lrs) for name, lrs in out.items()}


def _selected(workdir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    return {r["variant"]: float(r["lr"]) for r in rows if r["kind"] == "run"}


def test_each_arm_extends_its_own_grid_and_selects_over_the_union(finished: Path) -> None:
    tuning = finished / "tuning" / "p"
    # up: at the top edge, extended twice upward, still at the edge.
    assert _tuning_rows(finished)["up"] == sorted([*QUICK_GRID, 0.316, 1.0, 3.16, 10.0])
    assert (tuning / "up" / "extend-2" / runner.FINISHED_FILE).exists()
    # down: at the lower edge, extended twice downward.
    assert _tuning_rows(finished)["down"] == sorted([1e-5, 3.16e-5, 1e-4, 3.16e-4, *QUICK_GRID])
    # inside: extended once upward; the union's best (0.316, from the extension) is inside.
    assert _tuning_rows(finished)["inside"] == sorted([*QUICK_GRID, 0.316, 1.0])
    assert not (tuning / "inside" / "extend-2").exists()
    assert _selected(finished) == {"up": 10.0, "down": 1e-5, "inside": 0.316}


def test_the_report_gives_each_final_grid_and_the_edges_that_still_win(finished: Path) -> None:
    text = (finished / "report.md").read_text()
    assert (
        "Final grid per variant: up: 0.001 to 10 (9 rates), extended by a decade above twice; "
        in text
    )
    assert "down: 1e-05 to 0.1 (9 rates), extended by a decade below twice; " in text
    assert "inside: 0.001 to 1 (7 rates), extended by a decade above once." in text
    assert "up: the selected lr 10 is the highest of the grid" in text
    assert "down: the selected lr 1e-05 is the lowest of the grid" in text
    assert "inside: the selected lr" not in text
    assert "| 10 (grid edge) |" in text and "| 0.316 |" in text
    # A blank cell for each rate of the union an arm did not train: inside lacks 1e-05..0.000316
    # (down's extensions) and 3.16, 10 (up's second).
    row = next(line for line in text.splitlines() if line.startswith("| inside |"))
    assert [cell.strip() for cell in row.split("|")[2:-2]].count("") == 6


def test_report_only_and_a_rerun_read_every_extension_back(finished: Path, tmp_path: Path) -> None:
    expected = (finished / "results.csv").read_bytes()
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    assert _run(workdir, report_only=True) is not None
    assert (workdir / "results.csv").read_bytes() == expected
    assert _run(workdir) is not None
    assert (workdir / "results.csv").read_bytes() == expected


def test_an_interrupted_extension_run_resumes(finished: Path, tmp_path: Path) -> None:
    """As if killed inside the second extension of "down", before its last checkpoint: the runs
    before it are read back, it resumes from its checkpoint, the outputs are the same."""
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    extension = workdir / "tuning" / "p" / "down" / "extend-2"
    (extension / runner.FINISHED_FILE).unlink()
    checkpoints = extension / "checkpoints"
    newest = max((p for p in checkpoints.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(newest)
    (workdir / "results.csv").unlink()
    with pytest.raises(ConfigError, match="1 of 3 variants have not finished \\(p/down\\)"):
        _run(workdir, report_only=True)
    assert _run(workdir) is not None
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_sigint_inside_an_extension_run_then_resume(finished: Path, tmp_path: Path) -> None:
    """SIGINT once the first extension of "up" has started (its workdir holds its config): exit
    130, no report; the rerun gives the uninterrupted experiment's results."""
    tests = Path(__file__).resolve().parent
    script = tmp_path / "tuning_script.py"
    script.write_text(
        f"import sys\nsys.path[:0] = [{str(tests.parent)!r}, {str(tests)!r}]\n"
        "from dlresearch import ablation\nimport test_tuning\n"
        "ablation.main(test_tuning.EXPERIMENT)\n"
    )
    workdir = tmp_path / "w"
    flags = ["--preset=test", f"--workdir={workdir}", "--config.parallel.mode=single"]
    process = subprocess.Popen(
        [sys.executable, str(script), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    extension = workdir / "tuning" / "p" / "up" / "extend-1"
    while not (extension / "config.json").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 128 + signal.SIGINT
    assert not (workdir / "report.md").exists()
    assert not (extension / runner.FINISHED_FILE).exists()
    assert _run(workdir) is not None
    assert (workdir / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()
