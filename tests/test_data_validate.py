"""Every validation error on a crafted bad file names the file, the row and the problem;
gaps are reported (never silently filled) and filled only when asked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_data_loaders import make_bars

from jaxtrade.data import (
    describe,
    fill_gaps,
    find_gaps,
    infer_bars_per_year,
    load_ohlcv,
    validate,
)
from jaxtrade.errors import DataError

HEADER = ["timestamp", "open", "high", "low", "close", "volume"]


def good_lines(num_bars: int = 40) -> list[list[str]]:
    return [
        [r["timestamp"].strftime("%Y-%m-%d %H:%M:%S")]
        + [repr(r[c]) for c in ("open", "high", "low", "close", "volume")]
        for r in make_bars(num_bars).iter_rows(named=True)
    ]


def write(path: Path, lines: list[list[str]], header: list[str] = HEADER) -> Path:
    path.write_text("\n".join(",".join(x) for x in [header, *lines]) + "\n")
    return path


def set_cell(col: str, value: str) -> Callable[[list[str]], None]:
    i = HEADER.index(col)

    def edit(line: list[str]) -> None:
        line[i] = value

    return edit


def swap_high_low(line: list[str]) -> None:
    line[2], line[3] = line[3], line[2]


def close_above_high(line: list[str]) -> None:
    line[4] = repr(float(line[2]) * 1.01)


def open_below_low(line: list[str]) -> None:
    line[1] = repr(float(line[3]) * 0.99)


# (name, data row edited (1-based), edit, expected problem text)
CELL_CASES = [
    ("nan", 5, set_cell("close", "nan"), "close is NaN"),
    ("empty", 6, set_cell("close", ""), "close is missing"),
    ("inf", 7, set_cell("high", "inf"), "high is infinite"),
    ("text", 8, set_cell("volume", "n/a"), "cannot read 'n/a'"),
    ("zero_price", 9, set_cell("open", "0"), "open is 0.0 (prices must be positive)"),
    ("negative_price", 10, set_cell("low", "-1.5"), "low is -1.5 (prices must be positive)"),
    ("negative_volume", 11, set_cell("volume", "-3"), "volume is -3.0"),
    ("high_below_low", 12, swap_high_low, "is below low"),
    ("close_above_high", 13, close_above_high, "outside [low, high]"),
    ("open_below_low", 14, open_below_low, "outside [low, high]"),
    ("bad_timestamp", 15, set_cell("timestamp", "not a date"), "cannot parse timestamp"),
]


@pytest.mark.parametrize("name,row,edit,problem", CELL_CASES, ids=[c[0] for c in CELL_CASES])
def test_bad_cell_names_file_row_and_problem(
    tmp_path: Path, name: str, row: int, edit: Callable[[list[str]], None], problem: str
) -> None:
    lines = good_lines()
    edit(lines[row - 1])
    path = write(tmp_path / f"{name}.csv", lines)
    with pytest.raises(DataError) as info:
        load_ohlcv(path)
    err = info.value
    assert err.path == str(path) and err.row == row
    assert problem in err.problem
    assert str(path) in str(err) and f"row {row}" in str(err) and problem in str(err)


def test_bad_cell_far_into_a_large_file(tmp_path: Path) -> None:
    # Past the rows polars uses to infer column types: the slow, row-naming path must run.
    lines = good_lines(40)
    big = [list(lines[i % 40]) for i in range(12_500)]
    start = datetime(2020, 1, 1)
    for i, line in enumerate(big):
        line[0] = (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
    big[12_344][4] = "1.2.3"
    path = write(tmp_path / "big.csv", big)
    with pytest.raises(DataError, match=r"big\.csv, row 12345: cannot read '1\.2\.3' in column"):
        load_ohlcv(path)


def test_duplicate_timestamp(tmp_path: Path) -> None:
    lines = good_lines()
    lines[9][0] = lines[8][0]  # data row 10 repeats row 9's timestamp
    path = write(tmp_path / "dup.csv", lines)
    with pytest.raises(DataError, match=r"dup\.csv, row 10: duplicate timestamp .*also at row 9"):
        load_ohlcv(path)


def test_unsorted_timestamps(tmp_path: Path) -> None:
    lines = good_lines()
    lines[20], lines[21] = lines[21], lines[20]  # rows 21 and 22 swapped: row 22 goes back
    path = write(tmp_path / "order.csv", lines)
    with pytest.raises(DataError, match=r"order\.csv, row 22: timestamp .* earlier than"):
        load_ohlcv(path)


def test_missing_column(tmp_path: Path) -> None:
    # Volume is optional (volume-less bars load with volume 0); a missing price is not.
    lines = [line[:2] + line[3:] for line in good_lines()]
    path = write(tmp_path / "nohigh.csv", lines, HEADER[:2] + HEADER[3:])
    with pytest.raises(DataError, match=r"nohigh\.csv: missing column\(s\) \['high'\]"):
        load_ohlcv(path)


def test_unmapped_column_error_gives_the_cli_spelling(tmp_path: Path) -> None:
    header = ["Price" if c == "close" else c for c in HEADER]
    assert header != HEADER
    path = write(tmp_path / "price.csv", good_lines(), header)
    with pytest.raises(DataError, match=r"price\.csv: missing column\(s\) \['close'\] .*map them "
                                        r"on the command line with data\.columns\.close=<file "
                                        r"column> \(in Python: load_ohlcv\(\.\.\., "
                                        r"columns=\{'close': <file column>\}\)\)"):
        load_ohlcv(path)
    assert load_ohlcv(path, columns={"close": "Price"}).height == len(good_lines())


def test_too_few_bars(tmp_path: Path) -> None:
    path = write(tmp_path / "short.csv", good_lines(40))
    assert load_ohlcv(path, min_bars=40).height == 40
    with pytest.raises(DataError, match=r"short\.csv: only 40 bars, at least 41 needed"):
        load_ohlcv(path, min_bars=41)


def test_parquet_rows_and_in_memory_rows_are_one_based(tmp_path: Path) -> None:
    bad = make_bars(30).with_columns(
        pl.when(pl.int_range(pl.len()) == 6)
        .then(float("nan"))
        .otherwise(pl.col("close"))
        .alias("close")
    )
    bad.write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet, row 7: close is NaN"):
        load_ohlcv(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"^row 7: close is NaN"):
        validate(bad)


def test_multi_symbol_file_checks_duplicates_per_symbol(tmp_path: Path) -> None:
    a = make_bars(20).with_columns(pl.lit("A").alias("symbol"))
    b = make_bars(20, seed=5).with_columns(pl.lit("B").alias("symbol"))
    frame = pl.concat([a, b]).sort("timestamp", "symbol")
    validate(frame)  # same timestamps across symbols are fine
    dup = pl.concat([frame, frame[5:6]])
    with pytest.raises(DataError, match=r"row 41: duplicate timestamp .* symbol"):
        validate(dup)


def _hourly_24_7(num_bars: int) -> pl.DataFrame:
    return make_bars(num_bars, step=timedelta(hours=1))


def test_gaps_reported_not_filled_then_filled_on_request(tmp_path: Path) -> None:
    full = _hourly_24_7(24 * 14)  # two weeks, every hour including weekends (crypto-like)
    holed = full.filter(~pl.int_range(pl.len()).is_between(100, 104))  # 5 bars missing
    path = tmp_path / "btc.parquet"
    holed.write_parquet(path)

    loaded = load_ohlcv(path)
    assert loaded.height == holed.height  # not silently filled
    report = validate(loaded)
    assert len(report.gaps) == 1 and report.missing_bars == 5
    gap = report.gaps[0]
    assert gap.after == full["timestamp"][99] and gap.before == full["timestamp"][105]
    assert gap.row == 101  # the bar after the gap is the 101st row of the holed file

    filled = load_ohlcv(path, fill_gaps="ffill")
    assert filled["timestamp"].to_list() == full["timestamp"].to_list()
    inserted = filled[100:105]
    prev_close = full["close"][99]
    for col in ("open", "high", "low", "close"):
        assert (inserted[col] == prev_close).all()
    assert (inserted["volume"] == 0).all()
    assert filled.filter(~pl.int_range(pl.len()).is_between(100, 104)).equals(holed)
    assert validate(filled).gaps == ()


def test_daily_weekday_gaps_ignore_weekends_and_single_holidays() -> None:
    days = [datetime(2021, 1, 4, tzinfo=timezone.utc) + timedelta(days=i) for i in range(120)]
    weekdays = [d for d in days if d.weekday() < 5]
    holiday = weekdays[10]  # one missing weekday: a holiday, not reported
    closure = weekdays[30:33]  # three missing weekdays: reported
    kept = [d for d in weekdays if d != holiday and d not in closure]
    frame = make_bars(len(kept)).with_columns(
        pl.Series("timestamp", kept, dtype=pl.Datetime("us", "UTC"))
    )
    gaps = find_gaps(frame)
    assert [(g.after, g.before, g.missing_bars) for g in gaps] == [(weekdays[29], weekdays[33], 3)]
    filled = fill_gaps(frame)
    assert sorted(set(filled["timestamp"].to_list()) - set(kept)) == closure
    assert infer_bars_per_year(frame) == 252.0


def test_embedded_gaps_match_known_market_closures() -> None:
    # NYSE closures of two or more days 1999-2018: 9/11 (Sep 11-14 2001), New Year 2007 +
    # President Ford's funeral (Jan 1-2 2007), Hurricane Sandy (Oct 29-30 2012).
    sp = validate(load_ohlcv("sp500_daily"))
    assert [(str(g.after.date()), str(g.before.date()), g.missing_bars) for g in sp.gaps] == [
        ("2001-09-10", "2001-09-17", 4),
        ("2006-12-29", "2007-01-03", 2),
        ("2012-10-26", "2012-10-31", 2),
    ]
    # EURUSD 1h: weekend closures (including the ones moved by daylight saving) are not gaps;
    # the Christmas Day break is.
    fx = validate(load_ohlcv("eurusd_1h"))
    assert [(g.after.isoformat(), g.missing_bars) for g in fx.gaps] == [
        ("2017-12-25T07:00:00+00:00", 14)
    ]


def test_bars_per_year_rule_and_override() -> None:
    assert infer_bars_per_year(load_ohlcv("sp500_daily")) == 252.0
    assert infer_bars_per_year(load_ohlcv("eurusd_1h")) == 252.0 * 24  # 24h, weekdays
    assert infer_bars_per_year(_hourly_24_7(24 * 30)) == 365.0 * 24  # trades on weekends
    weekly = make_bars(60, step=timedelta(weeks=1))
    assert infer_bars_per_year(weekly) == pytest.approx(365.25 / 7)
    assert infer_bars_per_year(weekly, bars_per_year=52) == 52.0


def test_describe_summarises_frame() -> None:
    info = describe(load_ohlcv("eurusd_1h"))
    frame = load_ohlcv("eurusd_1h")
    assert info["bars"] == 6225 and info["frequency"] == "1h" and info["gaps"] == 1
    only = info["per_symbol"][""]
    assert only["last_close"] == frame["close"][-1]
    assert only["max_high"] == float(np.max(frame["high"].to_numpy()))
