"""An ensemble trained on two symbols exports and trades: `jaxtrade train agent=ensemble` on a
two-symbol CSV, `jaxtrade export`, then the bundle's runner.py (MultiAssetRunner with the
numpy combination of jaxtrade/live/ensemble.py) prints, per timestamp of the test split, the
report's positions.csv: the target weight per symbol, each member's weight, each member's
target per symbol and the trade probability.

The vote's inputs are per symbol: each member's target is a weight vector, its paper return
that of its portfolio over both symbols after each symbol's costs, the book's volatility
sum_a |w_a| vol_a. Float32 rounding is the only allowed difference (tests/
test_export_ensemble.py's 2e-5; measured here at about 4e-6 for the trade probability and
2e-6 for weights and targets).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main
from jaxtrade.data.synthetic import synthetic_frame

TOLERANCE = 2e-5
MEMBERS = ("ppo", "sac")
RUN = ["train", "agent=ensemble", "agent.members=[ppo,sac]", "data=csv", "logger=none",
       "env.num_envs=4", "env.window_bars=16", "env.episode_bars=64",
       "agent.updates_per_chunk=2", "train.total_steps=512", "agent.ppo.rollout_len=32",
       "agent.ppo.network.hidden_sizes=[16]", "agent.sac.network.hidden_sizes=[16]",
       "agent.sac.learning_starts=64"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("ensemble-two-symbols")
    bars = folder / "two.csv"
    synthetic_frame(seed=1, num_bars=500, num_assets=2, freq="1h").write_csv(bars)
    run_dir, bundle = folder / "run", folder / "bundle"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*RUN, f"data.path={bars}", f"run_dir={run_dir}"]) == 0
        assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    return run_dir, bundle, bars


def test_runner_py_prints_the_reports_weights_members_and_probability_per_symbol(
        exported) -> None:
    run_dir, bundle, bars = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["network"]["family"] == "ensemble"
    assert manifest["network"]["combine"]["rule"] == "vote"
    symbols = manifest["symbols"]
    assert len(symbols) == 2
    positions = pl.read_csv(run_dir / "report" / "positions.csv").filter(
        pl.col("split") == "test")
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                           "--start", positions["timestamp"][0], "--no-monitor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(x) for x in proc.stdout.splitlines() if "target_positions" in x]
    assert {d["rule"] for d in decisions} == {"vote"}
    printed = lambda get: np.array([get(d) for d in decisions])
    for symbol in symbols:
        rows = positions.filter(pl.col("symbol") == symbol)
        assert len(rows) == len(decisions)
        column = lambda name, r=rows: r[name].to_numpy()
        # The report's last row is the policy's target before the risk rules (no next bar).
        np.testing.assert_allclose(printed(lambda d, s=symbol: d["target_positions"][s])[:-1],
                                   column("target_position")[:-1], atol=TOLERANCE)
        for name in MEMBERS:
            np.testing.assert_allclose(printed(lambda d, n=name: d["member_weights"][n]),
                                       column(f"weight_{name}"), atol=TOLERANCE)
            np.testing.assert_allclose(
                printed(lambda d, n=name, s=symbol: d["member_targets"][n][s]),
                column(f"position_{name}"), atol=TOLERANCE)
        np.testing.assert_allclose(printed(lambda d: d["trade_probability"]),
                                   column("trade_probability"), atol=TOLERANCE)
    # What the comparison rests on moves: the vote, the probability, both symbols' targets.
    assert np.ptp(printed(lambda d: d["member_weights"]["ppo"])) > 0.1
    assert np.ptp(printed(lambda d: d["trade_probability"])) > 0.1
    targets = printed(lambda d: [d["target_positions"][s] for s in symbols])
    assert (np.ptp(targets, axis=0) > 1e-3).all()
    assert not np.allclose(targets[:, 0], targets[:, 1])  # a weight per symbol, not one split
