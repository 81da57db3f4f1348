"""Walk-forward analysis: train on each fold's training window, test on the window after it.

Folds come from `jaxtrade.data.splits.walk_forward` (rolling or anchored, with an embargo
between windows; test windows tile the timeline without overlapping). For every fold the
market's split bounds are replaced by the fold's, `train_fn(fold, env, env_params)` returns
a policy trained on that fold's train (and validation) bars only, and the policy is
backtested on the fold's test window. The out-of-sample segments are stitched, oldest
first, into one equity curve that compounds from 1.0 (`stitch`).

By default the folds share one market, so its normalization and regime model are the ones it
was built with: fitted on the market's own train split, which for early folds holds bars of
their test windows. `walk_forward` warns when that can be the case; pass `params_fn(fold)`
returning EnvParams whose market was built for the fold (`jaxtrade.market.build(...,
splits=fold)` fits both on the fold's training bars), as `jaxtrade walkforward`
(experiments/walkforward.py) does.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from jaxtrade import metrics as metrics_lib
from jaxtrade.data.splits import Splits
from jaxtrade.evaluate.backtest import BacktestResult, backtest

TrainFn = Callable[[Splits, Any, Any], Callable]  # (fold, env, env_params) -> policy_fn


@dataclasses.dataclass
class WalkForwardResult:
    folds: list[Splits]
    fold_results: list[BacktestResult]  # test-window backtest of each fold
    timestamps: np.ndarray  # stitched OOS bars (each fold's anchor row dropped)
    returns: np.ndarray
    equity: np.ndarray  # compounded from 1.0 over the stitched returns
    positions: np.ndarray  # [n, A] decided targets that earned `returns`
    metrics: dict[str, float]  # over the stitched series

    def fold_table(self) -> pl.DataFrame:
        """One row per fold: windows and the key test metrics."""
        rows = []
        for k, (fold, result) in enumerate(zip(self.folds, self.fold_results)):
            rows.append(
                {
                    "fold": k,
                    "train_start": fold.train[0],
                    "train_end": fold.train[1],
                    "test_start": fold.test[0],
                    "test_end": fold.test[1],
                    **{m: result.metrics[m] for m in ("sharpe", "total_return", "max_drawdown")},
                }
            )
        return pl.DataFrame(rows)


def with_splits(env_params: Any, fold: Splits) -> Any:
    """EnvParams whose market carries the fold's split bounds (the arrays are shared)."""
    market = env_params.market.replace(splits=jnp.asarray(fold.as_array(), jnp.int32))
    return env_params.replace(market=market)


def walk_forward(
    env: Any,
    env_params: Any,
    folds: Sequence[Splits],
    train_fn: TrainFn,
    key: jax.Array | None = None,
    params_fn: Callable[[Splits], Any] | None = None,
) -> WalkForwardResult:
    """Train and test every fold, stitch the test windows.

    `params_fn(fold)`: the EnvParams of a market built for that fold (normalization and
    regimes fitted on its training bars); without it every fold reuses `env_params`' market
    with the fold's split bounds, and a warning says when that market's train split reaches
    past a fold's training window (its fitted statistics may then hold test bars).
    """
    folds = list(folds)
    check_folds(folds)
    key = jax.random.PRNGKey(0) if key is None else key
    if params_fn is None:
        fitted_to = int(np.asarray(env_params.market.splits)[0, 1])
        early = [k for k, f in enumerate(folds) if fitted_to > f.train[1]]
        if early:
            warnings.warn(
                f"walk_forward: the shared market's train split ends at bar {fitted_to}, after "
                f"the training window of fold(s) {early}: if its normalization or regime "
                "model was fitted there, those folds' features hold later bars; pass "
                "params_fn(fold) with a market built per fold", stacklevel=2)
    results = []
    for k, fold in enumerate(folds):
        params = with_splits(env_params, fold) if params_fn is None else params_fn(fold)
        policy_fn = train_fn(fold, env, params)
        results.append(
            backtest(env, params, policy_fn, split="test", key=jax.random.fold_in(key, k))
        )
    stitched = stitch(results)
    return WalkForwardResult(
        folds=folds,
        fold_results=results,
        timestamps=stitched.timestamps,
        returns=stitched.returns,
        equity=stitched.equity,
        positions=stitched.positions,
        metrics=stitched.metrics,
    )


@dataclasses.dataclass
class Stitched:
    """Test-window backtests of consecutive folds as one out-of-sample series."""

    timestamps: np.ndarray  # [n] bar closes at which `returns` were earned
    returns: np.ndarray  # [n]
    equity: np.ndarray  # [n] compounded from 1.0
    positions: np.ndarray  # [n, A] the decided targets that earned `returns`
    metrics: dict[str, float]


def stitch(results: Sequence[BacktestResult]) -> Stitched:
    """Concatenate the folds' test backtests, oldest first, each without its anchor row
    (return 0 at the window's first bar), and compound the returns from 1.0.

    Every fold starts flat at its window's first bar, as a retrained policy deployed there
    would, so the return from one window's last bar to the next window's first is earned by
    no fold and is not counted.
    """
    returns = np.concatenate([r.returns[1:] for r in results])
    positions = np.concatenate([r.target_positions[:-1] for r in results])
    timestamps = np.concatenate([r.timestamps[1:] for r in results])
    return Stitched(timestamps, returns, np.cumprod(1.0 + returns), positions,
                    metrics_lib.metrics_dict(returns, results[0].bars_per_year, positions))


