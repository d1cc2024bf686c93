"""Comparing optimizers as a benchmark: equal tuning budgets, any optax optimizer, one program.

`python -m dlresearch.compare_optimizers` runs it. One job per module:

- `search_space`: the optimizers compared (`Arm`: a name as given and its search space) and the
  quasi-random tuning points drawn from a space.
- `problems`: the test problems (`PROBLEMS`: dataset, model, batch size, budget per preset, target).
- `protocol`: the equal tuning protocol: each arm's K points as one vmapped tuning run on the
  tuning seeds with a held-out validation split, then its best point on the evaluation seeds.
- `analysis`: tuning-budget curves, comparisons against a baseline, rank frequencies, performance
  profiles.
- `report`: results.csv, the plots and report.md.
- `choi2019`: Choi et al. (2019)'s non-inferiority claim, its margin and rule, judged on a problem.
"""
