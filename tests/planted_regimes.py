"""A planted two-regime market in which each regime's edge rides on its own causal signal.

One asset, daily bars. A two-state Markov chain s_t (0 calm, 1 volatile) stays in its state
with probability `stay` per bar (mean stretch 1 / (1 - stay) bars). Every bar trades a volume
V_t = 1e6 exp(volume_spread u_t), u_t ~ N(0, 1) i.i.d. (the same law in both regimes). Log
returns

    calm      r_t = momentum r_{t-1} + calm_vol e_t
    volatile  r_t = volatile_vol (volume_edge u_{t-1} + sqrt(1 - volume_edge^2) e_t)

with e_t ~ N(0, 1) i.i.d. So in calm stretches the next return continues the last one (the
signal: the z-score of the log return, `zscore_log_return_20`), and in volatile stretches it
follows the last bar's volume surprise (the signal: the z-score of log volume,
`zscore_log_volume_20`), which carries nothing in calm stretches, as the last return carries
nothing in volatile ones. Both signals are known at the close of t-1, before the return r_t
they predict: open of t is the close of t-1, so a decision at the close of t-1 filled at the
open of t earns r_t. A member that observes one signal only (`network.observe`) can take its
own regime and trades noise in the other; a combination that follows the regime (the router on
the HMM's regime probabilities: the regimes differ in volatility) or the members' recent
paper returns (the vote: stretches last ~100 bars) can take both.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl


def planted_frame(seed: int = 0, num_bars: int = 3000, stay: float = 0.99,
                  momentum: float = 0.4, volume_edge: float = 0.4, calm_vol: float = 0.007,
                  volatile_vol: float = 0.014,
                  volume_spread: float = 0.3) -> tuple[pl.DataFrame, np.ndarray]:
    """(OHLCV frame, true regime per bar) of the module docstring's market."""
    rng = np.random.default_rng(seed)
    regime = np.empty(num_bars, np.int64)
    state = int(rng.integers(2))
    for t in range(num_bars):
        if rng.random() > stay:
            state = 1 - state
        regime[t] = state
    shocks = rng.standard_normal(num_bars)
    surprise = rng.standard_normal(num_bars)
    log_returns = np.empty(num_bars)
    previous = 0.0
    for t in range(num_bars):
        if regime[t] == 0:
            previous = momentum * previous + calm_vol * shocks[t]
        else:
            last_surprise = surprise[t - 1] if t > 0 else 0.0
            previous = volatile_vol * (volume_edge * last_surprise
                                       + np.sqrt(1.0 - volume_edge**2) * shocks[t])
        log_returns[t] = previous
    close = 100.0 * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    bar_sigma = np.where(regime == 0, calm_vol, volatile_vol)
    wick = np.abs(rng.standard_normal((2, num_bars))) * 0.5 * bar_sigma
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = 1e6 * np.exp(volume_spread * surprise)
    start = dt.datetime(2010, 1, 1, tzinfo=dt.timezone.utc)
    timestamps = [start + dt.timedelta(days=i) for i in range(num_bars)]
    frame = pl.DataFrame({"timestamp": timestamps, "open": open_, "high": high, "low": low,
                          "close": close, "volume": volume}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    return frame, regime


# tests/test_ensemble_planted.py's market and run (scripts/planted_ensemble.py runs it per seed):
# volatility 0.7 % calm, 1.4 % volatile (the HMM tells them apart), ~100-bar stretches, 4000
# bars. The next return's correlation with its regime's signal is 0.6 in calm stretches and 0.3
# in volatile ones: trading the sign of the signal then earns about as much per bar in each
# regime (0.6 x 0.88 % calm, 0.3 x 1.4 % volatile, times E|z| = 0.8), so neither regime's
# edge is a rounding error beside the other's.
PLANTED_MARKET: dict[str, float | int] = {
    "seed": 0, "num_bars": 4000, "stay": 0.99, "momentum": 0.6, "volume_edge": 0.3,
    "calm_vol": 0.007, "volatile_vol": 0.014, "volume_spread": 0.3}
# PPO observes the return signal only, CVaR-PPO the volume signal only: linear policies
# (no hidden layer) over one feature, actions short / flat / long.
ENSEMBLE_RUN = [
    "train", "agent=ensemble", "data=csv", "data.regimes=true", "logger=none",
    "env.num_envs=16", "train.total_steps=131072", "env.window_bars=1",
    "env.episode_bars=128", "env.include_portfolio=false", "agent.updates_per_chunk=4",
    "features.features=[{name:zscore,column:log_return,windows:[20]},"
    "{name:zscore,column:log_volume,windows:[20]}]",
    "agent.members=[ppo,cvar_ppo]",
    "agent.ppo.network.observe=[zscore_log_return_20]",
    "agent.cvar_ppo.network.observe=[zscore_log_volume_20]",
    "agent.ppo.network.hidden_sizes=[]", "agent.cvar_ppo.network.hidden_sizes=[]",
    "agent.ppo.rollout_len=32", "agent.cvar_ppo.rollout_len=32",
    "agent.ppo.hparams.learning_rate=0.01", "agent.cvar_ppo.hparams.learning_rate=0.01",
    "agent.ppo.hparams.gamma=0.5", "agent.cvar_ppo.hparams.gamma=0.5",
    "agent.cvar_ppo.hparams.lambda_init=0.5", "agent.cvar_ppo.hparams.cvar_threshold=0.02",
    "agent.cvar_ppo.hparams.lambda_lr=10"]
