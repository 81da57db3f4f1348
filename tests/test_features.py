"""Indicator values against the `ta` package and closed forms, on the embedded real data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest

from jaxtrade import features as F
from jaxtrade.data import load_ohlcv
from jaxtrade.features.cross_asset import turbulence

ta = pytest.importorskip("ta")

# Recursive indicators are seeded differently by TA-Lib (ours) and `ta`; the difference
# decays geometrically and is below float noise after this many bars.
WARMUP = 500


@pytest.fixture(scope="module")
def sp500() -> pl.DataFrame:
    return load_ohlcv("sp500_daily")


@pytest.fixture(scope="module")
def sp500_features(sp500: pl.DataFrame) -> pl.DataFrame:
    return F.compute(sp500, F.default_spec())


def _close(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-6) -> None:
    ours, ref = np.asarray(ours, float), np.asarray(ref, float)
    scale = np.nanmedian(np.abs(ref))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * 1e-3 * scale, equal_nan=False)


def _ta_reference(pdf: pd.DataFrame) -> dict[str, pd.Series]:
    h, low, c = pdf.high, pdf.low, pdf.close
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macd = ta.trend.MACD(c, 26, 12, 9)
        bb = ta.volatility.BollingerBands(c, 20, 2)
        adx = ta.trend.ADXIndicator(h, low, c, 14)
        stoch = ta.momentum.StochasticOscillator(h, low, c, 14, 3)
        return {
            "rsi_14": ta.momentum.RSIIndicator(c, 14).rsi(),
            "rsi_7": ta.momentum.RSIIndicator(c, 7).rsi(),
            "macd_12_26_9": macd.macd(),
            "macd_signal_12_26_9": macd.macd_signal(),
            "macd_hist_12_26_9": macd.macd_diff(),
            "bb_pctb_20": bb.bollinger_pband(),
            "bb_width_20": bb.bollinger_wband() / 100.0,  # `ta` reports percent
            "atr_14": ta.volatility.AverageTrueRange(h, low, c, 14).average_true_range(),
            "adx_14": adx.adx(),
            "plus_di_14": adx.adx_pos(),
            "minus_di_14": adx.adx_neg(),
            "stoch_k_14": stoch.stoch(),
            "stoch_d_14_3": stoch.stoch_signal(),
            "willr_14": ta.momentum.WilliamsRIndicator(h, low, c, 14).williams_r(),
            "cci_20": ta.trend.CCIIndicator(h, low, c, 20).cci(),
        }


def test_indicators_match_ta_after_warmup(sp500: pl.DataFrame) -> None:
    spec = [
        {"name": "rsi", "window": 14},
        {"name": "rsi", "window": 7},
        {"name": "macd"},
        {"name": "bollinger"},
        {"name": "atr"},
        {"name": "adx"},
        {"name": "stochastic"},
        {"name": "williams_r"},
        {"name": "cci"},
    ]
    ours = F.compute(sp500, spec)
    for name, ref in _ta_reference(sp500.to_pandas()).items():
        # `ta` leaves its last ADX/DI bar at 0 (its loops stop one short): skip that bar.
        _close(ours[name].to_numpy()[WARMUP:-1], ref.to_numpy()[WARMUP:-1])


def test_talib_warmup_lengths(sp500_features: pl.DataFrame) -> None:
    """First non-null row of each indicator = TA-Lib's lookback."""
    expected = {
        "rsi_14": 14,
        "atr_14": 14,
        "plus_di_14": 14,
        "adx_14": 27,
        "macd_12_26_9": 25,
        "macd_signal_12_26_9": 33,
        "ema_ratio_12": 11,
        "bb_pctb_20": 19,
        "stoch_k_14": 13,
        "stoch_d_14_3": 15,
        "cci_20": 19,
        "willr_14": 13,
    }
    for name, lookback in expected.items():
        col = sp500_features[name]
        assert col.head(lookback).null_count() == lookback, name
        assert col[lookback] is not None, name


def test_wilder_and_ema_seeding_closed_form(sp500: pl.DataFrame) -> None:
    """RSI, ATR and EMA recursions written out as loops, seeded the TA-Lib way."""
    ours = F.compute(sp500, [{"name": "rsi"}, {"name": "atr"}, {"name": "ema_ratio"}])
    c, h, low = (sp500[k].to_numpy() for k in ("close", "high", "low"))
    n = 14
    diff = np.diff(c)
    gain, loss = np.maximum(diff, 0), np.maximum(-diff, 0)
    g, lo = gain[:n].mean(), loss[:n].mean()
    rsi = [100 * g / (g + lo)]
    for t in range(n, len(diff)):
        g, lo = g + (gain[t] - g) / n, lo + (loss[t] - lo) / n
        rsi.append(100 * g / (g + lo))
    _close(ours["rsi_14"].to_numpy()[n:], rsi, rtol=1e-10)

    tr = np.maximum(h[1:], c[:-1]) - np.minimum(low[1:], c[:-1])
    a = tr[:n].mean()
    atr = [a]
    for t in range(n, len(tr)):
        a = a + (tr[t] - a) / n
        atr.append(a)
    _close(ours["atr_14"].to_numpy()[n:], atr, rtol=1e-10)

    w = 12
    e = c[:w].mean()
    ema = [e]
    for t in range(w, len(c)):
        e = e + 2.0 / (w + 1) * (c[t] - e)
        ema.append(e)
    _close(ours["ema_ratio_12"].to_numpy()[w - 1 :], c[w - 1 :] / np.array(ema) - 1, rtol=1e-10)


