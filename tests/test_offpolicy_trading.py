"""DQN and QR-DQN through `jaxtrade train` on a planted AR(1) market: out of sample, after the
env's default costs, the report shows a test Sharpe above 2 and above buy-and-hold + 1.

The bars are written to a CSV file (momentum r_t = 0.3 r_{t-1} + noise, plus a small drift so
buy-and-hold is a real competitor) and read back through `data=csv`, as a user's file is; the
feature set is the last log return, the signal a policy must find.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main


def write_ar1_bars(path: Path, num_bars: int = 3000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    noise = 0.01 * rng.standard_normal(num_bars)
    returns = np.zeros(num_bars)
    for t in range(1, num_bars):
        returns[t] = 0.3 * returns[t - 1] + noise[t]
    returns += 0.0002
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])  # fills at the next open earn r_{t+1}
    start = dt.datetime(2010, 1, 1)
    pl.DataFrame({
        "timestamp": [start + dt.timedelta(days=i) for i in range(num_bars)],
        "open": open_, "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999, "close": close,
        "volume": np.full(num_bars, 1e6),
    }).write_csv(path)
    return path


@pytest.fixture(scope="module")
def ar1_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ar1_bars(tmp_path_factory.mktemp("ar1") / "ar1.csv")


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["dqn", "qrdqn"])
def test_cli_agent_harvests_planted_momentum_out_of_sample(tmp_path, ar1_csv, agent, capsys):
    run_dir = tmp_path / agent
    code = main(["train", f"agent={agent}", "data=csv", f"data.path={ar1_csv}",
                 "features.features=[{name: log_returns, lags: [1]}]", "env.window_bars=4",
                 "train.total_steps=64000", "agent.learning_starts=2000",
                 "network=mlp",  # the tanh 64x64 network this proof was measured with
                 "agent.hparams.gamma=0.5", "env.reward.scale=100", "logger=none",
                 f"run_dir={run_dir}"])
    out = capsys.readouterr().out
    assert code == 0, out
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    test_sharpe = metrics["test"]["sharpe"]
    buy_hold = metrics["baselines"]["buy_and_hold"]["test"]["sharpe"]
    assert metrics["test"]["num_trades"] >= 10  # it trades the signal, not one long hold
    assert test_sharpe > 2.0, (test_sharpe, buy_hold)
    assert test_sharpe > buy_hold + 1.0, (test_sharpe, buy_hold)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 64_000
    if agent == "qrdqn":  # the learned return quantiles reach metrics.jsonl and the report
        assert rows[-1]["dqn/quantile_05"] <= rows[-1]["dqn/quantile_95"]
        training = metrics["training"]
        assert training["update"] == metrics["checkpoint"]["update"]
        assert (training["dqn/quantile_05"] <= training["dqn/quantile_50"]
                <= training["dqn/quantile_95"])
