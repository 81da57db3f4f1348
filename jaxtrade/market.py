"""Device-resident market tensors shared by every environment.

`MarketData` is a pytree of float32 device arrays built once and placed on the default
device once. Environments index into it with `dynamic_slice`; they never copy it, so adding
environments costs only per-env state.

Shapes (T bars, A assets, F features):
  features  [T, A, F]  normalized feature values (normalization fitted on the train split)
  open/high/low/close [T, A]  raw prices
  atr       [T, A]  Wilder ATR(14) in price units (causal), for sizing, stops and slippage
  volatility [T, A] rolling std of log returns (causal), for volatility-scaled slippage
  regime    [T, R]  forward-filtered regime probabilities (R = 3: trend, range, defensive);
                    uniform when regimes are not computed
  valid     [T, A]  1.0 where the asset has a real bar at t
  splits    [3, 2]  int32 [start, end) bar indices of train / validation / test
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class MarketMeta:
    """Host-side metadata. Compared by identity, so it is a cheap static pytree leaf."""

    feature_names: tuple[str, ...]
    symbols: tuple[str, ...]
    timestamps: np.ndarray  # datetime64[us], UTC, length T
    bars_per_year: float = 252.0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@struct.dataclass
class MarketData:
    features: jax.Array
    open: jax.Array
    high: jax.Array
    low: jax.Array
    close: jax.Array
    atr: jax.Array
    volatility: jax.Array
    regime: jax.Array
    valid: jax.Array
    splits: jax.Array
    meta: MarketMeta = struct.field(pytree_node=False)

    @property
    def num_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def num_assets(self) -> int:
        return int(self.close.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[2])

    def split_bounds(self, split: str) -> tuple[int, int]:
        """[start, end) bar indices of a named split."""
        idx = SPLIT_NAMES.index(split)
        start, end = np.asarray(self.splits[idx])
        return int(start), int(end)

    def nbytes(self) -> int:
        """Bytes held on device by the market tensors."""
        return int(sum(x.nbytes for x in jax.tree_util.tree_leaves(self)))


def from_arrays(
    close: np.ndarray,
    *,
    features: np.ndarray | None = None,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    atr: np.ndarray | None = None,
    volatility: np.ndarray | None = None,
    regime: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    splits: np.ndarray | None = None,
    feature_names: tuple[str, ...] | None = None,
    symbols: tuple[str, ...] | None = None,
    timestamps: np.ndarray | None = None,
    bars_per_year: float = 252.0,
) -> MarketData:
    """Build `MarketData` directly from arrays (tests, synthetic markets, scripted paths).

    `close` is [T] or [T, A]. Missing OHLC default to close (open of t = close of t-1);
    missing features default to one column of log returns; missing splits to one
    train split covering everything.
    """
    close = np.asarray(close, dtype=np.float64)
    if close.ndim == 1:
        close = close[:, None]

    def two_d(x: np.ndarray | None, default: np.ndarray) -> np.ndarray:
        if x is None:
            return default
        x = np.asarray(x, dtype=np.float64)
        return x[:, None] if x.ndim == 1 else x

    num_bars, num_assets = close.shape
    prev_close = np.concatenate([close[:1], close[:-1]], axis=0)
    open_ = two_d(open, prev_close)
    high_ = two_d(high, np.maximum(open_, close))
    low_ = two_d(low, np.minimum(open_, close))
    log_ret = np.diff(np.log(close), axis=0, prepend=np.log(close[:1]))
    if features is None:
        features = log_ret[:, :, None]
        feature_names = feature_names or ("log_return",)
    features = np.asarray(features, dtype=np.float64)
    if features.ndim == 2:
        features = features[:, None, :]
    if atr is None:
        atr = _wilder_atr(high_, low_, close)
    if volatility is None:
        volatility = _rolling_std(log_ret, 20)
    if regime is None:
        regime = np.full((num_bars, 3), 1.0 / 3.0)
    if valid is None:
        valid = np.ones_like(close)
    if splits is None:
        splits = np.array([[0, num_bars], [num_bars, num_bars], [num_bars, num_bars]])
    if timestamps is None:
        timestamps = np.datetime64("2000-01-01T00:00:00", "us") + np.arange(num_bars).astype(
            "timedelta64[D]"
        )
    f32 = lambda x: jnp.asarray(np.asarray(x), dtype=jnp.float32)
    return MarketData(
        features=f32(features),
        open=f32(open_),
        high=f32(high_),
        low=f32(low_),
        close=f32(close),
        atr=f32(two_d(atr, atr)),
        volatility=f32(two_d(volatility, volatility)),
        regime=f32(regime),
        valid=f32(valid),
        splits=jnp.asarray(np.asarray(splits), dtype=jnp.int32),
        meta=MarketMeta(
            feature_names=tuple(feature_names or (f"f{i}" for i in range(features.shape[2]))),
            symbols=tuple(symbols or (f"asset{i}" for i in range(num_assets))),
            timestamps=np.asarray(timestamps).astype("datetime64[us]"),
            bars_per_year=bars_per_year,
        ),
    )


def _wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    prev_close = np.concatenate([close[:1], close[:-1]], axis=0)
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close)))
    atr = np.empty_like(tr)
    atr[0] = tr[0]
    for t in range(1, len(tr)):
        # Before `period` bars the running mean of TR; afterwards Wilder's smoothing.
        n = min(t + 1, period)
        atr[t] = atr[t - 1] + (tr[t] - atr[t - 1]) / n
    return atr


def _rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    out = np.zeros_like(x)
    csum = np.cumsum(np.concatenate([np.zeros_like(x[:1]), x], axis=0), axis=0)
    csq = np.cumsum(np.concatenate([np.zeros_like(x[:1]), x * x], axis=0), axis=0)
    for t in range(1, len(x)):
        lo = max(0, t + 1 - window)
        n = t + 1 - lo
        mean = (csum[t + 1] - csum[lo]) / n
        var = (csq[t + 1] - csq[lo]) / n - mean**2
        out[t] = np.sqrt(np.maximum(var * n / max(n - 1, 1), 0.0))
    return out