def test_obv_follows_talib_on_ties(sp500: pl.DataFrame) -> None:
    """OBV increments: +v up, -v down, 0 on an unchanged close (`ta` adds +v there)."""
    obv = F.compute(sp500, [{"name": "obv"}])["obv"].to_numpy()
    c, v = sp500["close"].to_numpy(), sp500["volume"].to_numpy()
    assert obv[0] == v[0]
    np.testing.assert_allclose(np.diff(obv), np.sign(np.diff(c)) * v[1:], rtol=1e-9)
    ref = ta.volume.OnBalanceVolumeIndicator(
        sp500["close"].to_pandas(), sp500["volume"].to_pandas()
    )
    moved = np.diff(c) != 0
    assert (~moved).sum() > 0  # the real data has unchanged closes
    np.testing.assert_allclose(np.diff(obv)[moved], np.diff(ref.on_balance_volume())[moved])


def test_closed_forms(sp500: pl.DataFrame, sp500_features: pl.DataFrame) -> None:
    pdf = sp500.to_pandas()
    o, h, low, c, v = (pdf[k] for k in ("open", "high", "low", "close", "volume"))
    f = sp500_features.to_pandas()
    lr = np.log(c / c.shift(1))
    checks = {
        "ret_5": c / c.shift(5) - 1,
        "logret_20": np.log(c / c.shift(20)),
        "sma_ratio_50": c / c.rolling(50).mean() - 1,
        "rvol_20": lr.rolling(20).std(ddof=1),
        "parkinson_vol_20": np.sqrt((np.log(h / low) ** 2).rolling(20).mean() / (4 * math.log(2))),
        "gk_vol_20": np.sqrt(
            (0.5 * np.log(h / low) ** 2 - (2 * math.log(2) - 1) * np.log(c / o) ** 2)
            .rolling(20)
            .mean()
        ),
        "zscore_close_20": (c - c.rolling(20).mean()) / c.rolling(20).std(ddof=1),
        "zscore_log_volume_20": (np.log(v + 1) - np.log(v + 1).rolling(20).mean())
        / np.log(v + 1).rolling(20).std(ddof=1),
        "volume_roc_10": v / v.shift(10) - 1,
        "candle_body": (c - o) / (h - low),
        "candle_upper_wick": (h - np.maximum(o, c)) / (h - low),
        "candle_lower_wick": (np.minimum(o, c) - low) / (h - low),
        "candle_range": (h - low) / c,
        "dist_high_20": c / h.rolling(20).max() - 1,
        "dist_low_100": c / low.rolling(100).min() - 1,
        "obv_slope_20": (np.sign(c.diff()) * v).rolling(20).sum() / v.rolling(20).sum(),
    }
    for name, ref in checks.items():
        ours = f[name].to_numpy(dtype=float)
        ref = ref.to_numpy(dtype=float)
        assert np.array_equal(np.isnan(ours), np.isnan(ref)), name
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-8, atol=1e-12, err_msg=name)
    # Rolling skew: population (biased) skewness over the last 60 log returns.
    x = lr.to_numpy()
    for t in (100, 2000, len(x) - 1):
        w = x[t - 59 : t + 1]
        d = w - w.mean()
        expected = (d**3).mean() / (d**2).mean() ** 1.5
        assert f["skew_60"][t] == pytest.approx(expected, rel=1e-8)


