"""Sweeps: point sampling, override classification, and a 2x2 vmapped sweep -> 4 W&B runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import TINY
from test_logging import wandb_runs

from experiments.sweep import sample_points, split_sweep_overrides, summary_table
from jaxtrade.cli import main


def test_grid_points_are_the_cartesian_product() -> None:
    sweep = {"method": "grid", "params": [{"key": "agent.hparams.learning_rate",
                                           "values": [1e-4, 3e-4]}]}
    points = sample_points(sweep, {"agent.hparams.ent_coef": [0.0, 0.01, 0.1]})
    assert len(points) == 6
    assert {(p["agent.hparams.learning_rate"], p["agent.hparams.ent_coef"]) for p in points} \
        == {(a, b) for a in (1e-4, 3e-4) for b in (0.0, 0.01, 0.1)}


def test_random_points_log_uniform_within_bounds() -> None:
    sweep = {"method": "random", "num_samples": 4000, "sample_seed": 1, "params": [
        {"key": "agent.hparams.learning_rate", "low": 1e-5, "high": 1e-1, "log": True},
        {"key": "agent.hparams.ent_coef", "low": 0.0, "high": 0.5, "log": False}]}
    points = sample_points(sweep, {})
    lr = np.array([p["agent.hparams.learning_rate"] for p in points])
    ent = np.array([p["agent.hparams.ent_coef"] for p in points])
    assert lr.min() >= 1e-5 and lr.max() <= 1e-1 and ent.min() >= 0 and ent.max() <= 0.5
    # Log-uniform: each decade holds a quarter of the samples; uniform: half below 0.25.
    decades = np.histogram(np.log10(lr), bins=[-5, -4, -3, -2, -1])[0] / len(lr)
    np.testing.assert_allclose(decades, 0.25, atol=0.03)
    assert abs(np.mean(ent < 0.25) - 0.5) < 0.03
    assert sample_points(sweep, {}) == points  # seeded


def test_overrides_split_into_vmapped_and_multirun_axes() -> None:
    plain, vmapped, multirun = split_sweep_overrides([
        "agent.hparams.learning_rate=1e-4,3e-4", "env.num_envs=32,64", "seed=1",
        "network=mlp,cnn"])
    assert plain == ["seed=1"]
    assert vmapped == {"agent.hparams.learning_rate": [1e-4, 3e-4]}
    assert multirun == {"env.num_envs": ["env.num_envs=32", "env.num_envs=64"],
                        "network": ["network=mlp", "network=cnn"]}


def test_unknown_sweep_axis_is_a_user_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "agent.hparams.learning_rat=1e-4,3e-4"]) == 2
    assert "did you mean 'agent.hparams.learning_rate'?" in capsys.readouterr().err


def test_two_by_two_vmapped_sweep_gives_four_runs(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "sweep"
    code = main(["sweep", *TINY, "agent.hparams.learning_rate=1e-4,1e-2",
                 "agent.hparams.ent_coef=0,0.05", "logger=wandb", "train.report=false",
                 f"run_dir={run_dir}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sweep: 4 trials (ranked by validation Sharpe)" in out
    assert "Deflated Sharpe" in out
    summary = json.loads((run_dir / "sweep_summary.json").read_text())
    assert summary["num_trials"] == 4 and summary["significance"]["num_trials"] == 4
    sharpes = [t["validation_sharpe"] for t in summary["trials"]]
    assert sharpes == sorted(sharpes, reverse=True)
    combos = {(t["agent.hparams.learning_rate"], t["agent.hparams.ent_coef"])
              for t in summary["trials"]}
    assert combos == {(a, b) for a in (1e-4, 1e-2) for b in (0.0, 0.05)}
    # One program trained all four: metrics.jsonl has 4 points per logged update, and the
    # points differ (their hyperparameters reached the traced update).
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["update"] == rows[-1]["update"]]
    assert sorted(r["point"] for r in last) == [0, 1, 2, 3]
    assert len({round(r["ppo/loss"], 8) for r in last}) == 4
    runs = list(wandb_runs(run_dir).values())
    assert len(runs) == 4 and len({r["group"] for r in runs}) == 1
    assert {(r["config"]["point"]["agent.hparams.learning_rate"],
             r["config"]["point"]["agent.hparams.ent_coef"]) for r in runs} == combos


def test_summary_table_columns_stay_aligned_with_long_multirun_jobs() -> None:
    job = "env.num_envs=64 agent.hparams.learning_rate=0.0003 agent.hparams.ent_coef=0.01"
    trials = [
        {"trial": 0, "seed": 0, "job": job, "validation_sharpe": 1.234,
         "validation_total_return": 0.12, "validation_max_drawdown": -0.08},
        {"trial": 1, "seed": 1, "job": "env.num_envs=8", "validation_sharpe": -0.5,
         "validation_total_return": -0.02, "validation_max_drawdown": -0.3},
    ]
    table = summary_table({"trials": trials, "num_trials": 2, "run_dir": "runs/x"})
    head, *rows = table.splitlines()[1:]
    assert job in rows[0]
    # Every row is as long as the header and its last column ends where the header's does.
    assert [len(row) for row in rows] == [len(head)] * len(rows)
    assert head.index("job") + 3 == rows[0].index(job) + len(job)
