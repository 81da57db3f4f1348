"""Aggregate bars to a coarser timeframe (1h -> 4h -> 1d), per symbol.

A coarse bar takes the first open, the highest high, the lowest low, the last close and the
summed volume of the fine bars whose start falls in `[bucket start, bucket start + every)`.
It is labelled by its bucket start. Buckets are aligned to the UTC epoch (a "1d" bucket runs
00:00 to 24:00 UTC, "4h" buckets start at 00:00, 04:00, ...; "1w" buckets start on Monday),
so resampling in steps (1h -> 4h -> 1d) gives the same bars as resampling at once
(1h -> 1d) whenever the steps divide each other.

Buckets with no bars produce no row (closures and gaps stay visible as missing bars). Inside
the history every bucket is closed, whatever its number of bars. The last bucket of a symbol
is different: it is kept only when the fine bars cover it to its end (last fine bar start +
fine spacing >= bucket end); otherwise it could be a bar still forming, so with the default
`drop_partial=True` it is dropped. A history that stops at a market close before the end of
its last bucket (forex on a Friday evening, for a "1d" resample) therefore loses that bucket.
"""

from __future__ import annotations

import polars as pl

from jaxtrade.data.calendar import spacing_us
from jaxtrade.errors import ConfigError


def ohlcv_aggregations() -> list[pl.Expr]:
    """First open, highest high, lowest low, last close, summed volume (one coarse bar)."""
    return [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
    ]


def _check_every(frame: pl.DataFrame, every: str) -> None:
    probe = pl.Series([frame["timestamp"][0]])
    try:
        width = (probe.dt.offset_by(every) - probe)[0]
    except pl.exceptions.PolarsError as err:
        raise ConfigError(f"cannot read resampling period {every!r}: {err}") from err
    step = spacing_us(frame["timestamp"] if "symbol" not in frame.columns else
                      frame.filter(pl.col("symbol") == frame["symbol"][0])["timestamp"])
    if width is None or width.total_seconds() * 1e6 <= step:
        raise ConfigError(
            f"resampling period {every!r} must be longer than the bar spacing "
            f"({step / 1e6:g} s)"
        )


def resample(frame: pl.DataFrame, every: str, *, drop_partial: bool = True) -> pl.DataFrame:
    """Coarser OHLCV bars (module docstring), sorted by timestamp (then symbol)."""
    if frame.height == 0:
        return frame
    _check_every(frame, every)
    # A single-symbol frame gets a constant key so both cases share one code path.
    key = "symbol" if "symbol" in frame.columns else "_key"
    ordered = frame.with_columns(pl.lit("").alias("_key")) if key == "_key" else frame
    ordered = ordered.sort(key, "timestamp")
    coverage = ordered.group_by(key).agg(
        (pl.col("timestamp").last() + pl.col("timestamp").diff().median()).alias("_covered")
    )
    bars = ordered.group_by_dynamic(
        "timestamp", every=every, closed="left", label="left", group_by=key, start_by="window"
    ).agg(ohlcv_aggregations())
    if drop_partial:
        last_bucket = pl.col("timestamp") == pl.col("timestamp").max().over(key)
        cut_short = pl.col("_covered") < pl.col("timestamp").dt.offset_by(every)
        bars = bars.join(coverage, on=key).filter(~(last_bucket & cut_short))
    sort_keys = ["timestamp", "symbol"] if key == "symbol" else ["timestamp"]
    return bars.select(frame.columns).sort(sort_keys)
