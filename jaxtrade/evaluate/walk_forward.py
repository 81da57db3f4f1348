"""Walk-forward analysis: train on each fold's training window, test on the window after it.

Folds come from `jaxtrade.data.splits.walk_forward` (rolling or anchored, with an embargo
between windows; test windows tile the timeline without overlapping). For every fold the
market's split bounds are replaced by the fold's, `train_fn(fold, env, env_params)` returns
a policy trained on that fold's train (and validation) bars only, and the policy is
backtested on the fold's test window. The out-of-sample segments are stitched, oldest
first, into one equity curve that compounds from 1.0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
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
) -> WalkForwardResult:
    """Train and test every fold, stitch the test windows."""
    folds = list(folds)
    check_folds(folds)
    key = jax.random.PRNGKey(0) if key is None else key
    results = []
    for k, fold in enumerate(folds):
        params = with_splits(env_params, fold)
        policy_fn = train_fn(fold, env, params)
        results.append(
            backtest(env, params, policy_fn, split="test", key=jax.random.fold_in(key, k))
        )
    returns = np.concatenate([r.returns[1:] for r in results])
    positions = np.concatenate([r.target_positions[:-1] for r in results])
    timestamps = np.concatenate([r.timestamps[1:] for r in results])
    bars_per_year = results[0].bars_per_year
    return WalkForwardResult(
        folds=folds,
        fold_results=results,
        timestamps=timestamps,
        returns=returns,
        equity=np.cumprod(1.0 + returns),
        positions=positions,
        metrics=metrics_lib.metrics_dict(returns, bars_per_year, positions),
    )


def check_folds(folds: Sequence[Splits]) -> None:
    """Raise if a test window overlaps another fold's test window or its own train window."""
    for k, fold in enumerate(folds):
        if fold.train[1] > fold.test[0] or (
            fold.validation[1] > fold.validation[0] and fold.validation[1] > fold.test[0]
        ):
            raise ValueError(f"fold {k}: training data reaches into its test window")
        if k and folds[k - 1].test[1] > fold.test[0]:
            raise ValueError(f"fold {k}: test window overlaps fold {k - 1}'s test window")
