"""The plain-language lines `jaxtrade train` / `backtest` print under the metrics table."""

from __future__ import annotations

import json

from experiments.train import verdict


def _write(tmp_path, policy, baselines):
    data = {split: {"sharpe": v} for split, v in policy.items()}
    data["baselines"] = {name: {s: {"sharpe": v} for s, v in by.items()}
                         for name, by in baselines.items()}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    return path


def test_ranks_against_baselines_and_flags_overfitting(tmp_path):
    path = _write(tmp_path, {"train": 2.0, "validation": 0.5, "test": 0.9},
                  {"buy_and_hold": {"validation": 0.7, "test": 0.4},
                   "random": {"validation": -1.0, "test": 1.2},
                   "ma_crossover": {"validation": 0.6, "test": None}})  # no test Sharpe: skipped
    lines = verdict(path)
    assert lines[0] == ("validation: policy Sharpe 0.50 ranks 3 of 4 "
                        "(best baseline buy_and_hold 0.70)")
    assert lines[1] == "test: policy Sharpe 0.90 ranks 2 of 3 (best baseline random 1.20)"
    assert lines[2].startswith("warning: train Sharpe 2.00 vs validation 0.50")


def test_no_warning_when_train_and_validation_agree(tmp_path):
    path = _write(tmp_path, {"train": 1.2, "validation": 1.0},
                  {"buy_and_hold": {"validation": 0.2}})
    assert verdict(path) == [
        "validation: policy Sharpe 1.00 ranks 1 of 2 (best baseline buy_and_hold 0.20)"]


def test_metrics_on_fewer_bars_than_a_year_are_marked_with_the_psr_sample_size(tmp_path):
    """A 5-bar validation split was reported as "Sharpe 14.02, rank 1 of 6, PSR 0.995" with
    no word of caution; splits under a year of bars (252 daily) are marked."""
    from experiments.train import metrics_table

    path = _write(tmp_path, {"train": 1.0, "validation": 14.02, "test": 0.3},
                  {"buy_and_hold": {"validation": 0.7, "test": 0.4}})
    data = json.loads(path.read_text())
    data.update(bars_per_year=252.0, min_reliable_bars=252,
                splits={"train": {"bars": 900}, "validation": {"bars": 45},
                        "test": {"bars": 300}},
                significance={"psr_validation": 0.995, "psr_validation_bars": 45})
    path.write_text(json.dumps(data))
    lines = verdict(path)
    assert lines[0] == ("validation: policy Sharpe 14.02 ranks 1 of 2 (best baseline "
                        "buy_and_hold 0.70) [short sample: 45 bars]")
    assert lines[1] == "test: policy Sharpe 0.30 ranks 2 of 2 (best baseline buy_and_hold 0.40)"
    assert lines[2] == ("caution: validation (45 bars) rest on fewer than 252 bars (a year at "
                        "252 bars per year): a Sharpe ratio from 45 bars has a standard error "
                        "of about 2.4; PSR validation 0.99 on n=45")
    header = metrics_table(path).splitlines()[0]
    assert "validation Sharpe*" in header and "test Sharpe*" not in header
