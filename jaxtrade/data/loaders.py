"""`load_ohlcv`: any supported source -> one validated canonical polars frame; `save`, `convert`.

Canonical frame: `timestamp` (datetime[us, UTC]), `open, high, low, close, volume`
(float64), plus `symbol` (str) for multi-symbol frames (and for one file when `symbol=` names
it); rows sorted by timestamp, then symbol.

Sources:
  "sp500_daily" (default), "eurusd_1h"   embedded datasets (`list_datasets()`)
  "synthetic"                            `jaxtrade.data.synthetic.synthetic_frame(**options)`
  a CSV or Parquet file                  layouts and timestamp formats in `jaxtrade.data.formats`;
                                         a `symbol` column makes it multi-symbol
  a folder                               one file per symbol, symbol = file name without suffix

Multi-symbol frames share one timeline. `align="inner"` keeps the timestamps every symbol
has (dropped bars are logged). `align="outer"` keeps the union and needs
`fill_gaps="ffill"`: a symbol's missing bars become flat bars at its previous close with zero
volume, and the timeline starts at the first timestamp where every symbol has a bar.

Every file is validated (`jaxtrade.data.validate`); a problem raises `DataError` naming the
file, the row and the problem. Gaps are logged as a warning and left alone unless
`fill_gaps="ffill"` asks for them to be filled (`jaxtrade.data.calendar.fill_gaps`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from jaxtrade.data.calendar import fill_gaps as fill_frame_gaps
from jaxtrade.data.calendar import forward_fill_bars
from jaxtrade.data.embedded import DEFAULT_DATASET, EMBEDDED, load_embedded
from jaxtrade.data.formats import ALIASES, CANONICAL, ROW, describe_bars, read_bars
from jaxtrade.data.validate import validate
from jaxtrade.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BAR_SUFFIXES = (".csv", ".txt", ".parquet", ".pq")
FILL_OPTIONS = (None, "ffill")
ALIGN_OPTIONS = ("inner", "outer")


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    cols = [pl.col("timestamp").dt.cast_time_unit("us")] + [
        pl.col(c).cast(pl.Float64) for c in CANONICAL[1:]
    ]
    keys = ["timestamp"]
    if "symbol" in frame.columns:
        cols.append(pl.col("symbol").cast(pl.String))
        keys.append("symbol")
    return frame.select(cols).sort(keys)


def _symbols_wanted(symbol: str | Sequence[str] | None) -> list[str] | None:
    if symbol is None:
        return None
    return [symbol] if isinstance(symbol, str) else list(symbol)


def _align(parts: dict[str, pl.DataFrame], align: str) -> pl.DataFrame:
    """Stack per-symbol frames on one timeline (inner: shared timestamps; outer: ffill)."""
    stacked = pl.concat(
        [bars.with_columns(pl.lit(name).alias("symbol")) for name, bars in parts.items()]
    )
    if align == "inner":
        common = stacked.group_by("timestamp").len().filter(pl.col("len") == len(parts))
        aligned = stacked.join(common.select("timestamp"), on="timestamp", how="semi")
        dropped = stacked.height - aligned.height
        if dropped:
            log.warning("align='inner' dropped %d bars not shared by all %d symbols",
                        dropped, len(parts))
        if aligned.height == 0:
            raise DataError(f"symbols {sorted(parts)} share no timestamp (align='inner')")
        return aligned
    start = max(bars["timestamp"].min() for bars in parts.values())  # type: ignore[type-var]
    timeline = stacked.select("timestamp").unique().filter(pl.col("timestamp") >= start)
    grid = timeline.join(pl.DataFrame({"symbol": list(parts)}), how="cross")
    full = grid.join(stacked, on=["timestamp", "symbol"], how="left").sort("symbol", "timestamp")
    return pl.concat(
        [forward_fill_bars(full.filter(pl.col("symbol") == name)) for name in parts]
    )


def _load_file(path: Path, symbol: str | Sequence[str] | None, min_bars: int | None,
               read_options: dict[str, Any]) -> dict[str, pl.DataFrame] | pl.DataFrame:
    """A validated file: a frame, or {symbol: frame} when the file holds a symbol column."""
    bars = read_bars(path, **read_options)
    validate(bars, path=str(path), min_bars=min_bars if "symbol" not in bars.columns else None)
    if "symbol" not in bars.columns:
        bars = bars.drop(ROW)
        if symbol is not None:
            wanted = _symbols_wanted(symbol)
            if len(wanted) != 1:  # type: ignore[arg-type]
                raise ConfigError(f"{path} holds one symbol; symbol= must name one, got {symbol}")
            bars = bars.with_columns(pl.lit(wanted[0]).alias("symbol"))  # type: ignore[index]
        return bars
    parts = {
        str(k[0]): g.drop(ROW, "symbol").sort("timestamp")
        for k, g in bars.group_by("symbol", maintain_order=True)
    }
    wanted = _symbols_wanted(symbol)
    if wanted is not None:
        absent = [s for s in wanted if s not in parts]
        if absent:
            raise DataError(f"symbol(s) {absent} not in the file; it has {sorted(parts)}",
                            path=str(path))
        parts = {s: parts[s] for s in wanted}
    return parts


def _load_folder(folder: Path, symbol: str | Sequence[str] | None, min_bars: int | None,
                 read_options: dict[str, Any]) -> dict[str, pl.DataFrame]:
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
        and any(p.name.lower().endswith(s) for s in BAR_SUFFIXES)
    )
    if not files:
        raise DataError(f"no bar files ({', '.join(BAR_SUFFIXES)}) in the folder",
                        path=str(folder))
    by_symbol = {p.name.split(".")[0]: p for p in files}
    if len(by_symbol) != len(files):
        raise DataError("two files in the folder have the same symbol (file name stem)",
                        path=str(folder))
    wanted = _symbols_wanted(symbol)
    if wanted is not None:
        absent = [s for s in wanted if s not in by_symbol]
        if absent:
            raise DataError(f"no file for symbol(s) {absent}; files: {sorted(by_symbol)}",
                            path=str(folder))
        by_symbol = {s: by_symbol[s] for s in wanted}
    parts = {}
    for name, path in by_symbol.items():
        bars = read_bars(path, **read_options)
        if "symbol" in bars.columns:
            bars = bars.drop("symbol")  # the file name says which symbol it is
        validate(bars, path=str(path), min_bars=min_bars)
        parts[name] = bars.drop(ROW)
    return parts


def _synthetic(options: dict[str, Any]) -> pl.DataFrame:
    if options.get("return_regimes"):
        raise ConfigError("load_ohlcv returns bars only; call "
                          "jaxtrade.data.synthetic.synthetic_frame(return_regimes=True)")
    from jaxtrade.data.synthetic import synthetic_frame

    return synthetic_frame(**options)


def load_ohlcv(
    source: str | Path = DEFAULT_DATASET,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    symbol: str | Sequence[str] | None = None,
    timestamp_format: str | None = None,
    fill_gaps: str | None = None,
    min_bars: int | None = None,
    align: str = "inner",
    **options: Any,
) -> pl.DataFrame:
    """Load bars from a file, a folder, an embedded dataset or the synthetic generator.

    format: force a layout ("generic", "yahoo", "binance") or a file type ("csv", "parquet").
    columns: {canonical name: file column} for headers with other names.
    symbol: name of the symbol of a single-symbol file (adds a `symbol` column), or the
        symbol(s) to keep from a folder or a file with a `symbol` column.
    timestamp_format: strftime-style format of string timestamps (else detected).
    fill_gaps: None (gaps reported, left alone) or "ffill" (flat bars at the previous close,
        volume 0).
    min_bars: fewest bars per symbol accepted (DataError below).
    align: "inner" or "outer" (with fill_gaps="ffill") for multi-symbol sources.
    options: for files `adjust=True` (Yahoo adjusted prices), `separator=` and `timezone=`
        (zone of timestamps written without one, default "UTC"); for "synthetic" the
        generator's parameters.
    """
    if fill_gaps not in FILL_OPTIONS:
        raise ConfigError(f"fill_gaps must be one of {FILL_OPTIONS}, got {fill_gaps!r}")
    if align not in ALIGN_OPTIONS:
        raise ConfigError(f"align must be one of {ALIGN_OPTIONS}, got {align!r}")
    if align == "outer" and fill_gaps != "ffill":
        raise ConfigError("align='outer' creates missing bars; it needs fill_gaps='ffill'")

    name = str(source)
    path = Path(source).expanduser()
    loaded: pl.DataFrame | dict[str, pl.DataFrame]
    if name == "synthetic" and not path.exists():
        loaded = _synthetic(options)
    elif name in EMBEDDED and not path.exists():
        if options or columns or format or timestamp_format:
            raise ConfigError(f"embedded dataset {name!r} takes no file or generator options")
        loaded = load_embedded(name)
        if symbol is not None:
            loaded = loaded.with_columns(pl.lit(str(symbol)).alias("symbol"))
    elif path.is_dir():
        loaded = _load_folder(path, symbol, min_bars, _read_options(format, columns,
                                                                    timestamp_format, options))
    elif path.is_file():
        loaded = _load_file(path, symbol, min_bars, _read_options(format, columns,
                                                                 timestamp_format, options))
    else:
        raise DataError(
            f"no such file, folder or dataset (embedded: {sorted(EMBEDDED)}, or 'synthetic')",
            path=name,
        )

    frame = _align(loaded, align) if isinstance(loaded, dict) else loaded
    frame = _canonical(frame)
    report = validate(frame, path=name, min_bars=min_bars)
    if fill_gaps == "ffill" and report.gaps:
        log.info("filling %d missing bars in %d gaps", report.missing_bars, len(report.gaps))
        frame = fill_frame_gaps(frame)
    elif report.gaps and name not in EMBEDDED:
        # Rows of the loaded frame are not file rows once symbols are merged: name the times.
        shown = [str(dataclasses.replace(g, row=None)) for g in report.gaps[:10]]
        log.warning("%s: %d gap(s), %d missing bars left unfilled (fill_gaps='ffill' fills "
                    "them):\n  %s", name, len(report.gaps), report.missing_bars,
                    "\n  ".join(shown))
    return frame


def describe_source(
    source: str | Path = DEFAULT_DATASET,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    symbol: str | Sequence[str] | None = None,
    timestamp_format: str | None = None,
    fill_gaps: str | None = None,
    min_bars: int | None = None,
    align: str = "inner",
    **options: Any,
) -> dict[str, Any]:
    """How `load_ohlcv` with the same arguments reads the bars (`formats.describe_bars`).

    An embedded dataset or the generator has no file: it is described as the canonical CSV
    that `jaxtrade data convert` writes (ISO 8601 timestamps). A folder is described by the
    file of the (one) symbol asked for, or its first file. `fill_gaps` is recorded because a
    reader of the raw file does not see the bars it adds.
    """
    name = str(source)
    path = Path(source).expanduser()
    if not path.exists() and (name == "synthetic" or name in EMBEDDED):
        spec: dict[str, Any] = {
            "format": "generic", "file_type": "csv", "header": True, "separator": ",",
            "columns": {c: c for c in CANONICAL}, "explicit_columns": {},
            "aliases": {canon: list(names) for canon, names in ALIASES.items()},
            "timestamp": {"kind": "text", "unit": None, "format": None, "timezone": "UTC"},
            "adjust": None,
        }
    else:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file()
                           and any(p.name.lower().endswith(s) for s in BAR_SUFFIXES))
            wanted = _symbols_wanted(symbol) or []
            chosen = [p for p in files if p.name.split(".")[0] in wanted] or files
            if not chosen:
                raise DataError(f"no bar files ({', '.join(BAR_SUFFIXES)}) in the folder",
                                path=str(path))
            path = chosen[0]
        elif not path.is_file():
            raise DataError("no such file, folder or dataset", path=name)
        spec = describe_bars(path, **_read_options(format, columns, timestamp_format, options))
    return {"source": name, **spec, "fill_gaps": fill_gaps}


def _read_options(format: str | None, columns: Mapping[str, str] | None,
                  timestamp_format: str | None, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - {"adjust", "separator", "timezone"}
    if unknown:
        raise ConfigError(f"unknown load option(s) {sorted(unknown)} for a file or folder; "
                          "known: adjust, separator, timezone")
    return {"format": format, "columns": columns, "timestamp_format": timestamp_format,
            **options}


def save(frame: pl.DataFrame, path: str | Path, *, format: str | None = None) -> list[Path]:
    """Write a canonical frame; returns the files written.

    A path ending in .csv or .parquet gets one file (CSV timestamps in ISO 8601 with offset).
    A folder (an existing directory, or a path without suffix) gets one file per symbol,
    named `<symbol>.<format>` (format "parquet" unless "csv" is asked for), which
    `load_ohlcv(folder)` reads back.
    """
    path = Path(path).expanduser()
    validate(frame)
    frame = _canonical(frame)
    if path.is_dir() or not path.suffix:
        if "symbol" not in frame.columns:
            raise DataError("a folder holds one file per symbol; the frame has no symbol column",
                            path=str(path))
        path.mkdir(parents=True, exist_ok=True)
        suffix = format or "parquet"
        written = []
        for (name,), bars in frame.group_by("symbol", maintain_order=True):
            written += save(bars.drop("symbol"), path / f"{name}.{suffix}")
        return sorted(written)
    kind = format or path.suffix.lstrip(".").lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("parquet", "pq"):
        frame.write_parquet(path, compression="zstd")
    elif kind in ("csv", "txt"):
        frame.write_csv(path)
    else:
        raise ConfigError(f"cannot save as {kind!r}; use a .csv or .parquet path or a folder")
    return [path]


def convert(source: str | Path, destination: str | Path, **load_options: Any) -> list[Path]:
    """Load `source` (any `load_ohlcv` source and options) and `save` it to `destination`."""
    return save(load_ohlcv(source, **load_options), destination)