def check_folds(folds: Sequence[Splits]) -> None:
    """Raise if a test window overlaps another fold's test window or its own train window."""
    for k, fold in enumerate(folds):
        if fold.train[1] > fold.test[0] or (
            fold.validation[1] > fold.validation[0] and fold.validation[1] > fold.test[0]
        ):
            raise ValueError(f"fold {k}: training data reaches into its test window")
        if k and folds[k - 1].test[1] > fold.test[0]:
            raise ValueError(f"fold {k}: test window overlaps fold {k - 1}'s test window")


# The figures of each book per fold and over the stitched period (fold table, console).
KEY_METRICS = ("sharpe", "total_return", "max_drawdown", "turnover")


@dataclasses.dataclass
class FoldReport:
    """One fold of `jaxtrade walkforward`: its bar ranges and dates, and the test-window
    backtest of every book it compares, keyed "kind/name" (e.g. "policy/ppo", "rule/vote",
    "member/sac", "baseline/buy_and_hold")."""

    splits: Splits
    dates: dict[str, tuple[str, str]]  # split -> (first bar, last bar), ISO UTC
    books: dict[str, BacktestResult]
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)  # checkpoint, winner, ...


def stitch_books(folds: Sequence[FoldReport]) -> dict[str, Stitched]:
    """Every book that every fold has, stitched over the folds (fold order kept)."""
    names = [n for n in folds[0].books if all(n in f.books for f in folds)]
    return {n: stitch([f.books[n] for f in folds]) for n in names}


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def fold_rows(folds: Sequence[FoldReport]) -> pl.DataFrame:
    """The fold table: one row per (fold, book) with the test window and its key metrics."""
    rows = []
    for k, fold in enumerate(folds):
        for book, result in fold.books.items():
            kind, name = book.split("/", 1)
            rows.append({"fold": k, "kind": kind, "name": name,
                         "train_start": fold.dates["train"][0], "train_end": fold.dates["train"][1],
                         "test_start": fold.dates["test"][0], "test_end": fold.dates["test"][1],
                         "test_bars": len(result.returns) - 1,
                         **{m: _finite(result.metrics.get(m)) for m in KEY_METRICS}})
    return pl.DataFrame(rows)


def metrics_json(folds: Sequence[FoldReport], stitched: Mapping[str, Stitched],
                 policy: str) -> dict[str, Any]:
    """report/metrics.json of a walk-forward run: each fold's ranges, dates and the test
    figures of every book ("books"), every book's figures over the stitched out-of-sample
    period ("stitched")."""
    first, last = folds[0].books[policy], folds[-1].books[policy]
    return {
        "policy": policy,
        # The test windows' first and last bars; returns are earned from the close of the
        # first bar of each window on ("stitched_returns" of them in all).
        "period": {"start": str(first.timestamps[0]), "end": str(last.timestamps[-1]),
                   "test_bars": int(sum(len(f.books[policy].returns) for f in folds)),
                   "stitched_returns": int(len(stitched[policy].returns))},
        "bars_per_year": float(first.bars_per_year),
        "folds": [
            {"fold": k, **{s: list(fold.splits.bounds(s)) for s in ("train", "validation",
                                                                   "test")},
             "dates": {s: list(d) for s, d in fold.dates.items()}, **fold.notes,
             "books": {book: {m: _finite(r.metrics.get(m)) for m in r.metrics}
                       for book, r in fold.books.items()}}
            for k, fold in enumerate(folds)],
        "stitched": {book: {m: _finite(v) for m, v in s.metrics.items()}
                     for book, s in stitched.items()},
    }


def plot_stitched(stitched: Mapping[str, Stitched], policy: str, fold_starts: Sequence[Any],
                  path: Any) -> None:
    """Stitched out-of-sample equity of every book (the policy in black), log scale, with a
    dotted line where each fold's test window starts."""
    # The run report's axes (it selects the Agg backend): plain log ticks, concise dates.
    from jaxtrade.evaluate.report import _format_time_axis, _plain_log_axis, plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for book, s in stitched.items():
        dates = s.timestamps.astype("datetime64[us]").astype("O")
        kind = book.split("/", 1)[0]
        style = {"lw": 2.2, "color": "black", "zorder": 5} if book == policy else {
            "lw": 1.0, "alpha": 0.85, "ls": "--" if kind == "baseline" else "-"}
        ax.plot(dates, s.equity, label=book, **style)
    for start in fold_starts:
        ax.axvline(np.datetime64(start, "us").astype("O"), color="grey", lw=0.8, ls=":")
    _plain_log_axis(ax)
    _format_time_axis(ax)
    ax.set_ylabel("Equity, start = 1 (log scale)")
    ax.set_xlabel("Date (UTC)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="best", fontsize=7, framealpha=0.9)
    ax.set_title("Walk-forward out of sample: each fold retrained, test windows stitched")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
