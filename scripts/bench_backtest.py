"""Benchmark: the evaluation phase of a sweep, jaxtrade beside the same metrics in empyrical.

What a user waits for between the end of a sweep's training and its report, through the
functions `jaxtrade train` / `jaxtrade backtest` call for a report (experiments/train.py
`write_report`), for every trial:
  walks      jaxtrade.evaluate.backtest.backtest_all_splits: the trial's policy (the default
             agent and network, parameters as training leaves them) walked through the env
             on train / validation / test with costs, all 19 metrics of each split
  bootstrap  jaxtrade.evaluate.montecarlo.bootstrap: 1,000 stationary-bootstrap paths of the
             trial's test returns (Sharpe, max drawdown, final return, equity fan chart)
and once for the sweep:
  baselines  jaxtrade.evaluate.baselines.run_baselines on the same splits and costs
  deflation  jaxtrade.metrics.sweep_significance over the trials' validation returns
  report     jaxtrade.evaluate.report.write_report of the best trial (HTML, PNGs,
             metrics.json, positions.csv)
The phase runs twice in one process: cold (every program compiled on the way, the
persistent compilation cache off: a first run) and warm (a second sweep of the same shapes).

Peer, in the same run: the same metrics of the same series computed with empyrical in a
Python loop, one series at a time: the 10 metrics empyrical implements (Sharpe, Sortino, max
drawdown, total and annual return, annual volatility, Calmar, VaR, CVaR, tail ratio) for
every split of every trial and baseline, and for each bootstrap path the three the bootstrap
reports (scored on jaxtrade's paths so the values compare; the peer draws as many paths of
its own with numpy inside the timer) plus numpy's quantiles for the fan chart. Prints the
time of each stage, the metric work of jaxtrade (measured apart: metrics_dict of every split
series, the bootstrap calls) against empyrical, and the phase as it is against the phase
with empyrical doing the metrics. jaxtrade computes in
float32, empyrical in float64; the largest relative difference is printed.

The process runs with glibc's huge-page malloc like the `jaxtrade` command
(jaxtrade/hugepages.py; --no-hugepages to keep the default).

    python scripts/bench_backtest.py            # 64 trials x 3 splits x 1,000 paths
    python scripts/bench_backtest.py --quick    # smoke test: 4 trials x 200 paths
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxtrade import hugepages  # noqa: E402  (light: sets XLA_FLAGS, imports no JAX)

if "--no-hugepages" not in sys.argv and not {"-h", "--help"} & set(sys.argv):
    hugepages.reexec_with_hugepages()

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import empyrical as ep  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import common  # noqa: E402
from experiments.train import prepare  # noqa: E402
from jaxtrade import metrics as M  # noqa: E402
from jaxtrade.evaluate import montecarlo  # noqa: E402
from jaxtrade.evaluate.backtest import (  # noqa: E402
    BacktestResult,
    agent_policy,
    backtest_all_splits,
    costs_description,
)
from jaxtrade.evaluate.baselines import run_baselines  # noqa: E402
from jaxtrade.evaluate.report import write_report  # noqa: E402
from jaxtrade.runs import init_points, point_keys  # noqa: E402

#: The metrics empyrical implements, as jaxtrade names them.
EMPYRICAL = {
    "sharpe": lambda r, a: ep.sharpe_ratio(r, annualization=a),
    "sortino": lambda r, a: ep.sortino_ratio(r, annualization=a),
    "max_drawdown": lambda r, a: ep.max_drawdown(r),
    "total_return": lambda r, a: ep.cum_returns_final(r),
    "annual_return": lambda r, a: ep.annual_return(r, annualization=a),
    "annual_volatility": lambda r, a: ep.annual_volatility(r, annualization=a),
    "calmar": lambda r, a: ep.calmar_ratio(r, annualization=a),
    "var_5": lambda r, a: ep.value_at_risk(r, 0.05),
    "cvar_5": lambda r, a: ep.conditional_value_at_risk(r, 0.05),
    "tail_ratio": lambda r, a: ep.tail_ratio(r),
}
#: What the bootstrap scores on each path (its MonteCarloResult field, empyrical's function).
BOOTSTRAP = {
    "sharpe": lambda r, a: ep.sharpe_ratio(r, annualization=a),
    "max_drawdown": lambda r, a: ep.max_drawdown(r),
    "final_return": lambda r, a: ep.cum_returns_final(r),
}


class Stages:
    """Wall time per named stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return out

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def evaluation_phase(prep: Any, params: list[Any], num_paths: int, out: Path) -> tuple:
    """The sweep's evaluation phase; (stages, per-trial results, bootstraps, baselines)."""
    stages = Stages()
    results: list[dict[str, BacktestResult]] = []
    boots: list[montecarlo.MonteCarloResult] = []
    for trial_params in params:
        policy = agent_policy(prep.agent, trial_params)
        trial = stages.run("walks + split metrics", lambda p=policy: backtest_all_splits(
            prep.env, prep.env_params, p, deterministic=True))
        test = trial["test"]
        boots.append(stages.run("bootstrap", lambda t=test: montecarlo.bootstrap(
            t.returns[1:], t.bars_per_year, num_paths=num_paths, exposure=t.positions[1:])))
        results.append(trial)
    baselines = stages.run("baselines", lambda: run_baselines(
        prep.env, prep.env_params, splits=tuple(results[0])))
    validation = np.stack([r["validation"].returns[1:] for r in results])
    significance = stages.run("deflated Sharpe", lambda: M.sweep_significance(validation))
    best = significance["best_trial"]
    best_boot = boots[best]
    stages.run("report files", lambda: write_report(
        out, results[best], baselines, mc=best_boot, sweep_trials=len(params),
        costs_description=costs_description(prep.env_params),
        sweep_sharpe_variance=significance["sharpe_variance"]))
    return stages, results, boots, baselines


