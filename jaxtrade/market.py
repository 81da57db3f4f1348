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


def _wilder_atr(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14
) -> np.ndarray:
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


# --- building from OHLCV frames ---------------------------------------------------------

ATR_WINDOW_BARS = 14
VOLATILITY_WINDOW_BARS = 20
NORMALIZATIONS = ("zscore", "robust", "none")


def build(
    frame: Any,
    features_spec: Any = None,
    split: Any = None,
    *,
    normalization: str | None = "zscore",
    clip: float | None = 5.0,
    regimes: bool = False,
    bars_per_year: float | None = None,
    normalizer: Any = None,
    regime_model: Any = None,
) -> MarketData:
    """Compute features, fit normalization on the train split only, stack into tensors.

    `frame` is canonical OHLCV (`jaxtrade.data.load_ohlcv`), one symbol or several (column
    `symbol`). Symbols are aligned on the union of their timestamps; `valid` marks the bars
    an asset really has, and at the others its prices are carried forward (before its first
    bar: its first prices), its features are 0. `split` is a `jaxtrade.data.Splits` over
    that timeline, or None for `make_splits(T)` (70 / 15 / 15, the CLI's default too). The
    normalizer (`normalization` "zscore" | "robust" | "none") is fitted on the valid bars of
    the train split pooled over assets; NaN warm-up values become 0. `regimes=True` fits the HMM of
    `jaxtrade.features.regimes` on the train bars and forward-filters every bar; otherwise
    the regime tensor is uniform. `atr` is Wilder ATR(14) and `volatility` the rolling std
    (20 bars, ddof=1) of log returns, both causal, in the same conventions as `from_arrays`.

    `meta.extra` holds what an export needs to reproduce the inputs: "feature_spec"
    (spec dict), "feature_names", "normalizer" (`Normalizer.to_dict()` or None), "splits",
    and "regime_model" (the fitted model's dict, when regimes=True).

    `normalizer` and `regime_model` (objects or their dicts, e.g. from a trained market's
    `meta.extra`) are applied instead of fitted: how a trained policy is evaluated on other
    bars with the statistics it was trained with.
    """
    import polars as pl

    from jaxtrade.data.calendar import infer_bars_per_year
    from jaxtrade.data.splits import Splits, make_splits
    from jaxtrade.errors import ConfigError
    from jaxtrade.features import FeatureSpec, Normalizer, compute, default_spec

    if normalization is None:
        normalization = "none"
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if features_spec is None:
        spec = default_spec()
    elif isinstance(features_spec, FeatureSpec):
        spec = features_spec
    else:
        spec = FeatureSpec.from_dict(features_spec)

    if "symbol" not in frame.columns:
        frame = frame.with_columns(pl.lit("asset0").alias("symbol"))
    # Asset order: first appearance in the input. Rows: time order (the per-symbol ATR and
    # volatility below run over rows in order).
    symbols = tuple(frame.get_column("symbol").cast(pl.String).unique(maintain_order=True))
    frame = frame.with_columns(pl.col("symbol").cast(pl.String)).sort(
        "timestamp", maintain_order=True
    )
    table = compute(frame, spec)
    names = [c for c in table.columns if c not in ("timestamp", "symbol")]
    timeline = frame.get_column("timestamp").unique().sort()
    num_bars, num_assets = timeline.len(), len(symbols)

    extras = frame.select(
        "timestamp",
        "symbol",
        _wilder_atr_expr(ATR_WINDOW_BARS).over("symbol").alias("__atr"),
        _volatility_expr(VOLATILITY_WINDOW_BARS).over("symbol").alias("__vol"),
    )
    wide = table.join(extras, on=["timestamp", "symbol"], how="left").join(
        frame.select("timestamp", "symbol", "open", "high", "low", "close"),
        on=["timestamp", "symbol"],
        how="left",
    )
    t_index = pl.DataFrame({"timestamp": timeline}).with_row_index("__t")
    wide = wide.join(t_index, on="timestamp", how="left")
    a_index = {s: i for i, s in enumerate(symbols)}
    t_idx = wide.get_column("__t").to_numpy().astype(np.int64)
    a_idx = np.array([a_index[s] for s in wide.get_column("symbol").cast(pl.String).to_list()])

    def place(values: np.ndarray) -> np.ndarray:
        out = np.full((num_bars, num_assets, *values.shape[1:]), np.nan)
        out[t_idx, a_idx] = values
        return out

    valid = np.zeros((num_bars, num_assets), dtype=bool)
    valid[t_idx, a_idx] = True
    features = place(wide.select(names).to_numpy().astype(np.float64))
    prices = {k: _carry(place(wide.get_column(k).to_numpy())) for k in ("open", "high", "low")}
    close = _carry(place(wide.get_column("close").to_numpy()))
    atr = np.nan_to_num(_carry(place(wide.get_column("__atr").to_numpy())))
    volatility = np.nan_to_num(_carry(place(wide.get_column("__vol").to_numpy())))

    if split is None:
        split = make_splits(num_bars)
    if not isinstance(split, Splits):
        raise ConfigError(f"split must be a jaxtrade.data.Splits or None, got {type(split)}")
    splits = split.as_array()
    if splits.max() > num_bars:
        raise ConfigError(f"split {split} reaches past the {num_bars} bars of the frame")
    train_start, train_end = (int(v) for v in splits[0])

    if normalizer is not None:
        normalizer = normalizer if isinstance(normalizer, Normalizer) else \
            Normalizer.from_dict(normalizer)
        if list(normalizer.feature_names) != list(names):
            raise ConfigError(f"the fitted normalizer has features {list(normalizer.feature_names)}"
                              f", the spec computes {names}")
        features = normalizer.transform(features)
    elif normalization != "none":
        normalizer = Normalizer.fit(
            features,
            (train_start, train_end),
            method=normalization,
            clip=clip,
            mask=valid,
            feature_names=tuple(names),
        )
        features = normalizer.transform(features)
    features = np.where(valid[:, :, None] & np.isfinite(features), features, 0.0)

    regime = np.full((num_bars, 3), 1.0 / 3.0)
    fitted_regimes = None
    if regimes or regime_model is not None:
        from jaxtrade.features.regimes import REGIME_COLUMNS, RegimeModel, fit_regimes

        if regime_model is not None:
            model = regime_model if isinstance(regime_model, RegimeModel) else \
                RegimeModel.from_dict(regime_model)
        else:
            train_times = timeline.slice(train_start, train_end - train_start)
            model = fit_regimes(frame.filter(pl.col("timestamp").is_in(train_times.implode())))
        probs = model.transform(frame).select(REGIME_COLUMNS)
        by_time = (
            pl.concat([frame.select("timestamp"), probs], how="horizontal")
            .group_by("timestamp")
            .agg(pl.col(REGIME_COLUMNS).mean())
        )
        aligned = pl.DataFrame({"timestamp": timeline}).join(by_time, on="timestamp", how="left")
        values = aligned.select(pl.col(REGIME_COLUMNS).forward_fill()).to_numpy()
        regime = np.where(np.isfinite(values), values, 1.0 / 3.0)
        fitted_regimes = model.to_dict()

    if bars_per_year is None:
        bars_per_year = infer_bars_per_year(frame.sort("symbol", "timestamp"))
    meta = MarketMeta(
        feature_names=tuple(names),
        symbols=symbols,
        timestamps=timeline.dt.replace_time_zone(None).to_numpy().astype("datetime64[us]"),
        bars_per_year=float(bars_per_year),
        extra={
            "feature_spec": spec.to_dict(),
            "feature_names": list(names),
            "normalizer": None if normalizer is None else normalizer.to_dict(),
            "splits": splits.tolist(),
            "regime_model": fitted_regimes,
        },
    )
    host = {
        "features": features,
        **prices,
        "close": close,
        "atr": atr,
        "volatility": volatility,
        "regime": regime,
        "valid": valid,
    }
    # One transfer for everything: the market is placed on the default device once.
    host = {k: np.asarray(v, dtype=np.float32) for k, v in host.items()}
    host["splits"] = splits.astype(np.int32)
    return MarketData(**jax.device_put(host), meta=meta)


