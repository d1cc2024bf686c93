"""The ablation package on fabricated runs: read-back, numbers over seeds, selection, verdicts,
CSV, tables and plots."""

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from dlresearch import config as config_lib
from dlresearch.ablation import measures, plots, provenance, spec, stats, writeup
from dlresearch.ablation.runs import Run, steps_to_target
from dlresearch.errors import ConfigError


def fake_run(
    name: str = "v",
    *,
    accuracy: dict[tuple[int, float], list[float]] | None = None,
    steps: int = 40,
    diverged: dict[int, int] | None = None,
) -> Run:
    """A finished run whose members (seed, lr) logged `accuracy` every 10 steps."""
    accuracy = accuracy or {(0, 0.1): [0.2, 0.5, 0.8, 0.9], (1, 0.1): [0.3, 0.6, 0.7, 0.95]}
    members = [
        {"seed": s, "lr": lr, "weight_decay": 0.0, "momentum": 0.9, "init_scale": 1.0}
        for s, lr in accuracy
    ]
    config = spec.make_config(
        {"train.steps": steps, "sweep.seed": (0, 1), "sweep.lr": tuple({lr for _, lr in accuracy})}
    )
    history = []
    for values in accuracy.values():
        records = [
            {"step": 10 * (i + 1), "train/accuracy": a, "train/loss": 1 - a, "test/accuracy": a}
            for i, a in enumerate(values)
        ]
        records[0].update({"diag/grad_norm/hidden_0": 0.01, "diag/grad_norm/output": 1.0})
        history.append(records)
    init = [{"diag/grad_norm/hidden_0": 0.1, "diag/grad_norm/output": 1.0} for _ in members]
    diverged = diverged or {}
    return Run(
        part="p",
        variant=spec.Variant(name, {"model.activation": "tanh", "sweep.lr": (0.1,)}),
        config=config,
        workdir="",
        members=members,
        history=history,
        diverged_at=[diverged.get(i) for i in range(len(members))],
        num_train=1000,
        num_eval=500,
        init_diagnostics=init,
        seconds=1.0,
    )


def test_mean_std_ignores_non_finite_values_and_says_so() -> None:
    assert measures.mean_std([1.0, 2.0, 3.0]) == "2.000 ± 0.816"
    assert measures.mean_std([1.0, math.nan, 3.0], ".1f") == "2.0 ± 1.0 (2/3)"
    assert measures.mean_std([math.nan]) == "n/a"
    assert measures.mean_std([0.5], ".1f", scale=100) == "50.0 ± 0.0"


def test_steps_to_target_is_the_first_logged_crossing() -> None:
    assert steps_to_target([10, 20, 30], [0.5, 0.8, 0.7], 0.75) == 20
    assert steps_to_target([10, 20], [0.5, 0.6], 0.75) is None
    assert steps_to_target([10, 20], [2.0, 0.4], 0.5, below=True) == 20


def test_prefix_is_the_run_as_if_its_budget_had_been_shorter() -> None:
    run = fake_run(diverged={0: 20, 1: 40})
    prefix = run.prefix(30)
    assert prefix.config.train.steps == 30 and run.config.train.steps == 40
    assert [[r["step"] for r in records] for records in prefix.history] == [[10, 20, 30]] * 2
    np.testing.assert_allclose(prefix.final("train/accuracy"), [0.8, 0.7])
    assert prefix.steps_to(spec.Target("train/accuracy", 0.9), 1) is None  # reached at step 40
    assert prefix.diverged_at == [20, None]
    assert prefix.members == run.members and prefix.init_diagnostics == run.init_diagnostics
    assert prefix.config.model == run.config.model
    assert run.last_measured("diag/grad_norm") == 10  # logged at the first step only
    assert run.last_measured("diag/act_std") is None
    with pytest.raises(ValueError, match="a prefix of 1 to 40 steps, got 50"):
        run.prefix(50)


