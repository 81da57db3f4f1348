"""The run report: `run_dir/report/` with report.html, PNG plots, metrics.json, positions.csv.

report.html is self-contained (every plot embedded as base64 PNG, no scripts, no network),
so it opens offline and can be mailed as one file; each plot is also written beside it as
a PNG and linked by name. Train, validation and test are always shown separately, each
beside the baselines on the same split and costs; the costs and the number of sweep trials
are stated at the top, with the probabilistic / deflated Sharpe ratios.

metrics.json (machine-readable, shape of DESIGN.md "Run directory"):
  {"train"|"validation"|"test": {metric: value, ..., "psr": P(Sharpe > 0)},
   "baselines": {name: {split: {...}}}, "costs": str, "sweep_trials": int,
   "bars_per_year": float, "splits": {split: {"start", "end", "bars"}},
   "min_reliable_bars": one year of bars (splits with fewer are marked as short samples),
   "significance": {"psr_<split>", "psr_<split>_bars" (its sample size), ...},
   "monte_carlo": {...} (when given),
   "seeds": every point's validation / test Sharpe, return and max drawdown and their
            aggregate over seeds: mean, std, IQM with its bootstrap CI (when given;
            jaxtrade.evaluate.seeds.seed_summary)}
Non-finite numbers are written as null.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from jaxtrade import metrics as metrics_lib  # noqa: E402
from jaxtrade.evaluate.backtest import BacktestResult  # noqa: E402
from jaxtrade.evaluate.montecarlo import QUANTILES, MonteCarloResult  # noqa: E402
from jaxtrade.logging import plural  # noqa: E402
from jaxtrade.market import SPLIT_NAMES  # noqa: E402

PLOTS = {
    "equity.png": "Equity vs baselines (log scale), per split",
    "drawdown.png": "Drawdown from the running peak, per split",
    "positions.png": "Target position over price",
    "rolling_sharpe.png": "Rolling Sharpe ratio",
    "returns_hist.png": "Distribution of per-bar returns with VaR / CVaR (5%)",
    "monthly_returns.png": "Monthly returns",
    "montecarlo.png": "Monte Carlo (stationary block bootstrap of test returns)",
}
# Darker split colours for lines and frames.
SPLIT_EDGES = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}
SPLIT_COLORS = {"train": "#dde6f3", "validation": "#fbe9cf", "test": "#dff0dc"}
PERCENT_KEYS = {
    "max_drawdown", "total_return", "annual_return", "annual_volatility", "win_rate",
    "avg_trade_return", "exposure", "var_5", "cvar_5",
}
LABELS = {
    "sharpe": "Sharpe (ann.)", "sortino": "Sortino (ann.)", "max_drawdown": "Max drawdown",
    "total_return": "Total return", "annual_return": "Annual return (CAGR)",
    "annual_volatility": "Annual volatility", "calmar": "Calmar",
    "max_drawdown_duration": "Max DD duration (bars)", "profit_factor": "Profit factor (per bar)",
    "win_rate": "Win rate (per bar)", "avg_trade_return": "Avg trade return (net)",
    "num_trades": "Trades", "turnover": "Turnover (x equity / year)", "exposure": "Exposure",
    "var_5": "VaR 5% (per bar)", "cvar_5": "CVaR 5% (per bar)", "tail_ratio": "Tail ratio",
    "skew": "Skew", "kurtosis": "Excess kurtosis", "psr": "PSR (P[Sharpe > 0])",
}


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def psr_of(returns: np.ndarray) -> float:
    """P(true Sharpe > 0) of one series (per-bar moments, Bailey & Lopez de Prado)."""
    r = np.asarray(returns, np.float64)
    if len(r) < 3 or np.std(r) == 0:
        return math.nan
    centred = r - r.mean()
    m2 = np.mean(centred**2)
    sharpe = r.mean() / r.std(ddof=1)
    g3, g4 = np.mean(centred**3) / m2**1.5, np.mean(centred**4) / m2**2
    return float(metrics_lib.probabilistic_sharpe_ratio(sharpe, len(r), g3, g4))


def min_reliable_bars(bars_per_year: float) -> int:
    """Fewest bars a metric should rest on before it is read without caution: one year of
    bars (252 daily). Below it the annualized Sharpe's standard error, about
    sqrt(bars_per_year / n), exceeds 1."""
    return int(math.ceil(bars_per_year))


def sharpe_standard_error(bars_per_year: float, num_bars: int) -> float:
    """Approximate standard error of an annualized Sharpe ratio from `num_bars` bars (Lo 2002,
    at a Sharpe near 0): sqrt(bars_per_year / n)."""
    return math.sqrt(bars_per_year / max(num_bars, 1))


def short_splits(metrics: Mapping[str, Any]) -> dict[str, int]:
    """{split: bars} of the splits of a metrics.json with fewer than min_reliable_bars."""
    per_year = metrics.get("bars_per_year")
    if not per_year:
        return {}
    need = min_reliable_bars(per_year)
    return {s: int(info["bars"]) for s, info in (metrics.get("splits") or {}).items()
            if int(info.get("bars", need)) < need}


def _split_metrics(result: BacktestResult) -> dict[str, Any]:
    return {**result.metrics, "psr": psr_of(result.returns[1:])}


def build_metrics_json(
    results_by_split: Mapping[str, BacktestResult],
    baselines: Mapping[str, Mapping[str, BacktestResult]],
    mc: MonteCarloResult | None = None,
    sweep_trials: int = 1,
    costs_description: str = "",
    sweep_sharpe_variance: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in SPLIT_NAMES:
        if split in results_by_split:
            out[split] = _split_metrics(results_by_split[split])
    out["baselines"] = {
        name: {split: _split_metrics(r) for split, r in by_split.items()}
        for name, by_split in baselines.items()
    }
    out["costs"] = costs_description
    out["sweep_trials"] = int(sweep_trials)
    first = next(iter(results_by_split.values()))
    out["bars_per_year"] = first.bars_per_year
    out["splits"] = {
        split: {
            "start": str(r.timestamps[0]),
            "end": str(r.timestamps[-1]),
            "bars": int(r.num_bars - 1),
        }
        for split, r in results_by_split.items()
    }
    out["min_reliable_bars"] = min_reliable_bars(first.bars_per_year)
    out["significance"] = _significance(results_by_split, sweep_trials, sweep_sharpe_variance)
    if mc is not None:
        out["monte_carlo"] = mc.summary()
    return _finite_or_none(out)


def _significance(results_by_split, sweep_trials, sweep_sharpe_variance) -> dict[str, Any]:
    sig: dict[str, Any] = {"sweep_trials": int(sweep_trials)}
    for split, result in results_by_split.items():
        sig[f"psr_{split}"] = psr_of(result.returns[1:])
        sig[f"psr_{split}_bars"] = int(len(result.returns[1:]))  # the PSR's sample size
        if sweep_trials > 1 and sweep_sharpe_variance is not None:
            r = result.returns[1:]
            if len(r) > 3 and np.std(r) > 0:
                centred = r - r.mean()
                m2 = np.mean(centred**2)
                sig[f"dsr_{split}"] = float(
                    metrics_lib.deflated_sharpe_ratio(
                        r.mean() / r.std(ddof=1), len(r), sweep_trials, sweep_sharpe_variance,
                        np.mean(centred**3) / m2**1.5, np.mean(centred**4) / m2**2,
                    )
                )
    if "dsr_validation" in sig:
        sig["dsr"] = sig["dsr_validation"]
    elif "dsr_test" in sig:
        sig["dsr"] = sig["dsr_test"]
    if sweep_sharpe_variance is not None:
        sig["sweep_sharpe_variance"] = float(sweep_sharpe_variance)
    return sig


# ------------------------------------------------------------------------------------ plots


def _dates(result: BacktestResult) -> np.ndarray:
    return result.timestamps.astype("datetime64[us]").astype("O")


def _format_time_axis(ax: plt.Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _percent_axis(ax: plt.Axes, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0))


def _plain_log_axis(ax: plt.Axes) -> None:
    """Log-scaled y axis labelled 0.8, 1, 1.5 ... instead of powers of ten.

    Call after plotting: the tick choice depends on the data range (a narrow range gets
    evenly spaced ticks, a wide one 1-1.5-2-3-5-7 per decade).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / max(low, 1e-12) < 4.0:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.yaxis.set_minor_locator(NullLocator())
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))