def _carry(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along time per asset; leading NaN take the first real value."""
    out = x.copy()
    for a in range(out.shape[1]):
        col = out[:, a]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        idx = np.where(ok, np.arange(len(col)), 0)
        np.maximum.accumulate(idx, out=idx)
        filled = col[idx]
        filled[: int(np.argmax(ok))] = col[int(np.argmax(ok))]
        out[:, a] = filled
    return out


def _wilder_atr_expr(period: int) -> Any:
    """Polars form of `_wilder_atr`: running mean of TR for the first `period` bars, then
    Wilder's smoothing; TR of the first bar is high - low."""
    import polars as pl

    from jaxtrade.features.indicators import seeded_ewm

    prev = pl.col("close").shift(1).fill_null(pl.col("close"))
    tr = pl.max_horizontal(pl.col("high"), prev) - pl.min_horizontal(pl.col("low"), prev)
    n = pl.int_range(pl.len()) + 1
    running = tr.cum_sum() / n
    smoothed = seeded_ewm(tr, 1.0 / period, period - 1, tr.rolling_mean(period))
    return pl.when(n < period).then(running).otherwise(smoothed)


def _volatility_expr(window: int) -> Any:
    """Polars form of `_rolling_std` over log returns (the first return is 0)."""
    import polars as pl

    log_ret = (pl.col("close") / pl.col("close").shift(1)).log().fill_null(0.0)
    return log_ret.rolling_std(window, min_samples=2, ddof=1).fill_null(0.0)
