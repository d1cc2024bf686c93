"""The equal tuning protocol: every arm gets the same K quasi-random points of its space.

For each problem and arm, in `WORKDIR/tuning/<problem>/<arm>`: ONE run whose sweep is the K points
(`sweep.zipped`) crossed with the tuning seeds, on the training set minus a held-out validation
split, evaluated once at its end. The point with the best mean validation accuracy (a diverged
member scores 0; ties go to the lower training loss) then trains on the evaluation seeds, on the
whole training set, in `WORKDIR/runs/<problem>/<arm>`.

Each run is trained and read back as an experiment's are (`ablation.runner.train_run` and
`read_run`): `train.run` resumes an unfinished run from its checkpoint and reads a finished one
back, `finished.json` marks it finished, and a finished run whose files were damaged since is
refused with what to delete. The tuning differs from an ablation's `Tuning` (a learning-rate grid
shared by every arm): each arm searches its own space, several hyperparameters at once.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from dlresearch import config as config_lib
from dlresearch import train
from dlresearch.ablation import runner
from dlresearch.ablation.runs import Run
from dlresearch.ablation.spec import TUNING_SEEDS
from dlresearch.metrics import TRAIN_LOSS, eval_key
from dlresearch.optimizer_benchmark.problems import Problem
from dlresearch.optimizer_benchmark.search_space import Arm, points

VALIDATION_ACCURACY = eval_key("validation", "accuracy")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One problem as this invocation runs it: its preset's base config and the seeds."""

    name: str
    problem: Problem
    config: ml_collections.ConfigDict
    seeds: tuple[int, ...]  # evaluation seeds
    k: int  # tuning points per arm


def arm_config(setting: Setting, arm: Arm, values: dict[str, float]) -> ml_collections.ConfigDict:
    """The problem's config with `arm`'s overrides (`Arm.variant`), then `values` set."""
    fields = {f"optim.{field}": value for field, value in values.items()}
    return config_lib.apply_overrides(setting.config, {**arm.variant.overrides, **fields})


def tuning_config(setting: Setting, arm: Arm) -> ml_collections.ConfigDict:
    """The arm's K points crossed with the tuning seeds as one sweep, on a held-out split."""
    drawn = points(arm.space, setting.k)
    sweep = {f"sweep.{d.field}": tuple(p[d.field] for p in drawn) for d in arm.space}
    return config_lib.apply_overrides(
        arm_config(setting, arm, {}),
        {
            **sweep,
            "sweep.zipped": tuple(d.field for d in arm.space),
            "sweep.seed": TUNING_SEEDS,
            # The problem's count of held-out examples as the fraction data.holdout takes.
            "data.holdout": setting.problem.holdout
            / runner.check_data(setting.name, setting.config)[0],
            "eval.every_steps": 0,  # evaluated once, at the end: selection reads final values
        },
    )


def evaluation_config(
    setting: Setting, arm: Arm, point: dict[str, float]
) -> ml_collections.ConfigDict:
    """The arm at its selected `point` on the evaluation seeds."""
    return config_lib.apply_overrides(
        arm_config(setting, arm, point), {"sweep.seed": setting.seeds}
    )


def train_run(
    setting: Setting,
    arm: Arm,
    config: ml_collections.ConfigDict,
    run_dir: str,
    name: str,
    log: Callable[[str], None],
) -> Run:
    """Train, resume or read back `config` in `run_dir` (`name` in the log), as a `Run` of the
    arm on the problem."""
    seconds = runner.train_run(config, run_dir, name, log)
    run = runner.read_run(setting.name, arm.variant, config, run_dir, seconds)
    assert run is not None  # train_run marked it finished
    return run


@dataclasses.dataclass(frozen=True)
class Tuned:
    """One arm on one problem: its tuning run, the points' scores, and the evaluation run."""

    arm: Arm
    points: list[dict[str, float]]
    scores: np.ndarray  # per point, mean validation accuracy over the tuning seeds (diverged: 0)
    selected: int
    tuning: Run
    evaluation: Run

    @property
    def point(self) -> dict[str, float]:
        return self.points[self.selected]


def point_scores(run: Run, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the mean final validation accuracy over the tuning seeds (a diverged member
    scores 0) and the mean final training loss (for ties). Members are seed-major."""
    accuracy = np.where([d is None for d in run.diverged_at], run.final(VALIDATION_ACCURACY), 0.0)
    accuracy = np.nan_to_num(accuracy, nan=0.0).reshape(-1, k).mean(axis=0)
    loss = np.nan_to_num(run.final(TRAIN_LOSS), nan=np.inf).reshape(-1, k).mean(axis=0)
    return accuracy, loss


def tune_and_evaluate(
    setting: Setting, arm: Arm, workdir: str, log: Callable[[str], None]
) -> Tuned:
    """The protocol for one arm on one problem (resumed or read back where it already ran)."""
    where = os.path.join(setting.name, arm.label)
    config = tuning_config(setting, arm)
    tuning_dir = os.path.join(workdir, "tuning", where)
    tuning = train_run(setting, arm, config, tuning_dir, f"{where} tuning", log)
    scores, loss = point_scores(tuning, setting.k)
    selected = int(np.lexsort((loss, -scores))[0])
    drawn = points(arm.space, setting.k)
    log(
        f"{where}: selected "
        + ", ".join(f"{f} {v:.3g}" for f, v in drawn[selected].items())
        + f" (validation accuracy {scores[selected]:.4f} of {setting.k} points)"
    )
    config = evaluation_config(setting, arm, drawn[selected])
    evaluation = train_run(setting, arm, config, os.path.join(workdir, "runs", where), where, log)
    return Tuned(arm, drawn, scores, selected, tuning, evaluation)


def check(settings: Sequence[Setting], arms: Sequence[Arm]) -> list[ml_collections.ConfigDict]:
    """Every config the benchmark will train, validated, and every dataset loaded, before anything
    is written (the evaluation configs at the first point: their values only differ in range)."""
    configs = []
    for setting in settings:
        runner.check_data(setting.name, setting.config)
        for arm in arms:
            configs += [
                tuning_config(setting, arm),
                evaluation_config(setting, arm, points(arm.space, 1)[0]),
            ]
    for config in configs:
        train.check(config)  # the fields, then the model each builds
    return configs
