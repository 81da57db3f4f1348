"""A planted two-regime market: calm stretches with momentum, volatile ones with reversion.

One asset, daily bars. A two-state Markov chain s_t (0 calm, 1 volatile) stays in its state
with probability `stay` per bar (mean stretch 1 / (1 - stay) bars). Log returns

    r_t = phi[s_t] * r_{t-1} + sigma[s_t] * e_t,      e_t ~ N(0, 1) i.i.d.

with phi = (+momentum, -reversion) and sigma = (calm_vol, volatile_vol). The edge is known at
the close of t-1 (the sign of r_{t-1}) but its direction flips with the regime, which shows
only in the volatility. A member whose policy is linear in (z-score of the last return,
realized volatility) with actions short / flat / long cannot hold sign(r_{t-1}) in calm
stretches and -sign(r_{t-1}) in volatile ones at once: its long and short regions are convex,
so at best it takes one regime in full and one side of the other (long after up bars in calm
and short after up bars in volatile, say); a combination that follows the regime can take
both in full. Open of t is the close of t-1, so a decision at the close of t-1 filled at the
open of t earns r_t.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl


def planted_frame(seed: int = 0, num_bars: int = 3000, stay: float = 0.99,
                  momentum: float = 0.3, reversion: float = 0.3, calm_vol: float = 0.005,
                  volatile_vol: float = 0.02) -> tuple[pl.DataFrame, np.ndarray]:
    """(OHLCV frame, true regime per bar) of the module docstring's market."""
    rng = np.random.default_rng(seed)
    phi = np.array([momentum, -reversion])
    sigma = np.array([calm_vol, volatile_vol])
    regime = np.empty(num_bars, np.int64)
    state = int(rng.integers(2))
    for t in range(num_bars):
        if rng.random() > stay:
            state = 1 - state
        regime[t] = state
    shocks = rng.standard_normal(num_bars)
    log_returns = np.empty(num_bars)
    previous = 0.0
    for t in range(num_bars):
        previous = phi[regime[t]] * previous + sigma[regime[t]] * shocks[t]
        log_returns[t] = previous
    close = 100.0 * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    bar_sigma = sigma[regime]
    wick = np.abs(rng.standard_normal((2, num_bars))) * 0.5 * bar_sigma
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = 1e6 * np.exp(0.3 * rng.standard_normal(num_bars)) * bar_sigma / calm_vol
    start = dt.datetime(2010, 1, 1, tzinfo=dt.timezone.utc)
    timestamps = [start + dt.timedelta(days=i) for i in range(num_bars)]
    frame = pl.DataFrame({"timestamp": timestamps, "open": open_, "high": high, "low": low,
                          "close": close, "volume": volume}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    return frame, regime


# tests/test_ensemble_planted.py's market and run (scripts/planted_ensemble.py runs it per seed):
# volatility 0.7 % calm, 1.4 % volatile (a ratio of 2, so both regimes carry a comparable share
# of the edge; the HMM still tells them apart), ~100-bar stretches, 4000 bars.
PLANTED_MARKET: dict[str, float | int] = {
    "seed": 0, "num_bars": 4000, "stay": 0.99, "momentum": 0.4, "reversion": 0.4,
    "calm_vol": 0.007, "volatile_vol": 0.014}
ENSEMBLE_RUN = [
    "train", "agent=ensemble", "data=csv", "data.regimes=true", "logger=none",
    "env.num_envs=16", "train.total_steps=262144", "env.window_bars=1",
    "env.episode_bars=128", "env.include_portfolio=false", "agent.updates_per_chunk=4",
    "features.features=[{name:zscore,column:log_return,windows:[20]},"
    "{name:realized_vol,windows:[20]}]",
    "agent.members=[ppo,cvar_ppo]",
    "agent.ppo.network.hidden_sizes=[]", "agent.cvar_ppo.network.hidden_sizes=[]",
    "agent.ppo.rollout_len=32", "agent.cvar_ppo.rollout_len=32",
    "agent.ppo.hparams.learning_rate=0.01", "agent.cvar_ppo.hparams.learning_rate=0.01",
    "agent.ppo.hparams.gamma=0.5", "agent.cvar_ppo.hparams.gamma=0.5",
    "agent.cvar_ppo.hparams.lambda_init=0.5", "agent.cvar_ppo.hparams.cvar_threshold=0.02",
    "agent.cvar_ppo.hparams.lambda_lr=10"]
