"""Loader round trips: every supported layout written by hand, read back to the same bars."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from jaxtrade.data import convert, list_datasets, load_ohlcv, save, validate
from jaxtrade.errors import ConfigError, DataError

START = datetime(2021, 3, 1, 0, 0, tzinfo=timezone.utc)


def make_bars(
    num_bars: int = 120,
    seed: int = 0,
    step: timedelta = timedelta(hours=1),
    start: datetime = START,
) -> pl.DataFrame:
    """A valid canonical frame built independently of the loaders (numpy random walk)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, num_bars)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, num_bars))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, num_bars))
    volume = rng.integers(1, 10_000, num_bars).astype(float)
    stamps = [start + i * step for i in range(num_bars)]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(stamps, dtype=pl.Datetime("us", "UTC")),
            "open": np.round(open_, 6),
            "high": np.round(high, 6),
            "low": np.round(low, 6),
            "close": np.round(close, 6),
            "volume": volume,
        }
    )


def write_lines(path: Path, header: str | None, rows: list[str]) -> Path:
    path.write_text(("" if header is None else header + "\n") + "\n".join(rows) + "\n")
    return path


def ohlcv_cells(r: dict) -> str:
    return f"{r['open']!r},{r['high']!r},{r['low']!r},{r['close']!r},{r['volume']!r}"


def test_generic_csv_with_mapping_offsets_and_semicolons(tmp_path: Path) -> None:
    ref = make_bars()
    # Local time at +02:00: the loader must convert to UTC.
    rows = [
        f"{(r['timestamp'] + timedelta(hours=2)).strftime('%Y-%m-%dT%H:%M:%S')}+02:00;"
        + ohlcv_cells(r).replace(",", ";")
        + ";XYZ"
        for r in ref.iter_rows(named=True)
    ]
    path = write_lines(tmp_path / "bars.csv", "When;PxO;PxH;PxL;PxC;Qty;Venue", rows)
    mapping = {
        "timestamp": "When",
        "open": "PxO",
        "high": "PxH",
        "low": "PxL",
        "close": "PxC",
        "volume": "Qty",
    }
    assert_frame_equal(load_ohlcv(path, columns=mapping), ref)


def test_generic_csv_auto_detected_names_and_naive_iso(tmp_path: Path) -> None:
    ref = make_bars()
    rows = [
        f"{r['timestamp']:%Y-%m-%d %H:%M:%S},{ohlcv_cells(r)}" for r in ref.iter_rows(named=True)
    ]
    path = write_lines(tmp_path / "bars.csv", "Open Time,OPEN,High,low,Close,Vol", rows)
    assert_frame_equal(load_ohlcv(path), ref)
    # A mapping that names a column the file lacks is a clear error.
    with pytest.raises(DataError, match="missing column 'Last'"):
        load_ohlcv(path, columns={"close": "Last"})


@pytest.mark.parametrize("date_style", ["iso", "us"])
def test_yahoo_layout(tmp_path: Path, date_style: str) -> None:
    ref = make_bars(step=timedelta(days=1), start=datetime(1999, 1, 4, tzinfo=timezone.utc))
    fmt = "%Y-%m-%d" if date_style == "iso" else "%-m/%-d/%Y"
    rows = []
    for r in ref.iter_rows(named=True):
        adj = r["close"] * 0.5  # a 2:1 split-style factor, exact in binary
        rows.append(
            f"{r['timestamp'].strftime(fmt)},{r['open']!r},{r['high']!r},{r['low']!r},"
            f"{r['close']!r},{adj!r},{r['volume']!r}"
        )
    path = write_lines(tmp_path / "SPY.csv", "Date,Open,High,Low,Close,Adj Close,Volume", rows)
    assert_frame_equal(load_ohlcv(path), ref)
    adjusted = load_ohlcv(path, adjust=True)
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(adjusted[col].to_numpy(), ref[col].to_numpy() * 0.5, rtol=1e-15)


def test_bars_without_volume_load_with_volume_zero(tmp_path: Path) -> None:
    """FX and many crypto exports have no volume column; they were refused."""
    ref = make_bars()
    rows = [f"{r['timestamp'].isoformat()},{r['open']!r},{r['high']!r},{r['low']!r},"
            f"{r['close']!r}" for r in ref.iter_rows(named=True)]
    path = write_lines(tmp_path / "eurusd.csv", "time,open,high,low,close", rows)
    assert_frame_equal(load_ohlcv(path), ref.with_columns(volume=pl.lit(0.0)))


