"""Every ablation in turn, then one index: `python -m experiments.all --preset=quick --workdir=W`.

Each experiment writes into WORKDIR/<name>/ exactly what its own script writes; WORKDIR/report.md
links their reports with their verdicts. The flags are those of the single scripts (but --parts).
"""

from dlresearch import ablation

from . import activations, batchnorm, dropout, initialization, optimizers, residual

EXPERIMENTS = (
    activations.EXPERIMENT,
    initialization.EXPERIMENT,
    batchnorm.EXPERIMENT,
    residual.EXPERIMENT,
    optimizers.EXPERIMENT,
    dropout.EXPERIMENT,
)

if __name__ == "__main__":
    ablation.main_all(EXPERIMENTS)
