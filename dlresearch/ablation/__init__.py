"""Ablation experiments: run a grid of variants over seeds, resume it, and report on it.

An experiment script (`experiments/<name>.py`) holds only the science, as an `Experiment`: for each
preset, `Part`s made of a base config, named `Variant`s (config overrides), the paper's claim and a
`judge` that turns the finished runs into tables, plots and a `Verdict` by a rule the script states.
The package does the rest, one job per module:

- `comparison`: one claim declared as arms, a budget, a measure and a direction (`Comparison`,
  `Budget`, `Measure`, `test_error`, `final_value`, `generalization_gap`, `steps_to`,
  `matched_budgets`); the rest is derived from it.
- `spec`: what a script declares (`Experiment`, `Part`, `Variant`, `Target`, `Findings`, ...).
- `runs`: a finished variant read back (`Run`: each member's logged series and finals).
- `measures`: numbers over seeds (`Group`s, the best rate of a grid, mean ± std, steps to target,
  whether a comparison at a budget is settled, the stall band of trainability claims).
- `stats`: effects with 95% intervals and the three verdicts (`intervals`: the interval methods).
- `plots`: PNG figures of groups; `writeup`: results.csv, tables, report.md and the index.
- `runner`: trains, resumes or reads back every variant's grid (`run_experiment`).
- `cli`: the command line every script shares (`main`, `main_all`).

This module exports what the scripts use.
"""

from dlresearch.ablation import stats
from dlresearch.ablation.cli import main, main_all
from dlresearch.ablation.comparison import (
    Budget,
    Comparison,
    Measure,
    final_value,
    generalization_gap,
    matched_budgets,
    steps_to,
    test_error,
)
from dlresearch.ablation.measures import (
    HALVINGS,
    SETTLED_HORIZON,
    SETTLED_RULE,
    SETTLED_WINDOW,
    SPEED_RULE,
    STALL_BAND,
    STALL_FACTOR,
    Group,
    at_budgets,
    best_groups,
    describe_target,
    error_targets,
    final_score,
    grid_edge_note,
    groups,
    groups_by,
    judged_members,
    layer_matrix,
    loss_targets,
    mean_std,
    mean_steps,
    previous_training_loss_clause,
    settled,
    speed_verdict,
    stall_verdict,
    stalls_everywhere,
    steps_out_of_band,
    steps_phrase,
    target_score,
    tuning_edge_notes,
    unreached_note,
)
from dlresearch.ablation.plots import plot_curves, plot_layers, plot_percentiles
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import (
    Check,
    DataDirs,
    Experiment,
    Findings,
    Part,
    Plot,
    Previous,
    Target,
    Tuning,
    Variant,
    cadence,
    first_reach,
    log_grid,
    make_config,
)
from dlresearch.ablation.writeup import markdown_table, summary_table

__all__ = [
    "HALVINGS",
    "SETTLED_HORIZON",
    "SETTLED_RULE",
    "SETTLED_WINDOW",
    "SPEED_RULE",
    "STALL_BAND",
    "STALL_FACTOR",
    "Budget",
    "Check",
    "Comparison",
    "DataDirs",
    "Experiment",
    "Findings",
    "Group",
    "Measure",
    "Part",
    "Plot",
    "Previous",
    "Run",
    "Target",
    "Tuning",
    "Variant",
    "at_budgets",
    "best_groups",
    "cadence",
    "describe_target",
    "error_targets",
    "final_score",
    "final_value",
    "first_reach",
    "generalization_gap",
    "grid_edge_note",
    "groups",
    "groups_by",
    "judged_members",
    "layer_matrix",
    "log_grid",
    "loss_targets",
    "main",
    "main_all",
    "make_config",
    "markdown_table",
    "matched_budgets",
    "mean_std",
    "mean_steps",
    "plot_curves",
    "plot_layers",
    "plot_percentiles",
    "previous_training_loss_clause",
    "settled",
    "speed_verdict",
    "stall_verdict",
    "stalls_everywhere",
    "stats",
    "steps_out_of_band",
    "steps_phrase",
    "steps_to",
    "summary_table",
    "target_score",
    "test_error",
    "tuning_edge_notes",
    "unreached_note",
]
