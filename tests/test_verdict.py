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
