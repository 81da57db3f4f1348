"""Causality of every feature: changing or removing bars after t changes nothing at <= t."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from jaxtrade import features as F
from jaxtrade.data import load_ohlcv

KEYS = ("timestamp", "symbol")


def _spec_with_timeframes(*timeframes: str) -> F.FeatureSpec:
    """The default set, the options it leaves out, and some entries on coarser bars."""
    entries = F.default_spec().to_dict()["features"] + [
        {"name": "zscore", "column": "volume", "windows": [10]},
        {"name": "zscore", "column": "log_return", "windows": [10]},
        {"name": "macd", "fast": 5, "slow": 10, "signal": 3, "relative": False},
    ]
    for tf in timeframes:
        entries += [
            {"name": "rsi", "window": 14, "timeframe": tf},
            {"name": "macd", "relative": True, "timeframe": tf},
            {"name": "atr", "timeframe": tf},
            {"name": "realized_vol", "windows": [5], "timeframe": tf},
        ]
    return F.FeatureSpec.from_dict(entries)


def _multi_asset(base: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """`base` plus two random-walk assets with their own gaps (unaligned timestamps)."""
    rng = np.random.default_rng(seed)
    frames = [base.with_columns(pl.lit("BASE").alias("symbol"))]
    for i, name in enumerate(("AAA", "BBB")):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, base.height)))
        open_ = np.concatenate([[50.0], close[:-1]])
        f = pl.DataFrame(
            {
                "timestamp": base["timestamp"],
                "open": open_,
                "high": np.maximum(open_, close) * 1.002,
                "low": np.minimum(open_, close) * 0.998,
                "close": close,
                "volume": rng.lognormal(10, 0.3, base.height),
                "symbol": name,
            }
        ).filter(pl.int_range(pl.len()) % (11 + i) != 3)
        frames.append(f.select(frames[0].columns))
    return pl.concat(frames).sort("timestamp", "symbol")


def _perturb_after(frame: pl.DataFrame, cut: dt.datetime, seed: int) -> pl.DataFrame:
    """Rescale each later bar's prices (consistently, so high >= open/close >= low) and volume."""
    rng = np.random.default_rng(seed)
    later = pl.col("timestamp") > cut
    price_factor = pl.Series(np.exp(rng.normal(0, 0.05, frame.height)))
    volume_factor = pl.Series(rng.uniform(0.2, 5.0, frame.height))
    return frame.with_columns(
        *[
            pl.when(later).then(pl.col(c) * price_factor).otherwise(pl.col(c))
            for c in ("open", "high", "low", "close")
        ],
        pl.when(later).then(pl.col("volume") * volume_factor).otherwise(pl.col("volume")),
    )


def _prefix(table: pl.DataFrame, cut: dt.datetime) -> pl.DataFrame:
    return table.filter(pl.col("timestamp") <= cut)


def _assert_same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns
    assert a.height == b.height
    for c in a.columns:
        if c in KEYS:
            assert a[c].equals(b[c]), c
            continue
        np.testing.assert_allclose(
            a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12, atol=0, equal_nan=True, err_msg=c
        )


def _check_causal(frame: pl.DataFrame, spec: F.FeatureSpec, cut_rows: tuple[int, ...]) -> None:
    full = F.compute(frame, spec)
    times = frame["timestamp"].unique().sort()
    for i, row in enumerate(cut_rows):
        cut = times[row]
        # Removing every later bar...
        _assert_same(_prefix(F.compute(_prefix(frame, cut), spec), cut), _prefix(full, cut))
        # ...or changing them leaves every column at <= cut unchanged...
        perturbed = F.compute(_perturb_after(frame, cut, seed=i), spec)
        _assert_same(_prefix(perturbed, cut), _prefix(full, cut))
        # ...while the later rows do change (the perturbation is not a no-op).
        later = pl.col("timestamp") > cut
        changed = [
            c
            for c in full.columns
            if c not in KEYS
            and not np.allclose(
                full.filter(later)[c].to_numpy(),
                perturbed.filter(later)[c].to_numpy(),
                equal_nan=True,
            )
        ]
        assert len(changed) > len(full.columns) // 2


def test_the_checks_cover_every_registered_feature() -> None:
    names = {e.name for e in _spec_with_timeframes().entries}
    assert names == {f["name"] for f in F.list_features()}
    zscore_sources = {e.params["column"] for e in _spec_with_timeframes().entries
                      if e.name == "zscore"}  # fmt: skip
    assert zscore_sources == {"close", "volume", "log_volume", "log_return"}


def test_every_feature_is_causal_single_asset_daily() -> None:
    frame = load_ohlcv("sp500_daily").head(900)
    spec = _spec_with_timeframes("1w")
    _check_causal(frame, spec, cut_rows=(30, 250, 601))


def test_every_feature_is_causal_intraday_multi_timeframe() -> None:
    frame = load_ohlcv("eurusd_1h").head(1500)
    spec = _spec_with_timeframes("4h", "1d")
    _check_causal(frame, spec, cut_rows=(100, 777, 1203))


def test_every_feature_is_causal_multi_asset() -> None:
    frame = _multi_asset(load_ohlcv("sp500_daily").head(700))
    spec = _spec_with_timeframes("1w")
    assert {"cross_corr_60", "turbulence_60"} <= set(F.compute(frame.head(30), spec).columns)
    _check_causal(frame, spec, cut_rows=(90, 404))


def test_the_check_catches_lookahead() -> None:
    """The comparison above fails on a column that reads the next bar."""
    frame = load_ohlcv("sp500_daily").head(200)
    cut = frame["timestamp"][100]

    def leaky(f: pl.DataFrame) -> pl.DataFrame:
        return f.select("timestamp", pl.col("close").shift(-1).alias("next_close"))

    with pytest.raises(AssertionError):
        _assert_same(_prefix(leaky(_perturb_after(frame, cut, 0)), cut), _prefix(leaky(frame), cut))
