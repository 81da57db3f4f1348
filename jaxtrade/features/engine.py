"""`compute(frame, spec)`: evaluate a feature spec on a canonical OHLCV frame.

Per-symbol features run on each symbol's bars sorted by time (one lazy query per symbol,
collected together so polars runs them in parallel); entries with a timeframe run on that
symbol's resampled bars and are as-of joined back (see `timeframe`); cross-asset features
run last on the whole frame. The result has the input's rows in the input's order.

Missing values: warm-up rows (fewer bars than a window needs) and any non-finite result
(e.g. a log of a zero volume) are null in the output (NaN once converted to numpy).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from jaxtrade.errors import DataError, FeatureError
from jaxtrade.features import cross_asset, registry, timeframe
from jaxtrade.features.indicators import log_return
from jaxtrade.features.spec import FeatureEntry, FeatureSpec, default_spec

OHLCV = ("open", "high", "low", "close", "volume")
_ROW = "__row"
# Window functions and recursions (rolling, ewm) do not stream; the in-memory engine runs
# these queries with about 35% less CPU than the default streaming one.
_ENGINE = "in-memory"


def compute(frame: pl.DataFrame, spec: FeatureSpec | dict | list | None = None) -> pl.DataFrame:
    """Feature columns (float64) for every row of `frame`, plus `timestamp` (and `symbol`)."""
    spec = _as_spec(spec)
    _check_frame(frame)
    has_symbol = "symbol" in frame.columns
    keys = ["timestamp", "symbol"] if has_symbol else ["timestamp"]
    base = frame.select(*keys, *OHLCV).with_row_index(_ROW)
    for c in OHLCV:
        base = base.with_columns(pl.col(c).cast(pl.Float64))
    parts = base.partition_by("symbol", maintain_order=True) if has_symbol else [base]
    multi_asset = len(parts) > 1
    per_symbol = [e for e in spec.entries if not e.cross_asset]
    cross = [e for e in spec.entries if e.cross_asset] if multi_asset else []

    parts = [_sorted_by_time(p) for p in parts]
    queries = [_symbol_query(p, per_symbol, bool(cross)) for p in parts]
    out = pl.concat(pl.collect_all(queries, engine=_ENGINE), how="vertical")
    if cross:
        out = _add_cross_asset(out, cross)
    columns = spec.columns(multi_asset)
    if not out.get_column(_ROW).is_sorted():
        out = out.sort(_ROW)
    out = out.select(
        *keys,
        *[
            pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).cast(pl.Float64)
            for c in columns
        ],
    )
    return out


def _symbol_query(part: pl.DataFrame, entries: list[FeatureEntry], keep_returns: bool):
    lf = _with_features(part.lazy(), [e for e in entries if e.timeframe is None])
    if keep_returns:
        lf = lf.with_columns(log_return().alias(cross_asset.RET))
    for tf in dict.fromkeys(e.timeframe for e in entries if e.timeframe):
        tf_entries = [e for e in entries if e.timeframe == tf]
        coarse = _with_features(timeframe.resample(part, tf).lazy(), tf_entries)
        coarse = coarse.select(timeframe.CLOSE_TIME, *[c for e in tf_entries for c in e.columns()])
        joined = timeframe.join_coarse(
            part.select(_ROW, "timestamp"),
            coarse.collect(engine=_ENGINE),
            timeframe.bar_spacing(part),
        ).drop("timestamp")
        lf = lf.join(joined.lazy(), on=_ROW, how="left", maintain_order="left")
    return lf


def _with_features(lf: pl.LazyFrame, entries: list[FeatureEntry]) -> pl.LazyFrame:
    """Add the entries' columns, running their stages level by level (temps prefixed __)."""
    staged: list[tuple[list[list[pl.Expr]], list[pl.Expr]]] = []
    for i, entry in enumerate(entries):
        build = registry.get(entry.name).build
        assert build is not None
        stages = build(entry.params, f"__{i}_")
        outputs = [e.alias(c) for e, c in zip(stages[-1], entry.columns(), strict=True)]
        staged.append((stages[:-1], outputs))
    depth = max((len(temps) for temps, _ in staged), default=0)
    for k in range(depth):
        lf = lf.with_columns([e for temps, _ in staged if len(temps) > k for e in temps[k]])
    return lf.with_columns([e for _, outputs in staged for e in outputs])


def _add_cross_asset(out: pl.DataFrame, entries: list[FeatureEntry]) -> pl.DataFrame:
    for entry in entries:
        window = entry.params["window"]
        (column,) = entry.columns()
        if entry.name == "cross_corr":
            out = out.with_columns(cross_asset.cross_corr(out, window).alias(column))
        elif entry.name == "turbulence":
            wide = out.pivot(
                on="symbol", index="timestamp", values=cross_asset.RET, aggregate_function=None
            ).sort("timestamp")
            values = wide.drop("timestamp").to_numpy()
            series = cross_asset.turbulence(values, window)
            by_time = pl.DataFrame({"timestamp": wide["timestamp"], column: series})
            out = out.join(by_time, on="timestamp", how="left", maintain_order="left")
        else:  # pragma: no cover - the registry only has these two
            raise FeatureError(f"no cross-asset implementation for '{entry.name}'")
    return out


def _as_spec(spec: FeatureSpec | dict | list | None) -> FeatureSpec:
    if spec is None:
        return default_spec()
    if isinstance(spec, FeatureSpec):
        return spec
    return FeatureSpec.from_dict(spec)


def _check_frame(frame: pl.DataFrame) -> None:
    missing = [c for c in ("timestamp", *OHLCV) if c not in frame.columns]
    if missing:
        raise DataError(f"feature input is missing column(s) {missing}")
    if frame.height == 0:
        raise DataError("feature input has no rows")


def _sorted_by_time(part: pl.DataFrame) -> pl.DataFrame:
    """One symbol's bars in time order; duplicate timestamps are an error."""

    def steps_not_positive(p: pl.DataFrame) -> bool:
        return bool((p.get_column("timestamp").diff().drop_nulls() <= dt.timedelta(0)).any())

    if steps_not_positive(part):
        part = part.sort("timestamp")
        if steps_not_positive(part):
            raise DataError("feature input has duplicate timestamps for one symbol")
    return part