def plain_number(value: float) -> str:
    """A tick label without scientific notation: 2,500 (not 2.5e+03), 104, 1.5, 0.8."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.6f}".rstrip("0").rstrip(".")


def _split_panels(results_by_split: Mapping[str, BacktestResult], height: float = 4.2):
    splits = [s for s in SPLIT_NAMES if s in results_by_split]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), height), squeeze=False)
    return fig, splits, list(axes[0])


def plot_equity(results_by_split, baselines, path: Path) -> None:
    fig, splits, axes = _split_panels(results_by_split)
    for ax, split in zip(axes, splits):
        result = results_by_split[split]
        ax.plot(_dates(result), result.equity / result.equity[0], color="black", lw=2.0,
                label="policy", zorder=5)
        for name, by_split in baselines.items():
            if split in by_split:
                b = by_split[split]
                ax.plot(_dates(b), b.equity / b.equity[0], lw=1.1, label=name, alpha=0.85)
        _plain_log_axis(ax)
        ax.set_title(f"{split} ({result.num_bars - 1} bars)")
        ax.set_ylabel("Equity, start = 1 (log scale)")
        ax.set_xlabel("Date (UTC)")
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.grid(True, which="both", alpha=0.25)
        _format_time_axis(ax)
    axes[0].legend(loc="best", fontsize=8, framealpha=0.9)
    fig.suptitle("Equity net of costs: policy vs baselines on the same split and costs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drawdown(results_by_split, baselines, path: Path) -> None:
    fig, splits, axes = _split_panels(results_by_split, height=3.6)
    for ax, split in zip(axes, splits):
        result = results_by_split[split]
        dd = result.equity / np.maximum.accumulate(result.equity) - 1.0
        ax.fill_between(_dates(result), dd, 0.0, color="crimson", alpha=0.35, label="policy")
        if "buy_and_hold" in baselines and split in baselines["buy_and_hold"]:
            b = baselines["buy_and_hold"][split]
            bdd = b.equity / np.maximum.accumulate(b.equity) - 1.0
            ax.plot(_dates(b), bdd, color="steelblue", lw=1.0, label="buy_and_hold")
        ax.set_title(f"{split}: max drawdown {dd.min():.1%}")
        ax.set_ylabel("Drawdown from peak")
        ax.set_xlabel("Date (UTC)")
        _percent_axis(ax)
        ax.grid(True, alpha=0.25)
        _format_time_axis(ax)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shade_splits(ax: plt.Axes, results_by_split) -> None:
    for split, result in results_by_split.items():
        dates = _dates(result)
        ax.axvspan(dates[0], dates[-1], color=SPLIT_COLORS.get(split, "#eeeeee"), alpha=0.7,
                   lw=0, label=f"{split} split")


def exposure_window_bars(bars_per_year: float, num_bars: int) -> int:
    """About a month of bars (21 daily), at most a fifth of the shortest split, at least 3."""
    return int(max(3, min(round(bars_per_year / 12), num_bars // 5)))


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1:] = np.lib.stride_tricks.sliding_window_view(values, window).mean(axis=1)
    return out


def plot_positions(results_by_split, path: Path, max_assets: int = 3,
                   symbol_names: Any = None) -> None:
    """Price over the splits and the policy's position: the target position as a thin step
    line and its rolling mean over about a month (the net exposure a high-turnover policy
    holds, which a step line alone shows as a barcode)."""
    first = next(iter(results_by_split.values()))
    num_assets = min(len(first.symbols), max_assets)
    names = list(symbol_names or first.symbols)
    window = exposure_window_bars(first.bars_per_year,
                                  min(r.num_bars for r in results_by_split.values()))
    fig, axes = plt.subplots(2 * num_assets, 1, figsize=(13, 3.2 * num_assets + 1.5),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * num_assets})
    axes = axes[:, 0]
    for a in range(num_assets):
        price_ax, pos_ax = axes[2 * a], axes[2 * a + 1]
        _shade_splits(price_ax, results_by_split)
        for i, result in enumerate(results_by_split.values()):
            price_ax.plot(_dates(result), result.close[:, a], color="black", lw=0.9)
            pos_ax.step(_dates(result), result.target_positions[:, a], where="post",
                        color="tab:blue", lw=0.5, alpha=0.35,
                        label="target position" if i == 0 else None)
            pos_ax.plot(_dates(result), _rolling_mean(result.target_positions[:, a], window),
                        color="navy", lw=1.6,
                        label=f"rolling mean, {window} bars" if i == 0 else None)
        price_ax.set_ylabel(f"{names[a]} close\n(price units)")
        _plain_log_axis(price_ax)
        price_ax.grid(True, alpha=0.25)
        pos_ax.axhline(0.0, color="grey", lw=0.6)
        pos_ax.set_ylabel(f"{names[a]} position\n(fraction of equity)")
        pos_ax.grid(True, alpha=0.25)
        pos_ax.legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.9)
        if a == 0:
            price_ax.legend(loc="upper left", fontsize=8)
            price_ax.set_title("Price (log scale) and the policy's target position; "
                               "background = split")
    axes[-1].set_xlabel("Date (UTC)")
    _format_time_axis(axes[-1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rolling_window_bars(bars_per_year: float, num_bars: int) -> int:
    """About a quarter of a year, but at most a third of the shortest split, at least 10."""
    return int(max(10, min(round(bars_per_year / 4), num_bars // 3)))


def _rolling_sharpe(returns: np.ndarray, window: int, bars_per_year: float) -> np.ndarray:
    out = np.full(len(returns), np.nan)
    if len(returns) < window:
        return out
    view = np.lib.stride_tricks.sliding_window_view(returns, window)
    std = view.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[window - 1:] = np.where(std > 0, view.mean(axis=1) / std, np.nan)
    return out * math.sqrt(bars_per_year)


def plot_rolling_sharpe(results_by_split, baselines, path: Path) -> int:
    shortest = min(r.num_bars for r in results_by_split.values())
    first = next(iter(results_by_split.values()))
    window = rolling_window_bars(first.bars_per_year, shortest)
    fig, ax = plt.subplots(figsize=(13, 4.2))
    _shade_splits(ax, results_by_split)
    labelled = set()
    for split, result in results_by_split.items():
        rs = _rolling_sharpe(result.returns, window, result.bars_per_year)
        ax.plot(_dates(result), rs, color="black", lw=1.2,
                label=None if "policy" in labelled else "policy")
        labelled.add("policy")
        b = baselines.get("buy_and_hold", {}).get(split)
        if b is not None:
            brs = _rolling_sharpe(b.returns, window, b.bars_per_year)
            ax.plot(_dates(b), brs, color="steelblue", lw=0.9, alpha=0.8,
                    label=None if "bh" in labelled else "buy_and_hold")
            labelled.add("bh")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_ylabel(f"Annualized Sharpe\n(rolling {window} bars)")
    ax.set_xlabel("Date (UTC)")
    ax.set_title(f"Rolling Sharpe ratio over {window} bars (each split computed separately)")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    _format_time_axis(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return window


def _oos(results_by_split) -> tuple[str, BacktestResult]:
    for split in ("test", "validation", "train"):
        if split in results_by_split:
            return split, results_by_split[split]
    raise ValueError("no results")


def plot_return_histogram(results_by_split, path: Path) -> None:
    split, result = _oos(results_by_split)
    r = result.returns[1:]
    var, cvar = result.metrics["var_5"], result.metrics["cvar_5"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.hist(r, bins=min(80, max(10, len(r) // 10)), color="slategray", alpha=0.85,
            label="per-bar returns")
    ax.axvline(var, color="darkorange", lw=2, label=f"VaR 5% = {var:.2%}")
    ax.axvline(cvar, color="crimson", lw=2, ls="--", label=f"CVaR 5% = {cvar:.2%}")
    ax.axvline(0.0, color="black", lw=0.6)
    _percent_axis(ax, "x")
    ax.set_xlabel("Return per bar (net of costs)")
    ax.set_ylabel("Number of bars")
    ax.set_title(f"{split} split: distribution of per-bar returns ({len(r)} bars)")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def monthly_returns(results_by_split) -> pl.DataFrame:
    """Compounded strategy return per calendar month over every evaluated bar, with the split
    most of the month's bars belong to."""
    parts = []
    for split, result in results_by_split.items():
        parts.append(
            pl.DataFrame({"timestamp": result.timestamps[1:], "r": result.returns[1:],
                          "split": [split] * (len(result.returns) - 1)})
        )
    frame = pl.concat(parts).sort("timestamp")
    return (
        frame.with_columns(
            year=pl.col("timestamp").dt.year(), month=pl.col("timestamp").dt.month()
        )
        .group_by("year", "month")
        .agg((pl.col("r").log1p().sum().exp() - 1.0).alias("return"),
             pl.col("split").mode().first().alias("split"))
        .sort("year", "month")
    )