def test_yahoo_file_with_only_adj_close_is_a_close_only_series(tmp_path: Path) -> None:
    ref = make_bars(step=timedelta(days=1))
    rows = [f"{r['timestamp']:%Y-%m-%d},{r['close']!r},{r['volume']!r}"
            for r in ref.iter_rows(named=True)]
    path = write_lines(tmp_path / "SPY.csv", "Date,Adj Close,Volume", rows)
    flat = ref.with_columns(open=pl.col("close"), high=pl.col("close"), low=pl.col("close"))
    assert_frame_equal(load_ohlcv(path), flat)
    assert_frame_equal(load_ohlcv(path, adjust=True), flat)
    # Unadjusted open/high/low beside an adjusted close cannot be reconciled without Close.
    rows = [f"{r['timestamp']:%Y-%m-%d},{r['open']!r},{r['high']!r},{r['low']!r},"
            f"{r['close']!r}" for r in ref.iter_rows(named=True)]
    path = write_lines(tmp_path / "QQQ.csv", "Date,Open,High,Low,Adj Close", rows)
    with pytest.raises(DataError, match="has 'Adj Close' but no Close"):
        load_ohlcv(path)


@pytest.mark.parametrize("unit,scale", [("ms", 1_000), ("us", 1_000_000)])
def test_binance_klines_without_header(tmp_path: Path, unit: str, scale: int) -> None:
    ref = make_bars()
    rows = []
    for r in ref.iter_rows(named=True):
        t = int(r["timestamp"].timestamp()) * scale
        close_t = t + 3600 * scale - 1
        rows.append(f"{t},{ohlcv_cells(r)},{close_t},123.4,17,1.5,2.5,0")
    path = write_lines(tmp_path / "BTCUSDT-1h-2021-03.csv", None, rows)
    assert_frame_equal(load_ohlcv(path), ref)


def test_compact_dates_are_not_epochs(tmp_path: Path) -> None:
    ref = make_bars(30, step=timedelta(days=1), start=datetime(2020, 1, 1, tzinfo=timezone.utc))
    rows = [f"{r['timestamp']:%Y%m%d},{ohlcv_cells(r)}" for r in ref.iter_rows(named=True)]
    path = write_lines(tmp_path / "d.csv", "date,open,high,low,close,volume", rows)
    assert_frame_equal(load_ohlcv(path), ref)


def test_local_timestamps_with_timezone_option(tmp_path: Path) -> None:
    # New York is UTC-5 in January and UTC-4 from 2021-03-14 (daylight saving).
    rows = [
        "2021-01-04 09:30:00,10.0,11.0,9.0,10.5,100",
        "2021-03-15 09:30:00,10.0,11.0,9.0,10.5,100",
    ]
    path = write_lines(tmp_path / "ny.csv", "time,open,high,low,close,volume", rows)
    stamps = load_ohlcv(path, timezone="America/New_York")["timestamp"].to_list()
    assert [t.isoformat() for t in stamps] == [
        "2021-01-04T14:30:00+00:00",
        "2021-03-15T13:30:00+00:00",
    ]
    # 02:30 on 2021-03-14 does not exist in New York: the row is named.
    bad = write_lines(
        tmp_path / "gap.csv",
        "time,open,high,low,close,volume",
        [rows[0], "2021-03-14 02:30:00,10.0,11.0,9.0,10.5,100"],
    )
    with pytest.raises(DataError, match=r"gap\.csv, row 2: cannot parse timestamp"):
        load_ohlcv(bad, timezone="America/New_York")


def test_day_first_timestamps(tmp_path: Path) -> None:
    ref = make_bars()
    # Day 13+ would be invalid month-first, so the bars must start on a day <= 12 to make the
    # format ambiguous in the first rows and the test meaningful.
    rows = [
        f"{r['timestamp']:%d.%m.%Y %H:%M:%S}.000,{ohlcv_cells(r)}"
        for r in ref.iter_rows(named=True)
    ]
    path = write_lines(tmp_path / "eurusd.csv", "Time,Open,High,Low,Close,Volume", rows)
    assert_frame_equal(load_ohlcv(path), ref)


def test_parquet_with_other_names_and_naive_timestamps(tmp_path: Path) -> None:
    ref = make_bars()
    other = ref.select(
        pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("ns").alias("Date"),
        pl.col("open").alias("o"),
        pl.col("high").alias("h"),
        pl.col("low").alias("l"),
        pl.col("close").alias("c"),
        pl.col("volume").cast(pl.Int64).alias("v"),
    )
    other.write_parquet(tmp_path / "bars.parquet")
    assert_frame_equal(load_ohlcv(tmp_path / "bars.parquet"), ref)


def test_save_and_convert_round_trip_csv_parquet(tmp_path: Path) -> None:
    ref = make_bars()
    (csv_path,) = save(ref, tmp_path / "a.csv")
    assert_frame_equal(load_ohlcv(csv_path), ref)
    (pq_path,) = convert(csv_path, tmp_path / "b.parquet")
    assert_frame_equal(pl.read_parquet(pq_path), ref)
    (back,) = convert(pq_path, tmp_path / "c.csv")
    assert_frame_equal(load_ohlcv(back), ref)


