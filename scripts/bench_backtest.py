"""Benchmark: performance metrics of many strategies, vmapped JAX vs empyrical in a loop.

Both sides score the same N strategies x T bars of daily returns (real S&P 500 returns from
the embedded data times random target positions, so the series look like strategies):
  jaxtrade  jaxtrade.metrics.batch_metrics: all 19 report metrics (the 10 below plus trade
            statistics, turnover, exposure, profit factor, win rate, skew, kurtosis,
            drawdown duration) for every strategy in one jitted vmap; timed after a
            warm-up call (compile time printed separately).
  empyrical the 10 metrics empyrical implements (Sharpe, Sortino, max drawdown, total and
            annual return, annual volatility, Calmar, VaR, CVaR, tail ratio), one strategy
            at a time in a Python loop, as a research script would.
Prints both timings, the speed-up ratio, and the largest absolute difference between the
two on those 10 metrics (jaxtrade computes in float32, empyrical in float64).

    python scripts/bench_backtest.py            # 10,000 strategies x 2,520 bars
    python scripts/bench_backtest.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import empyrical as ep  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from jaxtrade import metrics as M  # noqa: E402

EMBEDDED = Path(__file__).resolve().parents[1] / "jaxtrade" / "data" / "embedded"
COMMON = {
    "sharpe": lambda r: ep.sharpe_ratio(r, annualization=252),
    "sortino": lambda r: ep.sortino_ratio(r, annualization=252),
    "max_drawdown": ep.max_drawdown,
    "total_return": ep.cum_returns_final,
    "annual_return": lambda r: ep.annual_return(r, annualization=252),
    "annual_volatility": lambda r: ep.annual_volatility(r, annualization=252),
    "calmar": lambda r: ep.calmar_ratio(r, annualization=252),
    "var_5": lambda r: ep.value_at_risk(r, 0.05),
    "cvar_5": lambda r: ep.conditional_value_at_risk(r, 0.05),
    "tail_ratio": ep.tail_ratio,
}


def make_strategies(num: int, bars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    close = pl.read_parquet(EMBEDDED / "sp500_daily.parquet")["close"].to_numpy()
    market = close[1:] / close[:-1] - 1.0
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(market) - bars, size=num)
    windows = market[starts[:, None] + np.arange(bars)]
    # Positions held for random stretches (about 20 bars) at -1, 0, 0.5 or 1.
    levels = np.array([-1.0, 0.0, 0.5, 1.0])
    change = rng.random((num, bars)) < 0.05
    change[:, 0] = True
    draws = levels[rng.integers(0, 4, size=(num, bars))]
    last = np.maximum.accumulate(np.where(change, np.arange(bars), 0), axis=1)
    positions = np.take_along_axis(draws, last, axis=1)
    cost = np.abs(np.diff(positions, axis=1, prepend=0.0)) * 2e-4
    return positions * windows - cost, positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", type=int, default=10_000)
    parser.add_argument("--bars", type=int, default=2_520)
    parser.add_argument("--repeats", type=int, default=3, help="timed JAX calls (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="500 strategies x 252 bars")
    args = parser.parse_args()
    if args.quick:
        args.strategies, args.bars, args.repeats = 500, 252, 2

    returns, positions = make_strategies(args.strategies, args.bars, args.seed)
    print(f"{args.strategies} strategies x {args.bars} bars; JAX {jax.__version__} on "
          f"{jax.devices()[0].device_kind}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")

    device_returns = jax.device_put(returns.astype(np.float32))
    device_positions = jax.device_put(positions.astype(np.float32))
    start = time.perf_counter()
    jax.block_until_ready(M.batch_metrics(device_returns, 252.0, device_positions))
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = jax.block_until_ready(M.batch_metrics(device_returns, 252.0, device_positions))
        best = min(best, time.perf_counter() - start)
    ours = {k: np.asarray(v, np.float64) for k, v in ours.items()}

    reference = {k: np.empty(args.strategies) for k in COMMON}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(args.strategies):
            series = returns[i]
            for key, fn in COMMON.items():
                reference[key][i] = fn(series)
    loop_s = time.perf_counter() - start

    print(f"jaxtrade vmapped (19 metrics): {best:.3f} s  (first call incl. compile "
          f"{compile_s:.2f} s)")
    print(f"empyrical loop   (10 metrics): {loop_s:.3f} s")
    print(f"speed-up: {loop_s / best:.1f}x")
    worst_key, worst = "", 0.0
    for key in COMMON:
        both = np.isfinite(ours[key]) & np.isfinite(reference[key])
        mismatch = np.sum(np.isfinite(ours[key]) != np.isfinite(reference[key]))
        diff = float(np.max(np.abs(ours[key][both] - reference[key][both]))) if both.any() else 0
        if mismatch:
            print(f"  {key}: {mismatch} strategies finite on one side only")
        if diff > worst:
            worst_key, worst = key, diff
        print(f"  max |diff| {key:18s} {diff:.2e}")
    print(f"max abs diff over the 10 shared metrics: {worst:.2e} ({worst_key})")


if __name__ == "__main__":
    main()