def plot_monthly_heatmap(results_by_split, path: Path) -> None:
    from matplotlib.patches import Patch, Rectangle

    monthly = monthly_returns(results_by_split)
    years = sorted(set(monthly["year"].to_list()))
    grid = np.full((len(years), 12), np.nan)
    split_of: dict[tuple[int, int], str] = {}
    for year, month, value, split in monthly.iter_rows():
        grid[years.index(year), month - 1] = value
        split_of[(years.index(year), month - 1)] = split
    limit = colour_limit(grid)
    height = max(2.5, 0.32 * len(years) + 1.6)
    fig, ax = plt.subplots(figsize=(11, height))
    image = ax.imshow(grid * 100, cmap="RdYlGn", vmin=-limit * 100, vmax=limit * 100,
                      aspect="auto")
    # Each month framed in the colour of its split (most of its bars).
    for (i, j), split in split_of.items():
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.2,
                               edgecolor=SPLIT_EDGES.get(split, "grey")))
    ax.legend(handles=[Patch(facecolor="white", edgecolor=SPLIT_EDGES[s], lw=2.2, label=s)
                       for s in SPLIT_NAMES if s in results_by_split],
              loc="upper left", bbox_to_anchor=(1.13, 1.0), fontsize=8, title="split",
              title_fontsize=8, frameon=False)
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                              "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    if grid.size <= 400:
        for i in range(len(years)):
            for j in range(12):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j] * 100:.1f}".replace("-0.0", "0.0"),
                            ha="center", va="center",
                            fontsize=7)
    fig.colorbar(image, ax=ax, label="Monthly return (%)", extend="both")
    ax.set_xlabel("Month")
    ax.set_ylabel("Year")
    ax.set_title("Policy monthly returns, net of costs (all evaluated splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def colour_limit(grid: np.ndarray) -> float:
    """Half-width of a diverging colour scale that one extreme cell does not set: the 95th
    percentile of |value| (cells beyond it take the end colours; the printed numbers stay
    exact), at least 0.5%."""
    finite = np.abs(grid[np.isfinite(grid)])
    return max(float(np.percentile(finite, 95)), 0.005) if finite.size else 0.01


def plot_montecarlo(mc: MonteCarloResult | None, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3),
                             gridspec_kw={"width_ratios": [2.2, 1, 1]})
    if mc is None:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0.5, 0.5, "Monte Carlo not run for this report", ha="center",
                     va="center", fontsize=14, transform=axes[0].transAxes)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return
    fan, sharpe_ax, dd_ax = axes
    steps = np.arange(1, mc.equity_quantiles.shape[1] + 1)
    q = dict(zip(QUANTILES, mc.equity_quantiles))
    fan.fill_between(steps, q[0.05], q[0.95], color="tab:blue", alpha=0.18,
                     label="5-95% of paths")
    fan.fill_between(steps, q[0.25], q[0.75], color="tab:blue", alpha=0.35,
                     label="25-75% of paths")
    fan.plot(steps, q[0.5], color="tab:blue", lw=1.2, label="median path")
    fan.plot(steps, mc.actual_equity, color="black", lw=1.5, label="actual test equity")
    _plain_log_axis(fan)
    fan.set_xlabel("Bars into the test split")
    fan.set_ylabel("Equity, start = 1 (log scale)")
    fan.set_title(f"{mc.num_paths} bootstrap paths (mean block {mc.mean_block_bars:g} bars)")
    fan.legend(fontsize=8, loc="best", framealpha=0.9)
    fan.grid(True, which="both", alpha=0.25)
    sharpe_ax.hist(mc.sharpe[np.isfinite(mc.sharpe)], bins=40, color="tab:green", alpha=0.8)
    sharpe_ax.axvline(0.0, color="black", lw=0.7)
    sharpe_ax.set_xlabel("Annualized Sharpe")
    sharpe_ax.set_ylabel("Paths")
    sharpe_ax.set_title("Sharpe across paths")
    dd_ax.hist(mc.max_drawdown, bins=40, color="crimson", alpha=0.7, label="bootstrap")
    if mc.crash_max_drawdown is not None:
        dd_ax.hist(mc.crash_max_drawdown, bins=40, color="black", alpha=0.35,
                   label="with crash days")
        dd_ax.legend(fontsize=8)
    _percent_axis(dd_ax, "x")
    from matplotlib.ticker import MaxNLocator

    dd_ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    dd_ax.set_xlabel("Max drawdown")
    dd_ax.set_ylabel("Paths")
    dd_ax.set_title("Max drawdown across paths")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------- html


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None or math.isnan(value) else ("+inf" if value > 0 else "-inf")
    if key in PERCENT_KEYS:
        return f"{value:.2%}"
    if key in ("num_trades", "max_drawdown_duration"):
        return f"{value:.0f}"
    return f"{value:.3f}"