def _two_symbols(tmp_path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    a = make_bars(100, seed=1)
    # b starts 10 bars later and misses 3 bars in the middle.
    b = make_bars(100, seed=2, start=START + timedelta(hours=10))
    b = b.filter(~pl.col("timestamp").is_in(b["timestamp"][40:43].implode()))
    folder = tmp_path / "universe"
    folder.mkdir()
    a.write_parquet(folder / "AAA.parquet")
    rows = [f"{r['timestamp'].isoformat()},{ohlcv_cells(r)}" for r in b.iter_rows(named=True)]
    write_lines(folder / "BBB.csv", "timestamp,open,high,low,close,volume", rows)
    return folder, a, b


def test_folder_inner_alignment(tmp_path: Path) -> None:
    folder, a, b = _two_symbols(tmp_path)
    frame = load_ohlcv(folder)
    common = sorted(set(a["timestamp"].to_list()) & set(b["timestamp"].to_list()))
    assert frame.columns == ["timestamp", "open", "high", "low", "close", "volume", "symbol"]
    assert frame.height == 2 * len(common)
    assert frame["timestamp"].unique().sort().to_list() == common
    assert frame.select("timestamp", "symbol").equals(
        frame.select("timestamp", "symbol").sort("timestamp", "symbol")
    )
    for name, src in (("AAA", a), ("BBB", b)):
        mine = frame.filter(pl.col("symbol") == name).drop("symbol")
        assert_frame_equal(mine, src.filter(pl.col("timestamp").is_in(common)))
    only_b = load_ohlcv(folder, symbol="BBB")
    assert_frame_equal(only_b.drop("symbol"), b)


def test_folder_outer_alignment_needs_explicit_fill(tmp_path: Path) -> None:
    folder, a, b = _two_symbols(tmp_path)
    with pytest.raises(ConfigError, match="ffill"):
        load_ohlcv(folder, align="outer")
    frame = load_ohlcv(folder, align="outer", fill_gaps="ffill")
    # Timeline: union of timestamps from the first bar both symbols have.
    start = b["timestamp"][0]
    union = sorted(
        t for t in set(a["timestamp"].to_list()) | set(b["timestamp"].to_list()) if t >= start
    )
    assert frame.height == 2 * len(union)
    filled = frame.filter(pl.col("symbol") == "BBB").drop("symbol")
    gap_times = make_bars(100, seed=2, start=START + timedelta(hours=10))["timestamp"][40:43]
    hole = filled.filter(pl.col("timestamp").is_in(gap_times.implode()))
    prev_close = b.filter(pl.col("timestamp") < gap_times[0])["close"][-1]
    assert hole.height == 3
    for col in ("open", "high", "low", "close"):
        assert (hole[col] == prev_close).all()
    assert (hole["volume"] == 0).all()


def test_single_file_with_symbol_column(tmp_path: Path) -> None:
    a, b = make_bars(50, seed=3), make_bars(50, seed=4)
    long = pl.concat(
        [a.with_columns(pl.lit("X").alias("ticker")), b.with_columns(pl.lit("Y").alias("ticker"))]
    ).sort("timestamp")
    long.write_csv(tmp_path / "long.csv")
    frame = load_ohlcv(tmp_path / "long.csv")
    assert_frame_equal(frame.filter(pl.col("symbol") == "Y").drop("symbol"), b)
    assert frame["symbol"].to_list()[:4] == ["X", "Y", "X", "Y"]
    named = load_ohlcv(tmp_path / "long.csv", symbol="X")
    assert set(named["symbol"]) == {"X"}


def test_single_symbol_file_can_be_named(tmp_path: Path) -> None:
    path = save(make_bars(30), tmp_path / "x.parquet")[0]
    assert set(load_ohlcv(path, symbol="BTC")["symbol"]) == {"BTC"}


def test_embedded_datasets_have_documented_bar_counts() -> None:
    # Counts and spans as stated in jaxtrade/data/embedded/ATTRIBUTION.md.
    expected = {
        "sp500_daily": (5031, "1999-01-04T00:00:00+00:00", "2018-12-31T00:00:00+00:00", "1d"),
        "eurusd_1h": (6225, "2017-01-01T22:00:00+00:00", "2017-12-29T21:00:00+00:00", "1h"),
    }
    listed = {d["name"]: d for d in list_datasets()}
    assert set(listed) == set(expected)
    for name, (bars, start, end, freq) in expected.items():
        frame = load_ohlcv(name)
        assert frame.height == bars
        assert frame.schema == {
            "timestamp": pl.Datetime("us", "UTC"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        }
        assert (
            listed[name]["bars"],
            listed[name]["start"],
            listed[name]["end"],
            listed[name]["frequency"],
        ) == (bars, start, end, freq)
        validate(frame)
    assert load_ohlcv().height == 5031  # sp500_daily is the default


@pytest.mark.skipif(
    importlib.util.find_spec("jaxtrade.data.synthetic") is None,
    reason="synthetic generator not present",
)
def test_synthetic_dispatch() -> None:
    from jaxtrade.data.synthetic import synthetic_frame

    frame = load_ohlcv("synthetic", seed=3, num_bars=200)
    assert_frame_equal(frame, synthetic_frame(seed=3, num_bars=200))


def test_unknown_source_and_options() -> None:
    with pytest.raises(DataError, match="no such file"):
        load_ohlcv("/nonexistent/bars.csv")
    with pytest.raises(ConfigError, match="fill_gaps"):
        load_ohlcv("sp500_daily", fill_gaps="zero")
