"""One benchmark invocation: check everything, then tune, evaluate and write the report.

`run` is what `python -m dlresearch.compare_optimizers` and `choi2019` call, with an experiment's
guarantees, by the experiment runner's own functions (`ablation.runner`): every config is
validated and every dataset loaded before the workdir is created; the workdir records the
benchmark it holds (`claim_workdir`: another experiment's is refused); finished runs are read
back and unfinished ones resume, so a stopped invocation continues when asked again; SIGINT or
SIGTERM anywhere raises `errors.Interrupted` (`stop_on_signal`; the command exits 128 + signal)
with no report written.
"""

import os
import time
from collections.abc import Callable, Mapping, Sequence

from dlresearch.ablation import provenance, runner
from dlresearch.optimizer_benchmark import protocol, report
from dlresearch.optimizer_benchmark.protocol import Setting, Tuned
from dlresearch.optimizer_benchmark.search_space import Arm

Judge = Callable[[Mapping[str, Sequence[Tuned]]], list[str]]


def run(
    settings: Sequence[Setting],
    arms: Sequence[Arm],
    workdir: str,
    *,
    name: str,
    title: str,
    command: str,
    judge: Judge | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[Tuned]]:
    """Run (or resume) every arm on every problem in `workdir` and write results.csv, the plots
    and report.md; the first arm is the baseline. `name` is the benchmark the workdir holds;
    `judge` turns the results into report lines placed after the title (a claim's rule and
    verdict)."""
    with runner.stop_on_signal():
        configs = protocol.check(settings, arms)
        runner.claim_workdir(workdir, name)
        start = time.perf_counter()
        results = {
            s.name: [protocol.tune_and_evaluate(s, arm, workdir, log) for arm in arms]
            for s in settings
        }
        seconds = time.perf_counter() - start
        k = settings[0].k
        header = [
            f"# {title}",
            "",
            *(judge(results) if judge else []),
            f"Produced by `{command}`; {seconds:.0f} s in the last invocation (finished runs are "
            f"read back, not retrained). Baseline: `{arms[0].label}`. Every optimizer gets the "
            f"same protocol: {k} quasi-random points of its search space (scrambled Halton, "
            "fixed seed), trained as ONE vmapped program on a tuning seed with a held-out "
            "validation split; the point with the best final validation accuracy (diverged: 0) "
            "then trains on the evaluation seeds. Per-run metrics and checkpoints are under "
            "`tuning/<problem>/<optimizer>/` and `runs/<problem>/<optimizer>/`.",
            "",
            provenance.stamp(configs),
        ]
        report.write(workdir, settings, results, header=header)
    log(f"report: {os.path.join(workdir, 'report.md')} ({seconds:.0f} s)")
    return results