def _metrics_table(split: str, metrics: dict[str, Any], short_bars: int | None = None) -> str:
    names = ["policy", *metrics["baselines"].keys()]
    mark = (f" <span class='warn'>({short_bars} bars: short sample)</span>"
            if short_bars is not None else "")
    columns = [metrics[split]] + [metrics["baselines"][n].get(split, {}) for n in names[1:]]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for key in (*metrics_lib.METRIC_KEYS, "psr"):
        cells = "".join(f"<td>{_fmt(key, c.get(key))}</td>" for c in columns)
        rows.append(f"<tr><th class='k'>{html.escape(LABELS.get(key, key))}</th>{cells}</tr>")
    return (f"<table><thead><tr><th>{split}{mark}</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _img(folder: Path, name: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
    caption = html.escape(PLOTS[name])
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{name}' data-file='{name}'>"
            f"<figcaption>{caption} (<a href='{name}'>{name}</a>)</figcaption></figure>")


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
max-width:1500px}
h1{margin-bottom:4px} .facts{background:#f6f7f9;border:1px solid #dde;padding:10px 14px;
border-radius:6px;line-height:1.6} table{border-collapse:collapse;margin:8px 24px 18px 0;
font-size:13px;display:inline-table;vertical-align:top} th,td{border:1px solid #ccd;
padding:3px 8px;text-align:right} thead th{background:#eef1f6} th.k{text-align:left;
font-weight:normal;background:#fafbfc} figure{margin:18px 0} img{max-width:100%;
border:1px solid #e3e3e3} figcaption{font-size:13px;color:#555}
.warn{color:#a33}
tr.promoted td{background:#eef6ee}
"""


def _html(metrics: dict[str, Any], folder: Path, title: str, window: int) -> str:
    splits = [s for s in SPLIT_NAMES if s in metrics]
    short = short_splits(metrics)
    span = "".join(
        f"<li><b>{s}</b>: {metrics['splits'][s]['start'][:19]} to "
        f"{metrics['splits'][s]['end'][:19]} ({metrics['splits'][s]['bars']} bars)"
        + (" <span class='warn'>short sample</span>" if s in short else "") + "</li>"
        for s in splits
    )
    if short:
        per_year = metrics["bars_per_year"]
        span += (
            "<li class='warn'><b>Short sample</b>: "
            + ", ".join(f"{s} ({n} bars, Sharpe standard error ~"
                        f"{sharpe_standard_error(per_year, n):.1f})" for s, n in short.items())
            + f" rest on fewer than {metrics['min_reliable_bars']} bars (one year at "
            f"{per_year:g} bars per year): read their metrics, ranks and PSR as rough</li>")
    sig = metrics.get("significance", {})
    trials = metrics["sweep_trials"]
    sig_bits = [f"PSR {s}: {_fmt('psr', sig.get(f'psr_{s}'))} (n={sig.get(f'psr_{s}_bars')} bars)"
                for s in splits]
    if "dsr" in sig:
        sig_bits.append(f"Deflated Sharpe (DSR) for {plural(trials, 'trial')}: "
                        f"{_fmt('psr', sig['dsr'])}")
    elif trials > 1:
        sig_bits.append("<span class='warn'>DSR not computed: Sharpe variance across the "
                        "sweep not given</span>")
    costs = html.escape(metrics["costs"] or "not stated")
    tables = "".join(_metrics_table(s, metrics, short.get(s)) for s in splits)
    figures = "".join(_img(folder, name) for name in PLOTS)
    mc = metrics.get("monte_carlo")
    mc_line = ""
    if mc:
        mc_line = (f"<li>Monte Carlo: {mc['num_paths']} paths; P(loss) "
                   f"{mc['probability_of_loss']:.1%}; Sharpe 5-95%: "
                   f"{_fmt('sharpe', mc['sharpe']['p05'])} to "
                   f"{_fmt('sharpe', mc['sharpe']['p95'])}</li>")
        for name, stressed in (mc.get("stress") or {}).items():
            mc_line += (f"<li>Stress <b>{html.escape(name)}</b>: Sharpe "
                        f"{_fmt('sharpe', stressed.get('sharpe'))}, total return "
                        f"{_fmt('total_return', stressed.get('total_return'))}, max drawdown "
                        f"{_fmt('max_drawdown', stressed.get('max_drawdown'))}</li>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="facts"><ul>
<li><b>Costs</b> (on in every result below): {costs}</li>
<li><b>Sweep trials</b> behind this configuration: {trials}</li>
<li><b>Significance</b>: {"; ".join(sig_bits)}</li>
<li><b>Annualization</b>: {metrics['bars_per_year']:g} bars per year; rolling Sharpe window
{window} bars</li>
{span}{mc_line}
</ul></div>
<h2>Metrics by split (policy beside baselines on the same split and costs)</h2>
{tables}
{_seeds_section(metrics.get("seeds"))}
<h2>Plots</h2>
{figures}
</body></html>
"""


def _seeds_section(seeds: Mapping[str, Any] | None) -> str:
    """Every point beside the aggregate over seeds (runs of more than one point)."""
    from jaxtrade.evaluate import seeds as seeds_lib

    if not seeds or len(seeds["points"]) < 2:
        return ""
    splits = list(seeds["aggregate"])
    metrics = seeds_lib.SEED_METRICS
    label = lambda s, m: f"{s} {seeds_lib.LABELS[m]}"
    head = "".join(f"<th>{html.escape(label(s, m))}</th>" for s in splits for m in metrics)
    reported = seeds["reported_point"]
    rows = "".join(
        f"<tr><th class='k'>{row['point']}{' (reported)' if row['point'] == reported else ''}"
        "</th>"
        f"<td>{html.escape(str(row.get('seed', '-')))}</td>"
        + "".join(f"<td>{seeds_lib.number((row.get(s) or {}).get(m), m)}</td>"
                  for s in splits for m in metrics) + "</tr>"
        for row in seeds["points"])
    per_point = (f"<table><thead><tr><th>point</th><th>seed</th>{head}</tr></thead>"
                 f"<tbody>{rows}</tbody></table>")
    confidence = f"{100 * seeds_lib.CONFIDENCE:g}%"
    agg_rows = "".join(
        f"<tr><th class='k'>{html.escape(label(s, m))}</th>"
        + "".join(f"<td>{seeds_lib.number(a[k], m)}</td>" for k in ("mean", "std", "iqm"))
        + f"<td>{seeds_lib.interval(a['iqm_ci'], m)}</td></tr>"
        for s in splits for m in metrics if (a := seeds["aggregate"][s][m]))
    aggregate = (f"<table><thead><tr><th></th><th>mean</th><th>std</th><th>IQM</th>"
                 f"<th>IQM {confidence} CI</th></tr></thead><tbody>{agg_rows}</tbody></table>")
    n = seeds["num_seeds"]
    note = (f"<p class='warn'>{html.escape(seeds['ci_note'])}</p>" if seeds.get("ci_note")
            else "")
    return (f"<h2>Every seed, and the aggregate over {plural(n, 'seed')}</h2>"
            f"<p>Each point's policy at the checkpoint of update {seeds['update']}, backtested "
            "on the same splits and costs; the metrics above are the reported point's. The "
            "aggregate pools the seeds of the reported hyperparameters (points "
            f"{', '.join(map(str, seeds['aggregated_points']))}): mean, standard deviation, "
            f"and the interquartile mean with a {confidence} percentile bootstrap interval "
            "(Agarwal et al. 2021, rliable).</p>"
            f"{per_point}{aggregate}{note}")


def write_positions_csv(results_by_split: Mapping[str, BacktestResult], path: Path) -> None:
    frames = [
        r.frame().select("timestamp", "symbol", "split", "target_position", *r.columns)
        for s in SPLIT_NAMES if (r := results_by_split.get(s)) is not None
    ]
    pl.concat(frames).write_csv(path)


def write_report(
    run_dir: str | Path,
    results_by_split: Mapping[str, BacktestResult],
    baselines: Mapping[str, Mapping[str, BacktestResult]],
    mc: MonteCarloResult | None = None,
    sweep_trials: int = 1,
    costs_description: str = "",
    sweep_sharpe_variance: float | None = None,
    title: str = "jaxtrade backtest report",
    symbol_names: Any = None,
    seeds: Mapping[str, Any] | None = None,
) -> Path:
    """Write run_dir/report/ (HTML, PNGs, metrics.json, positions.csv); return the HTML path.
    `seeds`: jaxtrade.evaluate.seeds.seed_summary of the run's points, when it has them."""
    if not results_by_split:
        raise ValueError("write_report needs at least one split's backtest")
    folder = Path(run_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics_json(results_by_split, baselines, mc, sweep_trials,
                                 costs_description, sweep_sharpe_variance)
    if seeds is not None:
        metrics["seeds"] = _finite_or_none(dict(seeds))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    write_positions_csv(results_by_split, folder / "positions.csv")
    plot_equity(results_by_split, baselines, folder / "equity.png")
    plot_drawdown(results_by_split, baselines, folder / "drawdown.png")
    plot_positions(results_by_split, folder / "positions.png", symbol_names=symbol_names)
    window = plot_rolling_sharpe(results_by_split, baselines, folder / "rolling_sharpe.png")
    plot_return_histogram(results_by_split, folder / "returns_hist.png")
    plot_monthly_heatmap(results_by_split, folder / "monthly_returns.png")
    plot_montecarlo(mc, folder / "montecarlo.png")
    page = folder / "report.html"
    page.write_text(_html(metrics, folder, title, window), encoding="utf-8")
    if (Path(run_dir) / "retrains" / "history.jsonl").is_file():
        from jaxtrade.deploy import update_report_history  # a run that was retrained

        update_report_history(Path(run_dir))
    return page
