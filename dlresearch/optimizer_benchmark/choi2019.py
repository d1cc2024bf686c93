"""Choi et al. (2019), "On empirical comparisons of optimizers for deep learning", judged:

    python -m dlresearch.optimizer_benchmark.choi2019 --preset=quick --workdir=/tmp/choi \
        --data_dir=../shared/data/mnist

Claim: when the search space includes the hyperparameters that make one optimizer a special case
of another, the more general one is never worse once both are tuned (Adam with its eps and b1
searched contains momentum SGD: as eps grows, Adam's step tends to lr (1 - b1) / eps times SGD's
heavy-ball velocity with momentum b1), and the ranking can flip with the search space.

"Never worse" is a non-inferiority claim. Rule, fixed before the run (`MARGIN`, `judge`): the
final test accuracy of Adam with lr, b1 and eps searched minus that of momentum SGD with lr and
momentum searched, paired over the evaluation seeds, 95% t-interval [L, U]; non-inferior
(reproduced) if L > -0.5 pp, not reproduced if U < -0.5 pp, inconclusive otherwise. Both arms
get the same number of tuning points (`--tuning_budget`, 16 by default). Adam with only its
learning rate searched runs beside them: its comparison with momentum SGD is reported (does the
ranking flip with the search space?) and is not part of the verdict.
"""

import sys

from absl import app, flags, logging

from dlresearch.ablation import stats
from dlresearch.ablation.spec import DEFAULT_SEEDS, PRESETS
from dlresearch.cli import fail, parse_flags, reported
from dlresearch.optimizer_benchmark import benchmark, problems, protocol
from dlresearch.optimizer_benchmark.problems import TEST_ACCURACY
from dlresearch.optimizer_benchmark.search_space import DEFAULT_LR, Arm, Dimension

MARGIN = 0.005  # 0.5 percentage points of test accuracy
KIND = "value"  # a value at the problem's budget (README, "Claim kinds")
GENERAL = Arm(
    "adam_lr_b1_eps",
    "adam",
    (
        Dimension("lr", 1e-4, 10.0, "log"),
        Dimension("b1", 0.5, 0.999, "log1m"),
        Dimension("eps", 1e-8, 100.0, "log"),
    ),
)
SPECIAL = Arm(
    "momentum",
    "momentum",
    (Dimension("lr", 1e-3, 10.0, "log"), Dimension("momentum", 0.5, 0.999, "log1m")),
)
LR_ONLY = Arm("adam_lr_only", "adam", (DEFAULT_LR,))
ARMS = (SPECIAL, GENERAL, LR_ONLY)  # the special case is the baseline
RULE = (
    f"Rule (committed before the run): final test accuracy of `{GENERAL.label}` minus "
    f"`{SPECIAL.label}`, paired over the evaluation seeds, 95% t-interval [L, U]: non-inferior "
    f"(reproduced) if L > -{100 * MARGIN:g} pp; not reproduced if U < -{100 * MARGIN:g} pp; "
    "inconclusive otherwise."
)


def non_inferiority(effect: stats.Effect, margin: float) -> stats.Verdict:
    """The verdict of "a is not worse than b by more than `margin`" on the effect a - b.

    Not `stats.verdict`: that judges a claimed effect (its margin on the claimed side of no
    effect); non-inferiority claims the absence of one, its margin on the other side."""
    if effect.low > -margin:
        outcome, why = stats.Outcome.REPRODUCED, f"the lower limit is above -{margin:g}"
    elif effect.high < -margin:
        outcome, why = stats.Outcome.NOT_REPRODUCED, f"the upper limit is below -{margin:g}"
    else:
        outcome, why = stats.Outcome.INCONCLUSIVE, f"the interval contains -{margin:g}"
    return stats.Verdict(outcome, f"Non-inferiority margin {margin:g}: {why}.", (effect,))


def judge(results: dict[str, list[protocol.Tuned]]) -> list[str]:
    """The report's claim, rule, verdict and the search-space comparison, per problem."""
    lines = [RULE, ""]
    for name, tuned in results.items():
        final = {t.arm.label: t.evaluation.final(TEST_ACCURACY) for t in tuned}
        effect = stats.paired_difference(
            final[GENERAL.label],
            final[SPECIAL.label],
            name=f"{name}: {GENERAL.label} minus {SPECIAL.label} final test accuracy",
            unit="pp",
        )
        flip = stats.paired_difference(
            final[LR_ONLY.label],
            final[SPECIAL.label],
            name=f"{name}: {LR_ONLY.label} minus {SPECIAL.label} final test accuracy",
            unit="pp",
        )
        verdict = non_inferiority(effect, MARGIN)
        lines += [
            f"Verdict: {verdict.outcome}. {verdict.reason}",
            "",
            verdict.result_line(KIND),
            "",
            f"Search space (not judged): {flip.describe()}.",
            "",
        ]
    return lines


def _define_flags() -> dict[str, flags.FlagHolder]:
    """The command line's flags, defined when the module runs (not on import)."""
    holders = {
        "preset": flags.DEFINE_enum("preset", "quick", list(PRESETS), "Budgets."),
        "workdir": flags.DEFINE_string("workdir", None, "Where the runs and report.md go."),
        "tuning_budget": flags.DEFINE_integer("tuning_budget", 16, "K: points per optimizer."),
        "problem": flags.DEFINE_string("problem", "mnist_mlp", "The test problem."),
        "data_dir": flags.DEFINE_string("data_dir", "", "The problem's data files."),
    }
    flags.mark_flag_as_required("workdir")
    return holders


def main(argv: list[str], fv: dict[str, flags.FlagHolder]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    with reported():
        problem = problems.PROBLEMS.get(fv["problem"].value)
        preset = fv["preset"].value
        setting = protocol.Setting(
            fv["problem"].value,
            problem,
            problem.config(preset, fv["data_dir"].value),
            DEFAULT_SEEDS[preset],
            fv["tuning_budget"].value,
        )
        benchmark.run(
            [setting],
            ARMS,
            fv["workdir"].value,
            name="choi2019",
            title="Choi et al. (2019): the more general optimizer is never worse, once tuned",
            command=" ".join(["python -m dlresearch.optimizer_benchmark.choi2019", *sys.argv[1:]]),
            judge=judge,
        )


if __name__ == "__main__":
    holders = _define_flags()
    app.run(lambda argv: main(argv, holders), flags_parser=parse_flags)
