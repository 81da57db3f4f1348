"""Read one CSV or Parquet file of bars into the canonical columns, remembering file rows.

Recognised layouts (detected from the header, or forced with `format=`):
  generic  a header naming the columns (case and punctuation ignored: `Open Time`, `open_time`
           and `OPENTIME` are the same name); `columns` maps canonical names to file columns
           for headers that use other names.
  yahoo    `Date,Open,High,Low,Close,Adj Close,Volume`. `close` is the traded close, so OHLC
           stay consistent; pass `adjust=True` (CLI `data.adjust=true`) to scale
           open/high/low/close by `Adj Close / Close` (split and dividend adjusted history).
           A file with `Adj Close` and no other price is a close-only series of it.

Optional columns: without `volume` the bars get volume 0 (and `jaxtrade train` leaves out the
features that need volume); with `close` (or `Adj Close`) and none of open/high/low, the bars
are flat at the close (open = high = low = close). Either is logged as a warning.
  binance  kline files without a header: open time, open, high, low, close, volume, close
           time, ... ; the epoch unit (s, ms, us, ns) is taken from the magnitude of the values,
           since the exchange moved from milliseconds to microseconds.

Timestamps: numbers are epochs (unit from their magnitude); strings are tried against ISO
8601 (a zone or offset is converted to UTC; no zone means UTC, or the zone named by
`timezone=`, e.g. "America/New_York" for exchange-local times), day-first `01.01.2017
22:00:00.000`, `%m/%d/%Y` (US, as Yahoo writes it) and `%d/%m/%Y`, and `%Y%m%d`. The first
format that parses every row and keeps them in time order wins; `timestamp_format` overrides.

Every frame carries `_row`, the 1-based data row in the file, so later checks can name it.
`describe_bars` returns how a file was read (layout, separator, column mapping, timestamp
rule) as plain JSON: an exported bundle records it so its runner reads bars the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from jaxtrade.errors import DataError

log = logging.getLogger(__name__)

CANONICAL = ("timestamp", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
ROW = "_row"
LAYOUTS = ("generic", "yahoo", "binance")
FILE_TYPES = ("csv", "parquet")

# Header names (lower case, letters and digits only) that mean each canonical column.
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "time", "date", "datetime", "opentime", "gmttime", "localtime",
                  "ts", "timeutc", "dateutc", "datetimeutc", "date_time"),
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice", "last"),
    "volume": ("volume", "vol", "v", "tickvolume", "basevolume"),
    "symbol": ("symbol", "ticker", "asset", "pair", "instrument"),
}

_DAY_FIRST_DOTS = ("%d.%m.%Y %H:%M:%S%.f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")
_SLASHES = (
    "%m/%d/%Y %H:%M:%S%.f", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S%.f", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
)
_ISO = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_COMPACT = ("%Y%m%d %H:%M:%S", "%Y%m%d %H%M%S", "%Y%m%d")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def file_type(path: Path, format: str | None) -> str:
    if format in FILE_TYPES:
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    return "csv"


def _looks_numeric(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, layout: str | None, separator: str | None
              ) -> tuple[pl.DataFrame, str, str]:
    """The file's columns, its layout, its separator; numbers as numbers where every cell is
    one."""
    try:
        with path.open("r", encoding="utf-8-sig") as fh:
            first = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read file: {err}", path=str(path)) from err
    if not first:
        raise DataError("file is empty", path=str(path))
    if separator is None:
        separator = max((",", ";", "\t", "|"), key=first.count)
    fields = [f.strip() for f in first.split(separator)]
    headerless = all(_looks_numeric(f) for f in fields if f)
    if layout is None:
        layout = "binance" if headerless else "generic"
    read = dict(has_header=not headerless, separator=separator, encoding="utf8-lossy")
    try:
        # Fast path: polars infers column types. A cell that does not fit the inferred type
        # fails the read; the file is then read again as text so the cell's row can be named.
        frame = pl.read_csv(path, infer_schema_length=10_000, **read)
    except pl.exceptions.PolarsError:
        try:
            frame = pl.read_csv(path, infer_schema=False, **read)
        except (pl.exceptions.PolarsError, OSError) as err:
            raise DataError(f"cannot parse CSV: {err}", path=str(path)) from err
    if headerless:
        if frame.width < len(CANONICAL):
            raise DataError(
                f"file has no header and {frame.width} columns; a kline file needs at least "
                f"{len(CANONICAL)} (open time, open, high, low, close, volume)",
                path=str(path),
            )
        frame = frame.rename({c: f"column_{i}" for i, c in enumerate(frame.columns)})
    elif "adjclose" in {_norm(c) for c in frame.columns} and layout == "generic":
        layout = "yahoo"
    return frame, layout, separator


def _resolve_columns(
    frame: pl.DataFrame, layout: str, columns: Mapping[str, str] | None, path: Path
) -> dict[str, str]:
    """Canonical name -> file column, from the mapping, the layout and the aliases."""
    mapping: dict[str, str] = {}
    names = [c for c in frame.columns if c != ROW]
    columns = dict(columns or {})
    unknown = set(columns) - set(CANONICAL) - {"symbol"}
    if unknown:
        raise DataError(
            f"unknown canonical column(s) {sorted(unknown)} in columns mapping; "
            f"use {list(CANONICAL) + ['symbol']}",
            path=str(path),
        )
    for canon, col in columns.items():
        if col not in frame.columns:
            raise DataError(
                f"missing column {col!r} (mapped to {canon!r}); file columns: {names}",
                path=str(path),
            )
        mapping[canon] = col
    if layout == "binance" and "column_0" in frame.columns:
        for i, canon in enumerate(CANONICAL):
            mapping.setdefault(canon, f"column_{i}")
    by_norm = {_norm(c): c for c in names}
    for canon, aliases in ALIASES.items():
        if canon in mapping:
            continue
        for alias in aliases:
            if alias in by_norm and by_norm[alias] not in mapping.values():
                mapping[canon] = by_norm[alias]
                break
    adj_close = next((c for c in names if _norm(c) == "adjclose"), None)
    if "close" not in mapping and adj_close is not None:
        # A Yahoo export of the adjusted close alone (Date, Adj Close[, Volume]).
        mapping["close"] = adj_close
        if any(p in mapping for p in ("open", "high", "low")):
            raise DataError(
                f"the file has {adj_close!r} but no Close: its open/high/low cannot be scaled to "
                f"the adjusted close; add the Close column (then data.adjust=true scales them) "
                f"or keep only {adj_close!r} (a close-only series); file columns: {names}",
                path=str(path))
    # Optional: bars without volume (FX, many crypto exports) get volume 0 and the features
    # that need volume are dropped (jaxtrade.features.without_volume); a close-only series
    # gets open = high = low = close.
    optional = {"volume"}
    if "close" in mapping and not any(p in mapping for p in ("open", "high", "low")):
        optional |= {"open", "high", "low"}
    missing = [c for c in CANONICAL if c not in mapping and c not in optional]
    if missing:
        cli = " ".join(f"data.columns.{c}=<file column>" for c in missing)
        python = ", ".join(f"'{c}': <file column>" for c in missing)
        raise DataError(
            f"missing column(s) {missing} in the header; file columns: {names}; map them "
            f"on the command line with {cli} (in Python: load_ohlcv(..., columns={{{python}}}))",
            path=str(path),
        )
    return mapping


def _first_bad_row(frame: pl.DataFrame, bad: pl.Series) -> int:
    return int(frame[ROW].filter(bad)[0])


def _numbers(frame: pl.DataFrame, col: str, canon: str, path: Path) -> pl.Series:
    """A float64 column; a non-empty cell that is not a number is an error naming its row."""
    raw = frame[col]
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    if raw.dtype != pl.String:
        raise DataError(f"column {col!r} ({canon}) has type {raw.dtype}, expected numbers",
                        path=str(path))
    text = raw.str.strip_chars()
    values = text.cast(pl.Float64, strict=False)
    bad = values.is_null() & text.is_not_null() & (text != "")
    if bad.any():
        row = _first_bad_row(frame, bad)
        cell = text.filter(bad)[0]
        raise DataError(f"cannot read {cell!r} in column {col!r} ({canon}) as a number",
                        path=str(path), row=row)
    return values


def epoch_unit(values: pl.Series) -> str:
    """Epoch unit judged by magnitude: seconds ~1e9, ms ~1e12, us ~1e15, ns ~1e18 (years 2001+)."""
    magnitude = float(values.abs().median() or 0.0)
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


def _epoch_to_datetime(values: pl.Series) -> pl.Series:
    unit = epoch_unit(values.drop_nulls())
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1e-3}[unit]
    micros = (values.cast(pl.Float64) * scale).round().cast(pl.Int64)
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _to_utc(values: pl.Series, timezone: str) -> pl.Series:
    """Datetimes with a zone are converted to UTC; naive ones are local times in `timezone`.

    A local time that does not exist or is ambiguous (daylight-saving changes) becomes null,
    which the caller reports with its row.
    """
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    values = values.dt.cast_time_unit("us")
    if values.dtype.time_zone is None:  # type: ignore[attr-defined]
        if timezone == "UTC":
            return values.dt.replace_time_zone("UTC")
        values = values.dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
    return values.dt.convert_time_zone("UTC")


def _parse_strings(text: pl.Series, fmt: str | None, timezone: str) -> pl.Series:
    if fmt is None:  # polars' ISO 8601 inference, which also understands zones and offsets
        try:
            parsed = text.str.to_datetime(time_unit="us", strict=False)
        except pl.exceptions.PolarsError:
            try:  # mixed offsets ("Z" and "+02:00") parse only when converted on the way
                parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
            except pl.exceptions.PolarsError:
                return pl.Series(text.name, [None] * len(text), dtype=pl.Datetime("us", "UTC"))
    else:
        parsed = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
    return _to_utc(parsed, timezone)


def _candidate_formats(first: str) -> tuple[str | None, ...]:
    if re.match(r"^\d{4}-\d{1,2}-\d{1,2}", first):
        return (None, *_ISO)
    if re.match(r"^\d{1,2}\.\d{1,2}\.\d{4}", first):
        return _DAY_FIRST_DOTS
    if re.match(r"^\d{1,2}/\d{1,2}/\d{4}", first):
        return _SLASHES
    if re.match(r"^\d{8}", first):
        return _COMPACT
    return (None,)


def parse_timestamps(
    frame: pl.DataFrame, col: str, timestamp_format: str | None, path: Path,
    timezone: str = "UTC",
) -> pl.Series:
    return _timestamps_and_rule(frame, col, timestamp_format, path, timezone)[0]


def _timestamps_and_rule(
    frame: pl.DataFrame, col: str, timestamp_format: str | None, path: Path, timezone: str
) -> tuple[pl.Series, dict[str, Any]]:
    """Parsed UTC timestamps and the rule that read them: {"kind": "datetime" | "epoch" |
    "text", "unit" (epochs), "format" (text; None is ISO 8601), "timezone"}."""
    raw = frame[col]
    rule: dict[str, Any] = {"kind": "text", "unit": None, "format": None, "timezone": timezone}
    if raw.dtype in (pl.Date,) or isinstance(raw.dtype, pl.Datetime):
        parsed = _to_utc(raw, timezone)
        bad = parsed.is_null() & raw.is_not_null()
        if bad.any():
            raise DataError(f"local time {raw.filter(bad)[0]} does not exist or is ambiguous "
                            f"in {timezone}", path=str(path), row=_first_bad_row(frame, bad))
        return parsed.alias("timestamp"), dict(rule, kind="datetime")
    if raw.dtype.is_integer() and raw.drop_nulls().is_between(19_000_101, 21_001_231).all():
        raw = raw.cast(pl.String)  # yyyymmdd dates read as integers, not epochs
    elif raw.dtype.is_numeric():
        return (_epoch_to_datetime(raw).alias("timestamp"),
                dict(rule, kind="epoch", unit=epoch_unit(raw.drop_nulls())))
    text = raw.cast(pl.String).str.strip_chars()
    present = text.is_not_null() & (text != "")
    if not present.any():
        raise DataError(f"timestamp column {col!r} is empty", path=str(path))
    if timestamp_format is not None:
        best = _parse_strings(text, timestamp_format, timezone)
        rule["format"] = timestamp_format
    elif text.filter(present).str.contains(r"^-?\d+(\.\d+)?$").all() and not (
        text.filter(present).str.len_chars() == 8
    ).all():
        # Plain numbers that are not yyyymmdd dates: epochs.
        numbers = text.cast(pl.Float64, strict=False)
        return (_epoch_to_datetime(numbers).alias("timestamp"),
                dict(rule, kind="epoch", unit=epoch_unit(numbers.drop_nulls())))
    else:
        best = None
        first = text.filter(present)[0]
        for fmt in _candidate_formats(first):
            parsed = _parse_strings(text, fmt, timezone)
            if best is None or parsed.null_count() < best.null_count():
                best, rule["format"] = parsed, fmt
            if parsed.null_count() == 0 and parsed.is_sorted():
                best, rule["format"] = parsed, fmt
                break
        assert best is not None
    bad = best.is_null()
    if bad.any():
        row = _first_bad_row(frame, bad)
        cell = text.filter(bad)[0]
        hint = f" with format {timestamp_format!r}" if timestamp_format else ""
        if timezone != "UTC":
            hint += f" (or a local time that does not exist or is ambiguous in {timezone})"
        raise DataError(f"cannot parse timestamp {cell!r}{hint} in column {col!r}",
                        path=str(path), row=row)
    return best.alias("timestamp"), rule


def read_bars(
    path: Path,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    adjust: bool = False,
    separator: str | None = None,
    timezone: str = "UTC",
) -> pl.DataFrame:
    """One file -> `_row, timestamp, open, high, low, close, volume[, symbol]` in file order."""
    return _read(path, format, columns, timestamp_format, adjust, separator, timezone)[0]


def describe_bars(
    path: Path,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    adjust: bool = False,
    separator: str | None = None,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """How `read_bars` reads this file with these options, as plain JSON.

    {"format": layout, "file_type", "header", "separator", "columns": {canonical: file
    column} as resolved, "explicit_columns": the `columns=` option, "aliases": the header
    names each canonical column may have, "timestamp": the rule of `_timestamps_and_rule`,
    "adjust": the Adj Close column or None}. A reader that resolves a header the same way
    (explicit columns first, then kline positions for a file without header, then aliases)
    and applies the timestamp rule reads the same bars.
    """
    return _read(path, format, columns, timestamp_format, adjust, separator, timezone)[1]


def _read(
    path: Path,
    format: str | None,
    columns: Mapping[str, str] | None,
    timestamp_format: str | None,
    adjust: bool,
    separator: str | None,
    timezone: str,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    if format is not None and format not in LAYOUTS + FILE_TYPES:
        raise DataError(f"unknown format {format!r}; use one of {list(LAYOUTS + FILE_TYPES)}",
                        path=str(path))
    layout = format if format in LAYOUTS else None
    kind = file_type(path, format)
    if kind == "parquet":
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as err:
            raise DataError(f"cannot read Parquet: {err}", path=str(path)) from err
        layout = layout or "generic"
    else:
        frame, layout, separator = _read_csv(path, layout, separator)
    if frame.height == 0:
        raise DataError("file has no data rows", path=str(path))
    headerless = kind == "csv" and "column_0" in frame.columns
    frame = frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    mapping = _resolve_columns(frame, layout, columns, path)
    out = {ROW: frame[ROW]}
    out["timestamp"], rule = _timestamps_and_rule(frame, mapping["timestamp"], timestamp_format,
                                                  path, timezone)
    for canon in CANONICAL[1:]:
        if canon in mapping:
            out[canon] = _numbers(frame, mapping[canon], canon, path).alias(canon)
    for canon in ("open", "high", "low"):
        if canon not in mapping:  # a close-only series: flat bars at the close
            out[canon] = out["close"].alias(canon)
    if "volume" not in mapping:
        out["volume"] = pl.Series("volume", [0.0] * frame.height, dtype=pl.Float64)
    absent = [c for c in CANONICAL[1:] if c not in mapping]
    if absent:
        log.warning("%s: no %s column: %s", path, "/".join(absent), "; ".join(
            (["volume set to 0 (features that need volume are left out)"]
             if "volume" in absent else [])
            + (["open, high and low set to the close (a close-only series: fills at the next "
                "bar's open become fills at its close)"] if "open" in absent else [])))
    if "symbol" in mapping:
        out["symbol"] = frame[mapping["symbol"]].cast(pl.String).alias("symbol")
    bars = pl.DataFrame(out)
    adj = None
    if adjust:
        adj = next((c for c in frame.columns if _norm(c) == "adjclose"), None)
        if adj is None:
            raise DataError("adjust=True (data.adjust=true) needs an 'Adj Close' column; file "
                            f"columns: {[c for c in frame.columns if c != ROW]}", path=str(path))
        factor = _numbers(frame, adj, "adj close", path) / bars["close"]
        bars = bars.with_columns([(pl.col(p) * factor).alias(p) for p in PRICES])
    spec = {
        "format": layout,
        "file_type": kind,
        "header": not headerless,
        "separator": separator if kind == "csv" else None,
        "columns": mapping,
        "explicit_columns": dict(columns or {}),
        "aliases": {canon: list(names) for canon, names in ALIASES.items()},
        "timestamp": rule,
        "adjust": adj,
    }
    return bars, spec
