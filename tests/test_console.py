"""The console says what its numbers are: the interval means metrics.jsonl holds, a sweep's best
and worst member by name, and a closing summary."""

import logging
import re
from pathlib import Path

from dlresearch import main, train
from dlresearch.metrics import read_jsonl


def _progress(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "train means over steps" in r.getMessage()]


def test_progress_line_shows_the_interval_means_of_the_file(make_config, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=train.logger.name)
    train.run(make_config(), str(tmp_path))
    lines = _progress(caplog)
    records = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert len(lines) == len(records)
    previous = 0
    for line, record in zip(lines, records, strict=True):
        step = record["step"]
        assert f"steps {previous + 1}-{step}: loss {record['train/loss']:.4f}, " in line
        assert f"accuracy {record['train/accuracy']:.4f}" in line
        previous = step


def test_sweep_line_names_best_and_worst_member(make_config, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=train.logger.name)
    sweep = {"sweep.lr": (0.01, 1e6), "optim.name": "sgd", "train.steps": 20}  # 1e6 diverges
    config = make_config(**sweep)
    result = train.run(config, str(tmp_path))
    assert result.diverged_at[1] is not None
    last = _progress(caplog)[-1]
    assert re.search(r"loss best \S+ \(lr=0\.01\), worst nan \(lr=1e\+06\)", last), last
    summary = main.closing_summary(config, str(tmp_path), result)
    assert summary.startswith("finished at step 20/20; final ")
    assert "test/accuracy best" in summary and "(lr=0.01), worst" in summary
    assert f"workdir: {tmp_path} " in summary and "dlresearch.readback.load" in summary
