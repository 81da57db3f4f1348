"""Resampling against a direct per-bucket aggregation written with plain Python."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_data_loaders import make_bars

from jaxtrade.data import load_ohlcv, resample
from jaxtrade.errors import ConfigError


def direct_aggregate(frame: pl.DataFrame, hours: int) -> pl.DataFrame:
    """Bucket = floor(epoch hours / hours); first open, max high, min low, last close, sum vol."""
    buckets: OrderedDict[int, dict] = OrderedDict()
    for r in frame.sort("timestamp").iter_rows(named=True):
        key = int(r["timestamp"].timestamp()) // (hours * 3600)
        b = buckets.get(key)
        if b is None:
            buckets[key] = {
                "open": r["open"],
                "high": r["high"],
                "low": r["low"],
                "close": r["close"],
                "volume": r["volume"],
                "last": r["timestamp"],
            }
        else:
            b["high"] = max(b["high"], r["high"])
            b["low"] = min(b["low"], r["low"])
            b["close"] = r["close"]
            b["volume"] += r["volume"]
            b["last"] = r["timestamp"]
    keys = list(buckets)
    # The last bucket is kept only if the hourly bars reach its end.
    last_end = datetime.fromtimestamp((keys[-1] + 1) * hours * 3600, tz=timezone.utc)
    if buckets[keys[-1]]["last"] + timedelta(hours=1) < last_end:
        keys = keys[:-1]
    return pl.DataFrame(
        {
            "timestamp": pl.Series([k * hours * 3600 * 1_000_000 for k in keys]).cast(
                pl.Datetime("us", "UTC")
            ),
            **{
                c: [buckets[k][c] for k in keys] for c in ("open", "high", "low", "close", "volume")
            },
        }
    )


@pytest.fixture(scope="module")
def eurusd() -> pl.DataFrame:
    return load_ohlcv("eurusd_1h")


def test_hourly_to_4h_and_1d_match_direct_aggregation(eurusd: pl.DataFrame) -> None:
    four = resample(eurusd, "4h")
    day = resample(eurusd, "1d")
    assert_frame_equal(four, direct_aggregate(eurusd, 4))
    assert_frame_equal(day, direct_aggregate(eurusd, 24), check_exact=False, rtol=1e-12)
    # Resampling in steps gives the same daily bars as at once.
    assert_frame_equal(resample(four, "1d"), day, check_exact=False, rtol=1e-12)
    # The source ends on Friday 21:00 (bar ending 22:00): that day's bucket is partial.
    assert day["timestamp"][-1].isoformat() == "2017-12-28T00:00:00+00:00"
    kept = resample(eurusd, "1d", drop_partial=False)
    assert kept.height == day.height + 1
    last = eurusd.filter(pl.col("timestamp").dt.date() == kept["timestamp"][-1].date())
    assert kept["close"][-1] == last["close"][-1] and kept["volume"][-1] == last["volume"].sum()


def test_complete_last_bucket_is_kept() -> None:
    frame = make_bars(48)  # starts at midnight, two full days of hourly bars
    day = resample(frame, "1d")
    assert day.height == 2
    assert_frame_equal(day, direct_aggregate(frame, 24), check_exact=False, rtol=1e-12)


def test_multi_symbol_resample_is_per_symbol(eurusd: pl.DataFrame) -> None:
    a = eurusd.head(500)
    b = a.with_columns([pl.col(c) * 2 for c in ("open", "high", "low", "close")])
    both = pl.concat(
        [a.with_columns(pl.lit("A").alias("symbol")), b.with_columns(pl.lit("B").alias("symbol"))]
    ).sort("timestamp", "symbol")
    out = resample(both, "4h")
    assert out.columns == both.columns
    assert out.select("timestamp", "symbol").equals(
        out.select("timestamp", "symbol").sort("timestamp", "symbol")
    )
    assert_frame_equal(out.filter(pl.col("symbol") == "A").drop("symbol"), resample(a, "4h"))
    assert_frame_equal(out.filter(pl.col("symbol") == "B").drop("symbol"), resample(b, "4h"))


def test_resample_refuses_finer_period(eurusd: pl.DataFrame) -> None:
    with pytest.raises(ConfigError, match="longer than the bar spacing"):
        resample(eurusd, "30m")
    with pytest.raises(ConfigError, match="resampling period"):
        resample(eurusd, "banana")
