"""Comparing optimizers as a benchmark: equal tuning budgets, any optax optimizer, one program.

`python -m dlresearch.compare_optimizers` runs it. It is built on the ablation surface: problems
declare an `ablation.Budget` and `Target`, arms are `ablation.Variant`s with a search space, runs
are trained and read back by the experiment runner (`ablation.runner`), and comparisons are the
effects of an `ablation.Comparison`. What it adds is its own protocol. One job per module:

- `search_space`: the optimizers compared (`Arm`: a name as given, its `Variant` and search space)
  and the quasi-random tuning points drawn from a space.
- `problems`: the test problems (`PROBLEMS`: a base config, a budget per preset, a target).
- `protocol`: the equal tuning protocol: each arm's K points as one vmapped tuning run on the
  tuning seeds with a held-out validation split, then its best point on the evaluation seeds.
- `analysis`: tuning-budget curves, comparisons against a baseline, rank frequencies, performance
  profiles.
- `report`: results.csv, the plots and report.md.
- `choi2019`: Choi et al. (2019)'s non-inferiority claim, its margin and rule, judged on a problem.
"""