def split_series(results: list[dict[str, BacktestResult]], baselines: dict) -> list:
    """(returns, positions) of every split of every trial and baseline, as the report scores
    them (returns after the anchor row, the target decided a row earlier)."""
    runs = [r for trial in results for r in trial.values()]
    runs += [r for by_split in baselines.values() for r in by_split.values()]
    return [(r.returns[1:], r.target_positions[:-1], r.bars_per_year) for r in runs]


def bootstrap_paths(test: BacktestResult, num_paths: int) -> np.ndarray:
    """The paths `montecarlo.bootstrap` scores (its default key and block length)."""
    returns = np.asarray(np.asarray(test.returns[1:], np.float64), np.float32)
    index_key, _ = jax.random.split(jax.random.PRNGKey(0))
    block = montecarlo.default_block_bars(len(returns))
    idx = montecarlo.stationary_bootstrap_indices(index_key, len(returns), num_paths, block)
    return returns.astype(np.float64)[np.asarray(idx)]


def numpy_bootstrap(returns: np.ndarray, num_paths: int, rng: np.random.Generator
                    ) -> np.ndarray:
    """The peer's own stationary bootstrap (same algorithm as jaxtrade's, numpy's RNG)."""
    num_bars = len(returns)
    restart = rng.random((num_paths, num_bars)) < 1.0 / montecarlo.default_block_bars(num_bars)
    restart[:, 0] = True
    starts = rng.integers(0, num_bars, (num_paths, num_bars))
    position = np.arange(num_bars)
    block_start = np.maximum.accumulate(np.where(restart, position, 0), axis=1)
    first = np.take_along_axis(starts, block_start, axis=1)
    return returns[(first + position - block_start) % num_bars]


def empyrical_metrics(series: list, paths: list[np.ndarray], bars_per_year: float) -> tuple:
    """The peer's metric work; it scores jaxtrade's paths (so the values can be compared)
    after drawing as many paths of its own (the time a script of its own would spend)."""
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = [{k: fn(r, a) for k, fn in EMPYRICAL.items()} for r, _, a in series]
        boots = []
        for trial_paths in paths:
            numpy_bootstrap(trial_paths[0], len(trial_paths), rng)
            boots.append({k: np.array([fn(p, bars_per_year) for p in trial_paths])
                          for k, fn in BOOTSTRAP.items()})
            np.quantile(np.cumprod(1.0 + trial_paths, axis=1), montecarlo.QUANTILES, axis=0)
    return splits, boots