def test_steps_summary_and_mean_count_a_miss_as_the_whole_run() -> None:
    assert measures.steps_summary([100, 300], 1000) == "200 ± 100"
    assert measures.steps_summary([100, None], 1000) == "100 ± 0 (1/2 reached)"
    assert measures.steps_summary([None, None], 1000) == "not reached in 1,000"
    assert measures.mean_steps([100, None], 1000) == 550
    assert measures.steps_phrase([100, 300], 1000) == "200"
    assert measures.steps_phrase([100, None], 1000) == ">= 550 (1/2 seeds)"
    assert measures.steps_phrase([None], 1000) == "never (in 1,000)"


def test_markdown_and_csv_tables() -> None:
    assert writeup.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    text = writeup.csv_text([{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert text.splitlines() == ["a,b,c", "1,2,", "3,,4"]


def test_overrides_and_cadence() -> None:
    config = spec.make_config({"model.depth": 7, "sweep.seed": [0, 1]})
    assert config.model.depth == 7 and config.sweep.seed == (0, 1)
    with pytest.raises(ConfigError, match=r"model\.nope"):
        config_lib.apply_overrides(config, {"model.nope": 1})
    assert spec.cadence(50_000, logs=100, evals=25, diagnostics=0) == {
        "train.steps": 50_000,
        "train.steps_per_call": 500,
        "train.log_every_steps": 500,
        "eval.every_steps": 2000,
        "diagnostics.every_steps": 0,
        "checkpoint.every_steps": 12_500,
    }
    # Every interval a multiple of the logging one, which is never below 10 steps.
    assert spec.cadence(2_500, logs=20, evals=10, checkpoints=4)["checkpoint.every_steps"] == 625
    assert spec.cadence(2_500, logs=30, evals=10)["eval.every_steps"] == 249
    assert spec.cadence(30)["eval.every_steps"] == 10


def test_run_series_final_and_members() -> None:
    run = fake_run()
    steps, values = run.series("train/accuracy", 1)
    assert values[-1] == 0.95
    np.testing.assert_array_equal(steps, [10, 20, 30, 40])
    np.testing.assert_allclose(run.final("train/accuracy"), [0.9, 0.95])
    assert run.where(seed=1) == (1,)
    assert run.steps_to(spec.Target("train/accuracy", 0.75), 0) == 30
    assert run.layer_values("diag/grad_norm", 0) == {"hidden_0": 0.1, "output": 1.0}
    assert run.layer_values("diag/grad_norm", 0, step=10)["hidden_0"] == 0.01
    np.testing.assert_allclose(run.epochs(np.array([100])), [100 * 128 / 1000])
    # Layers come back in forward order, whatever the order of the keys (jit sorts them by name).
    run.init_diagnostics[0] = {
        f"diag/grad_norm/{k}": 1.0 for k in ("hidden_10", "output", "hidden_2")
    }
    assert list(run.layer_values("diag/grad_norm", 0)) == ["hidden_2", "hidden_10", "output"]


def test_best_value_picks_the_rate_with_the_best_score() -> None:
    run = fake_run(
        accuracy={
            (0, 0.1): [0.2, 0.5, 0.8, 0.9],
            (1, 0.1): [0.2, 0.5, 0.7, 0.9],
            (0, 1.0): [0.8, 0.9, 0.9, 0.9],
            (1, 1.0): [math.nan] * 4,  # a diverged seed makes its rate the worst by final loss
        }
    )
    assert (
        measures.best_value(run, "lr", measures.target_score(spec.Target("train/accuracy", 0.75)))
        == 1.0
    )
    assert measures.best_value(run, "lr", measures.final_score("train/loss")) == 0.1
    best = measures.best_groups({"v": run}, "lr", measures.final_score("train/loss"))
    assert list(best) == ["v"] and best["v"].members == run.where(lr=0.1) == (0, 1)
    labels = [g.label for g in measures.groups_by({"v": run}, "lr")]
    assert labels == ["v, lr 0.1", "v, lr 1"]


def test_summary_table_has_means_over_seeds_and_divergences() -> None:
    run = fake_run(diverged={1: 25})
    table = writeup.summary_table(
        measures.groups({"v": run}).values(), spec.Target("train/accuracy", 0.75)
    )
    assert "steps to train/accuracy >= 0.75" in table
    assert "0.925 ± 0.025" in table  # final train accuracy over the two seeds
    assert table.rstrip().endswith("| 1/2 |")


def _verdict(outcome: stats.Outcome, name: str = "x") -> stats.Verdict:
    effect = stats.paired_difference([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], name=name)
    return stats.Verdict(outcome, "why", (effect,))


def _part(name: str, kind: str = "value", **kwargs) -> spec.Part:
    return spec.Part(
        name,
        "T",
        "c",
        "s",
        "the rule",
        kwargs.pop("config", spec.make_config()),
        kwargs.pop("variants", ()),
        judge=lambda r, o: None,
        kind=kind,
        quote="a sentence of the paper",
        **kwargs,
    )


def test_experiment_verdict_combines_parts_and_marks_a_partial_run() -> None:
    part_a, part_b = _part("a", "speed"), _part("b", "trainability")
    yes = spec.Findings(_verdict(stats.Outcome.REPRODUCED))
    maybe = spec.Findings(_verdict(stats.Outcome.INCONCLUSIVE))
    no = spec.Findings(_verdict(stats.Outcome.NOT_REPRODUCED))
    both = writeup.experiment_verdict([(part_a, yes), (part_b, maybe)], partial=False)
    assert both.outcome == stats.Outcome.INCONCLUSIVE
    assert both.reason == "a (speed): reproduced; b (trainability): inconclusive"
    assert len(both.effects) == 2
    refuted = writeup.experiment_verdict([(part_a, yes), (part_b, no)], partial=False)
    assert refuted.outcome == stats.Outcome.NOT_REPRODUCED
    alone = writeup.experiment_verdict([(part_a, yes)], partial=True)
    assert alone.outcome == stats.Outcome.REPRODUCED
    assert alone.reason.startswith("Partial: only parts a ran.")


@pytest.mark.parametrize("kind", ["mechanism", "control"])
def test_mechanism_and_control_parts_never_decide_the_experiment(kind: str) -> None:
    """Issue 20: activations' control made the experiment not reproduced through joint_outcome."""
    paper = (_part("speed", "speed"), spec.Findings(_verdict(stats.Outcome.REPRODUCED)))
    other = (_part("other", kind), spec.Findings(_verdict(stats.Outcome.NOT_REPRODUCED)))
    verdict = writeup.experiment_verdict([paper, other], partial=False)
    assert verdict.outcome == stats.Outcome.REPRODUCED
    assert f"other ({kind}, not deciding): not reproduced" in verdict.reason
    alone = writeup.experiment_verdict([other], partial=False)
    assert alone.outcome == stats.Outcome.INCONCLUSIVE


def test_a_part_declares_one_of_the_five_kinds_with_a_quote() -> None:
    assert spec.KINDS == ("speed", "value", "trainability", "mechanism", "control")
    with pytest.raises(ValueError, match="kind='final value' is not known"):
        _part("p", "final value")
    with pytest.raises(ValueError, match="quoted sentence"):
        spec.Part(
            "p", "", "", "", "", spec.make_config(), (), lambda r, o: None, kind="speed", quote=""
        )


def test_part_section_states_the_result_with_its_interval_and_the_checks() -> None:
    run = fake_run()
    part = _part("p", "speed", config=run.config, variants=(run.variant,))
    findings = spec.Findings(
        _verdict(stats.Outcome.REPRODUCED, "gap"),
        checks=[spec.Check("sigmoid is worst", False, "it is second")],
        previous=spec.Previous("the old rule", _verdict(stats.Outcome.NOT_REPRODUCED)),
    )
    text = writeup.part_section(part, {"v": run}, findings, (0, 1))
    result = [line for line in text.splitlines() if line.startswith("**Result")]
    assert len(result) == 1
    assert result[0].startswith("**Result (speed): reproduced** — gap 1.5 (95% CI 0.258 to 2.74")
    assert "- FAILED: sigmoid is worst (it is second)" in text
    assert "**Kind: speed** (this part decides), resting on: “a sentence of the paper”" in text
    assert "Previous rule (the old rule): not reproduced (not reproduced -> reproduced)." in text


def test_results_rows_have_one_row_per_member(tmp_path: Path) -> None:
    run = fake_run(diverged={1: 25})
    part = _part(
        "p", config=run.config, variants=(run.variant,), target=spec.Target("train/accuracy", 0.75)
    )
    findings = spec.Findings(_verdict(stats.Outcome.REPRODUCED, "gap"), judged={"v": (1,)})
    text = writeup.csv_text(writeup.results_rows([part], {"p": {"v": run}}, {"p": findings}))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["kind"] for r in rows] == ["run", "run", "effect"]
    assert [r["seed"] for r in rows[:2]] == ["0", "1"]
    assert rows[0]["model.activation"] == "tanh" and rows[0]["lr"] == "0.1"
    assert rows[0]["steps_to_target"] == "30" and rows[1]["diverged_step"] == "25"
    assert [r["judged"] for r in rows[:2]] == ["no", "yes"]
    assert {"train_loss", "eval_accuracy", "eval_split", "diverged"} <= set(rows[0])
    effect = rows[2]
    assert effect["effect"] == "gap" and effect["outcome"] == "reproduced"
    # mean of (1, 1.5, 2) with a t-interval on 2 degrees of freedom: 1.5 -/+ 4.303 * 0.5 / sqrt(3)
    half = 4.302653 * 0.5 / math.sqrt(3)
    assert float(effect["ci_low"]) == pytest.approx(1.5 - half, rel=1e-4)
    assert float(effect["ci_high"]) == pytest.approx(1.5 + half, rel=1e-4)


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    run = fake_run()
    group = measures.groups({"v": run})["v"]
    out = str(tmp_path)
    names = [
        plots.plot_curves(out, "c.png", [group], "train/loss", title="t", log_y=True, epochs=True),
        plots.plot_layers(out, "l.png", [("init", "diag/grad_norm", [(group, None)])]),
    ]
    run.history[0][0].update({"diag/unit_p15": -1.0, "diag/unit_p50": 0.0, "diag/unit_p85": 1.0})
    names.append(plots.plot_percentiles(out, "p.png", [group], title="t"))
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_index_links_every_report(tmp_path: Path) -> None:
    experiment = spec.Experiment("bn", "BatchNorm", lambda preset, dirs: [])
    result = spec.ExperimentResult(
        experiment, str(tmp_path / "bn"), _verdict(stats.Outcome.INCONCLUSIVE), 3.0
    )
    writeup.write_index([result], str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert "[BatchNorm](bn/report.md) | inconclusive | 3 s | why |" in text


def test_tuning_needs_five_rates_over_two_decades() -> None:
    score = measures.final_score("train/loss")
    assert spec.log_grid(0.001, 0.1) == (0.001, 0.00316, 0.01, 0.0316, 0.1)
    spec.Tuning(spec.log_grid(0.001, 0.1), score, "training loss")
    rule = "allowed: a tuple of at least 5 positive learning rates .* at least 2 decades"
    with pytest.raises(ConfigError, match=r"^Tuning\.grid=\(0\.01, .*\); " + rule):
        spec.Tuning(spec.log_grid(0.01, 0.1), score, "training loss")
    with pytest.raises(ConfigError, match=rule):
        spec.Tuning((0.001, 0.01, 0.1), score, "training loss")


def test_grid_edge_note_flags_only_the_ends_of_the_grid() -> None:
    accuracy = {(0, lr): [0.5, 0.6, 0.7, 0.8] for lr in (0.01, 0.1, 1.0)}
    run = fake_run(accuracy=accuracy)
    for lr, edge in ((0.01, "lowest"), (0.1, ""), (1.0, "highest")):
        note = measures.grid_edge_note(measures.Group("g", run, run.where(lr=lr)))
        assert (edge in note) if edge else note == ""


def test_provenance_names_commit_config_libraries_and_device() -> None:
    config = spec.make_config()
    text = provenance.stamp([config])
    assert text.startswith("**Provenance.** Code ")
    assert f"config hash {provenance.config_hash([config])}" in text
    assert "jax " in text and "cpu" in text and "UTC" in text
    other = spec.make_config({"model.depth": 3})
    assert provenance.config_hash([config]) != provenance.config_hash([other])