def test_calendar_features() -> None:
    ts = pl.datetime_range(
        pl.datetime(2024, 1, 1, 0, 0, time_zone="UTC"),  # a Monday
        pl.datetime(2024, 1, 8, 23, 0, time_zone="UTC"),
        "1h",
        eager=True,
    )
    n = ts.len()
    frame = pl.DataFrame(
        {"timestamp": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    ).with_columns(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close"))
    out = F.compute(frame, [{"name": "calendar"}])
    hours = np.arange(n) % 24
    days = (np.arange(n) // 24) % 7
    np.testing.assert_allclose(out["hour_sin"], np.sin(2 * np.pi * hours / 24), atol=1e-12)
    np.testing.assert_allclose(out["hour_cos"], np.cos(2 * np.pi * hours / 24), atol=1e-12)
    np.testing.assert_allclose(out["dow_sin"], np.sin(2 * np.pi * days / 7), atol=1e-12)
    np.testing.assert_allclose(out["dow_cos"], np.cos(2 * np.pi * days / 7), atol=1e-12)


def _multi_asset(sp500: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """sp500 plus two correlated random-walk assets, one of them missing some bars."""
    rng = np.random.default_rng(seed)
    base = sp500.head(1500)
    r0 = np.diff(np.log(base["close"].to_numpy()), prepend=np.log(base["close"][0]))
    frames = [base.with_columns(pl.lit("SPX").alias("symbol"))]
    for name, beta in (("AAA", 0.8), ("BBB", -0.3)):
        r = beta * r0 + rng.normal(0, 0.01, base.height)
        close = 50 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[50.0], close[:-1]])
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, base.height)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, base.height)))
        f = pl.DataFrame(
            {
                "timestamp": base["timestamp"],
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": rng.lognormal(10, 0.3, base.height),
                "symbol": name,
            }
        )
        if name == "BBB":
            f = f.filter(pl.int_range(pl.len()) % 17 != 5)
        frames.append(f.select(frames[0].columns))
    return pl.concat(frames).sort("timestamp", "symbol")


def test_cross_asset_features(sp500: pl.DataFrame) -> None:
    frame = _multi_asset(sp500)
    out = F.compute(frame, [{"name": "cross_corr", "window": 60}, {"name": "turbulence"}])
    assert out["symbol"].to_list() == frame["symbol"].to_list()  # same rows, same order
    # Reference correlation with pandas on the AAA rows.
    wide = (
        frame.with_columns(
            (pl.col("close") / pl.col("close").shift(1)).log().over("symbol").alias("r")
        )
        .pivot(on="symbol", index="timestamp", values="r")
        .sort("timestamp")
        .to_pandas()
        .set_index("timestamp")
    )
    others = wide[["SPX", "BBB"]].mean(axis=1)  # mean over the others that have a bar
    ref = wide["AAA"].rolling(60).corr(others)
    ours = out.filter(pl.col("symbol") == "AAA")["cross_corr_60"].to_numpy()
    ok = ~np.isnan(ref.to_numpy())
    np.testing.assert_allclose(ours[ok], ref.to_numpy()[ok], rtol=1e-8)
    # Turbulence: explicit mean / covariance of the previous 60 bars, one bar at a time.
    r = np.nan_to_num(wide.to_numpy())
    turb = out.filter(pl.col("symbol") == "SPX")["turbulence_60"].to_numpy()
    for t in (60, 400, 1499):
        past = r[t - 60 : t]
        d = r[t] - past.mean(axis=0)
        expected = d @ np.linalg.solve(np.cov(past, rowvar=False), d)
        assert turb[t] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(turbulence(r, 60)[:60]).all()
    # Single-asset frames skip cross-asset features.
    single = F.compute(sp500.head(300), [{"name": "turbulence"}, {"name": "rsi"}])
    assert single.columns == ["timestamp", "rsi_14"]


def test_multi_timeframe_values_are_coarse_indicators() -> None:
    frame = load_ohlcv("eurusd_1h").head(2000)
    out = F.compute(frame, [{"name": "rsi", "window": 14, "timeframe": "4h"}])
    coarse = frame.group_by_dynamic("timestamp", every="4h").agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
    )
    coarse_rsi = F.compute(coarse, [{"name": "rsi"}])["rsi_14"].to_numpy()
    close_time = coarse["timestamp"].to_numpy() + np.timedelta64(4, "h")
    fine_close = frame["timestamp"].to_numpy() + np.timedelta64(1, "h")
    idx = np.searchsorted(close_time, fine_close, side="right") - 1
    expected = np.where(idx >= 0, coarse_rsi[np.maximum(idx, 0)], np.nan)
    np.testing.assert_allclose(out["rsi_14_4h"].to_numpy(), expected, rtol=1e-12)
    # A fine bar never sees the coarse bar it belongs to before that bar has closed.
    assert np.all(close_time[idx[idx >= 0]] <= fine_close[idx >= 0])


def test_default_set_size_and_types(sp500_features: pl.DataFrame, sp500: pl.DataFrame) -> None:
    cols = [c for c in sp500_features.columns if c != "timestamp"]
    assert len(cols) >= 60
    assert sp500_features.height == sp500.height
    assert all(sp500_features[c].dtype == pl.Float64 for c in cols)
    assert sp500_features["timestamp"].equals(sp500["timestamp"])
    # After the longest warm-up nothing is missing on clean real data.
    assert sp500_features.slice(250).null_count().sum_horizontal().item() == 0
