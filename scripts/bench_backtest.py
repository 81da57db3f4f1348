"""Benchmark: performance metrics of many strategies, batched JAX vs empyrical in a loop.

Both sides score the same N strategies x T bars of daily returns (real S&P 500 returns from
the embedded data times random target positions, so the series look like strategies):
  jaxtrade  jaxtrade.metrics.batch_metrics: all 19 report metrics (the 10 below plus trade
            statistics, turnover, exposure, profit factor, win rate, skew, kurtosis,
            drawdown duration) for every strategy in one jitted program over [N, T];
            timed after a warm-up call (compile time printed separately). Also timed
            restricted to the 10 metrics empyrical computes (like for like). On CPU the
            per-row statistics come from the native kernel (jaxtrade/native, an XLA FFI
            call inside the same jitted program); --jax-path measures the pure-JAX
            program that GPUs/TPUs run instead (same numbers, slower on CPU).
  empyrical the 10 metrics empyrical implements (Sharpe, Sortino, max drawdown, total and
            annual return, annual volatility, Calmar, VaR, CVaR, tail ratio), one strategy
            at a time in a Python loop, as a research script would.
Prints medians of the repeated timings, both speed-up ratios, the CPU time per wall second
of the JAX call (2.0 = both cores busy), and the largest absolute difference between the two
on the 10 shared metrics (jaxtrade computes in float32, empyrical in float64).
--breakdown also times the parts: the native row statistics alone, and on the JAX path the
exact 5%/95% tails (the batch search, two full top_k, a full XLA sort, numpy's sort).

The process runs with glibc's transparent-huge-page malloc like the `jaxtrade` command
(jaxtrade/hugepages.py: GLIBC_TUNABLES=glibc.malloc.hugetlb=1, re-executing itself once to
set it; --no-hugepages to keep the default): every [N, T] temporary is a fresh 100 MB
allocation, and on the measuring machine page faults on 4 KiB pages made memory-bound XLA ops
3-5x slower. Both sides share the process and the setting.

    python scripts/bench_backtest.py            # 10,000 strategies x 2,520 bars
    python scripts/bench_backtest.py --quick    # smoke test
    python scripts/bench_backtest.py --jax-path # without the native kernel
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

from jaxtrade import hugepages  # noqa: E402  (light: sets XLA_FLAGS, imports no JAX)

if "--no-hugepages" not in sys.argv:
    hugepages.reexec_with_hugepages()

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--jax-path" in sys.argv:
    os.environ["JAXTRADE_NATIVE"] = "0"

import empyrical as ep  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from jaxtrade import metrics as M  # noqa: E402
from jaxtrade import native  # noqa: E402

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


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds of this process, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpus.append(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime)
    return statistics.median(walls), statistics.median(cpus), out


def _breakdown(returns: jax.Array, host: np.ndarray, repeats: int) -> None:
    mean, std = jnp.mean(returns, axis=1), jnp.std(returns, axis=1, ddof=1)
    centred = (returns - mean[:, None]) / jnp.std(returns, axis=1)[:, None]
    skew, kurt = jnp.mean(centred**3, axis=1), jnp.mean(centred**4, axis=1) - 3.0
    parts = {}
    if native.available():
        parts["native row statistics (used)"] = jax.jit(
            lambda r: M._row_stats_native(r, None)[0])
    parts |= {
        "JAX path: all row statistics": jax.jit(lambda r: M._row_stats_xla(r, None)[0]),
        "JAX path: exact tails, batch search": jax.jit(
            lambda r: M._tails(r, mean, std, skew, kurt)),
        "JAX path: exact tails, two top_k(k=127)": jax.jit(M._tails_direct),
        "JAX path: full XLA sort of every row": jax.jit(
            lambda r: jnp.sort(r, axis=1)[:, ::500]),
        "one row reduction (sum)": jax.jit(lambda r: jnp.sum(r, axis=1)),
    }
    for name, fn in parts.items():
        jax.block_until_ready(fn(returns))
        wall, _, _ = _timed(lambda fn=fn: fn(returns), repeats)
        print(f"  {name:40s} {wall * 1e3:8.1f} ms")
    start = time.perf_counter()
    np.sort(host, axis=1)
    print(f"  {'numpy sort of every row (float32)':40s} "
          f"{(time.perf_counter() - start) * 1e3:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", type=int, default=10_000)
    parser.add_argument("--bars", type=int, default=2_520)
    parser.add_argument("--repeats", type=int, default=5, help="timed JAX calls (median)")
    parser.add_argument("--peer-repeats", type=int, default=3,
                        help="timed empyrical loops (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="500 strategies x 252 bars")
    parser.add_argument("--breakdown", action="store_true", help="time the parts too")
    parser.add_argument("--no-hugepages", action="store_true",
                        help="keep glibc's default malloc (4 KiB pages)")
    parser.add_argument("--jax-path", action="store_true",
                        help="no native kernel: the pure-JAX program GPUs/TPUs run")
    args = parser.parse_args()
    if args.quick:
        args.strategies, args.bars, args.repeats, args.peer_repeats = 500, 252, 2, 1

    returns, positions = make_strategies(args.strategies, args.bars, args.seed)
    print(f"{args.strategies} strategies x {args.bars} bars; JAX {jax.__version__} on "
          f"{jax.devices()[0].device_kind}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; hugepage malloc "
          f"{'on' if hugepages.enabled() else 'off'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("row statistics: "
          + ("native CPU kernel (jaxtrade/native)" if native.available() else "JAX path"))

    device_returns = jax.device_put(returns.astype(np.float32))
    device_positions = jax.device_put(positions.astype(np.float32))
    start = time.perf_counter()
    jax.block_until_ready(M.batch_metrics(device_returns, 252.0, device_positions))
    compile_s = time.perf_counter() - start
    full_s, full_cpu, ours = _timed(
        lambda: M.batch_metrics(device_returns, 252.0, device_positions), args.repeats)
    ours = {k: np.asarray(v, np.float64) for k, v in ours.items()}

    # Like for like: the same program asked only for the 10 metrics empyrical computes
    # (XLA drops the rest: no positions, skew, kurtosis, ...).
    common = jax.jit(lambda r: {k: v for k, v in M.batch_metrics(r, 252.0).items()
                                if k in COMMON})
    start = time.perf_counter()
    jax.block_until_ready(common(device_returns))
    common_compile_s = time.perf_counter() - start
    common_s, common_cpu, _ = _timed(lambda: common(device_returns), args.repeats)

    reference = {k: np.empty(args.strategies) for k in COMMON}

    def peer_loop() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(args.strategies):
                series = returns[i]
                for key, fn in COMMON.items():
                    reference[key][i] = fn(series)

    loop_s, _, _ = _timed(peer_loop, args.peer_repeats)

    print(f"jaxtrade batch (19 metrics): {full_s:.3f} s median of {args.repeats} "
          f"(CPU {full_cpu / full_s:.2f} s per s); compile + first call {compile_s:.2f} s")
    print(f"jaxtrade batch (10 metrics): {common_s:.3f} s median of {args.repeats} "
          f"(CPU {common_cpu / common_s:.2f} s per s); compile + first call "
          f"{common_compile_s:.2f} s")
    print(f"empyrical loop (10 metrics): {loop_s:.3f} s median of {args.peer_repeats}")
    print(f"speed-up like for like (10 vs 10 metrics): {loop_s / common_s:.1f}x")
    print(f"speed-up full set      (19 vs 10 metrics): {loop_s / full_s:.1f}x")
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
    if args.breakdown:
        print(f"parts (median of {args.repeats}):")
        _breakdown(device_returns, returns.astype(np.float32), args.repeats)


if __name__ == "__main__":
    main()