def relative_gap(ours: float, ref: float) -> float:
    if not (np.isfinite(ours) and np.isfinite(ref)):
        return 0.0 if (np.isnan(ours) and np.isnan(ref)) or ours == ref else np.inf
    return abs(ours - ref) / max(abs(ref), 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="sweep trials (points)")
    parser.add_argument("--paths", type=int, default=1000, help="bootstrap paths per trial")
    parser.add_argument("--data", default="sp500_daily", help="embedded dataset (data=...)")
    parser.add_argument("--quick", action="store_true", help="4 trials x 200 paths")
    parser.add_argument("--out", type=Path, default=None, help="folder for the report")
    parser.add_argument("--no-hugepages", action="store_true",
                        help="keep glibc's default malloc (no huge pages)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.paths = 4, 200
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_backtest_"))

    cfg = common.compose([f"data={args.data}", f"run_dir={out / 'run'}", "compile_cache=false",
                          "logger=none"])
    prep = prepare(cfg, "bench")
    points = [{"seed": i} for i in range(args.trials)]
    state = init_points(prep.agent, point_keys(points), None, prep.env_params)
    params = [jax.tree.map(lambda x, i=i: x[i], state.params) for i in range(args.trials)]
    market = prep.market
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: "
          f"{jax.devices()[0].device_kind}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; huge-page malloc {'on' if hugepages.enabled() else 'off'}")
    bounds = {s: market.split_bounds(s) for s in ("train", "validation", "test")}
    print(f"{args.data}: {market.num_bars} bars, splits "
          + ", ".join(f"{s} {e - b}" for s, (b, e) in bounds.items())
          + f"; {args.trials} trials ({cfg['agent']['name']}, {cfg['network']['torso']} "
          f"network) x 3 splits, {args.paths} bootstrap paths each")

    timings = {}
    for run in ("cold", "warm"):
        stages, results, boots, baselines = evaluation_phase(
            prep, params, args.paths, out / f"report_{run}")
        timings[run] = stages
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in stages.seconds.items())
        print(f"jaxtrade evaluation phase, {run}: {stages.total:.2f} s ({parts})")

    # The metric work inside the phase, measured apart (warm): every split series through
    # metrics_dict as the backtests call it, and the bootstrap calls.
    series = split_series(results, baselines)
    start = time.perf_counter()
    ours_splits = [M.metrics_dict(r, a, p) for r, p, a in series]
    ours_split_s = time.perf_counter() - start
    ours_boot_s = timings["warm"].seconds["bootstrap"]
    ours_metrics_s = ours_split_s + ours_boot_s

    bars_per_year = float(market.meta.bars_per_year)
    paths = [bootstrap_paths(trial["test"], args.paths) for trial in results]
    start = time.perf_counter()
    ref_splits, ref_boots = empyrical_metrics(series, paths, bars_per_year)
    peer_s = time.perf_counter() - start

    gaps = [relative_gap(o[k], ref[k]) for o, ref in zip(ours_splits, ref_splits) for k in ref]
    gaps += [relative_gap(float(o), float(e)) for boot, ref in zip(boots, ref_boots)
             for k in BOOTSTRAP for o, e in zip(getattr(boot, k), ref[k])]
    warm = timings["warm"]
    with_peer = warm.total - ours_metrics_s + peer_s
    print(f"metric work: jaxtrade {ours_metrics_s:.2f} s ({len(series)} split series, 19 "
          f"metrics each, {ours_split_s:.2f} s; {args.trials} bootstraps {ours_boot_s:.2f} s) vs "
          f"empyrical in a loop {peer_s:.2f} s ({len(series)} x 10 metrics, "
          f"{args.trials} x {args.paths} paths drawn, 3 metrics each + fan quantiles)")
    print(f"speed-up metrics: {peer_s / ours_metrics_s:.2f}x")
    print(f"speed-up evaluation phase (warm {warm.total:.2f} s vs {with_peer:.2f} s with "
          f"empyrical metrics): {with_peer / warm.total:.2f}x; cold phase "
          f"{timings['cold'].total:.2f} s")
    print(f"max relative difference jaxtrade vs empyrical over {len(gaps)} values: "
          f"{max(gaps):.2e}")
    print(f"report: {out / 'report_warm' / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
