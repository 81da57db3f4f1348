"""Checks that a frame of bars is usable, and a summary of what it holds.

`validate` raises `DataError` for the first problem it finds, checked in this order: missing
columns, wrong column types, missing timestamps, missing/NaN/inf values, non-positive
prices or negative volume, high < low, open or close outside [low, high], duplicate
timestamps, timestamps out of order, too few bars. Within a check the earliest row is
named. Rows are 1-based data rows of the file (the header does not count) when the frame
came from `load_ohlcv`, else 1-based positions in the frame. Missing columns and too few bars
concern the whole file and name no row.

Gaps are not errors: they are listed in the returned `ValidationReport` (rules in
`jaxtrade.data.calendar`) and filled only on request (`load_ohlcv(..., fill_gaps="ffill")`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from jaxtrade.data.calendar import (
    Gap,
    find_gaps,
    frequency_label,
    infer_bars_per_year,
    spacing_us,
    trades_weekends,
)
from jaxtrade.data.formats import CANONICAL, PRICES, ROW
from jaxtrade.errors import DataError


@dataclass(frozen=True)
class ValidationReport:
    """What a valid frame holds; `gaps` lists missing bars (never filled silently)."""

    path: str | None
    num_bars: int
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    spacing_us: int
    frequency: str
    gaps: tuple[Gap, ...] = field(default_factory=tuple)

    @property
    def missing_bars(self) -> int:
        return sum(g.missing_bars for g in self.gaps)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        who = f" x {len(self.symbols)} symbols" if self.symbols else ""
        text = (
            f"{where}{self.num_bars} bars{who}, {self.frequency}, {self.start} .. {self.end}, "
            f"{len(self.gaps)} gap(s) ({self.missing_bars} missing bars)"
        )
        return "\n  ".join([text] + [str(g) for g in self.gaps[:10]])


def _first_row(rows: pl.Series, bad: pl.Series) -> int:
    return int(rows.filter(bad).min())  # type: ignore[arg-type]


def _fail(problem: str, path: str | None, rows: pl.Series, bad: pl.Series) -> None:
    raise DataError(problem, path=path, row=_first_row(rows, bad))


def _check_values(frame: pl.DataFrame, rows: pl.Series, path: str | None) -> None:
    for col in CANONICAL[1:]:
        values = frame[col].cast(pl.Float64)
        for bad, what in (
            (values.is_null(), "is missing"),
            (values.is_nan().fill_null(False), "is NaN"),
            (values.is_infinite().fill_null(False), "is infinite"),
        ):
            if bad.any():
                _fail(f"{col} {what}", path, rows, bad)
    for col in PRICES:
        bad = frame[col] <= 0
        if bad.any():
            value = frame[col].filter(bad)[0]
            _fail(f"{col} is {value} (prices must be positive)", path, rows, bad)
    bad = frame["volume"] < 0
    if bad.any():
        _fail(f"volume is {frame['volume'].filter(bad)[0]} (must not be negative)", path, rows, bad)


def _check_ranges(frame: pl.DataFrame, rows: pl.Series, path: str | None) -> None:
    high, low = frame["high"], frame["low"]
    bad = high < low
    if bad.any():
        i = _first_row(rows, bad)
        r = frame.filter(rows == i).row(0, named=True)
        raise DataError(f"high {r['high']} is below low {r['low']}", path=path, row=i)
    candidates = []
    for col in ("open", "close"):
        for bad, side, bound in ((frame[col] > high, "above high", "high"),
                                 (frame[col] < low, "below low", "low")):
            if bad.any():
                candidates.append((_first_row(rows, bad), col, side, bound))
    if candidates:
        i, col, side, bound = min(candidates)
        r = frame.filter(rows == i).row(0, named=True)
        raise DataError(f"{col} {r[col]} is {side} {r[bound]} (outside [low, high])",
                        path=path, row=i)


def _check_order(frame: pl.DataFrame, rows: pl.Series, path: str | None) -> None:
    has_symbol = "symbol" in frame.columns
    keyed = frame.select(
        pl.col("timestamp"),
        pl.col("symbol") if has_symbol else pl.lit("", dtype=pl.String).alias("symbol"),
    ).with_columns(rows.alias(ROW))
    same_symbol = pl.col("symbol") == pl.col("symbol").shift(1)
    # Duplicates: sorted by (symbol, timestamp, row), a repeat follows its first occurrence.
    dup = (
        keyed.sort("symbol", "timestamp", ROW)
        .with_columns(pl.col(ROW).shift(1).alias("first"))
        .filter(same_symbol & (pl.col("timestamp") == pl.col("timestamp").shift(1)))
    )
    if dup.height:
        r = dup.sort(ROW).row(0, named=True)
        who = f" for symbol {r['symbol']}" if has_symbol else ""
        raise DataError(
            f"duplicate timestamp {r['timestamp']}{who} (also at row {r['first']})",
            path=path, row=r[ROW],
        )
    # Time order is judged per symbol in the order the rows were given.
    back = (
        keyed.sort("symbol", ROW)
        .with_columns(pl.col("timestamp").shift(1).alias("previous"))
        .filter(same_symbol & (pl.col("timestamp") < pl.col("previous")))
    )
    if back.height:
        r = back.sort(ROW).row(0, named=True)
        raise DataError(
            f"timestamp {r['timestamp']} is earlier than the previous bar's {r['previous']} "
            "(rows must be in time order)",
            path=path, row=r[ROW],
        )


def validate(
    frame: pl.DataFrame, *, path: str | None = None, min_bars: int | None = None
) -> ValidationReport:
    """Raise `DataError` on the first problem (module docstring); else report span and gaps."""
    path = None if path is None else str(path)
    missing = [c for c in CANONICAL if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; columns present: {frame.columns}",
                        path=path)
    ts_type = frame["timestamp"].dtype
    if not isinstance(ts_type, pl.Datetime) or ts_type.time_zone != "UTC":
        raise DataError(f"timestamp must be a UTC datetime, got {ts_type}", path=path)
    for col in CANONICAL[1:]:
        if not frame[col].dtype.is_numeric():
            raise DataError(f"column {col} must be numeric, got {frame[col].dtype}", path=path)
    rows = frame[ROW] if ROW in frame.columns else pl.Series(ROW, range(1, frame.height + 1))
    bad = frame["timestamp"].is_null()
    if bad.any():
        _fail("timestamp is missing", path, rows, bad)
    _check_values(frame, rows, path)
    _check_ranges(frame, rows, path)
    _check_order(frame, rows, path)

    symbols: tuple[str, ...] = ()
    counts = {None: frame.height}
    if "symbol" in frame.columns:
        symbols = tuple(sorted(frame["symbol"].unique().to_list()))
        counts = dict(frame.group_by("symbol").len().iter_rows())
    if min_bars is not None:
        name, count = min(counts.items(), key=lambda kv: kv[1])
        if count < min_bars:
            who = f" for symbol {name}" if name is not None else ""
            raise DataError(f"only {count} bars{who}, at least {min_bars} needed", path=path)

    ordered = frame.with_columns(rows.alias(ROW)).sort(ROW)
    if "symbol" in frame.columns:
        ordered = ordered.sort("symbol", ROW)
    first_symbol = ordered if not symbols else ordered.filter(pl.col("symbol") == symbols[0])
    step = spacing_us(first_symbol["timestamp"])
    return ValidationReport(
        path=path,
        num_bars=frame.height,
        symbols=symbols,
        start=frame["timestamp"].min(),  # type: ignore[arg-type]
        end=frame["timestamp"].max(),  # type: ignore[arg-type]
        spacing_us=step,
        frequency=frequency_label(step),
        gaps=tuple(find_gaps(ordered, row_column=ROW)),
    )


def describe(frame: pl.DataFrame, *, bars_per_year: float | None = None) -> dict[str, Any]:
    """JSON-ready summary of a canonical frame (for `jaxtrade data inspect`)."""
    report = validate(frame)
    symbols = list(report.symbols)
    groups = frame.group_by("symbol") if symbols else None
    per_symbol: dict[str, dict[str, Any]] = {}
    parts = (
        [(str(k[0]), g.sort("timestamp")) for k, g in groups] if groups is not None
        else [("", frame.sort("timestamp"))]
    )
    for name, g in sorted(parts):
        per_symbol[name] = {
            "bars": g.height,
            "start": g["timestamp"].min().isoformat(),  # type: ignore[union-attr]
            "end": g["timestamp"].max().isoformat(),  # type: ignore[union-attr]
            "first_close": float(g["close"][0]),
            "last_close": float(g["close"][-1]),
            "min_low": float(g["low"].min()),  # type: ignore[arg-type]
            "max_high": float(g["high"].max()),  # type: ignore[arg-type]
            "mean_volume": float(g["volume"].mean()),  # type: ignore[arg-type]
        }
    return {
        "bars": frame.height,
        "symbols": symbols,
        "start": report.start.isoformat() if report.start else None,
        "end": report.end.isoformat() if report.end else None,
        "frequency": report.frequency,
        "bars_per_year": infer_bars_per_year(frame, bars_per_year),
        "trades_weekends": trades_weekends(frame["timestamp"]),
        "gaps": len(report.gaps),
        "missing_bars": report.missing_bars,
        "gap_examples": [str(g) for g in report.gaps[:10]],
        "per_symbol": per_symbol,
    }
