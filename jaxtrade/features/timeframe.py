"""Multi-timeframe features: compute on coarser bars, join onto finer bars causally.

Bars are stamped with their *open* time (the canonical schema). A coarse bar covering
[s, s + every) closes at s + every. A fine bar stamped t closes at t + dt, where dt is the
smallest spacing between this symbol's bars. The coarse value joined onto a fine bar is
that of the latest coarse bar whose close time is <= the fine bar's close time (an as-of
join), so it only ever uses coarse bars whose every fine bar is at or before t: with
spacing >= dt, no fine bar inside [s, s + every) can lie after t once t + dt >= s + every.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from jaxtrade.data.resample import ohlcv_aggregations
from jaxtrade.features.spec import timeframe_seconds

CLOSE_TIME = "__close_time"


def resample(frame: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """OHLCV of one symbol aggregated to `timeframe` bars, with their close time.

    The same aggregation as `jaxtrade.data.resample`, but the last (possibly still forming)
    bucket is kept: the as-of join on close times never hands it to a fine bar before it
    has closed.
    """
    every = dt.timedelta(seconds=timeframe_seconds(timeframe))
    coarse = frame.group_by_dynamic(
        "timestamp", every=every, closed="left", label="left", start_by="window"
    ).agg(ohlcv_aggregations())
    return coarse.with_columns((pl.col("timestamp") + every).alias(CLOSE_TIME))


def bar_spacing(frame: pl.DataFrame) -> dt.timedelta:
    """Smallest positive spacing between consecutive bars (1 day when there is one bar)."""
    if frame.height < 2:
        return dt.timedelta(days=1)
    spacing = frame.get_column("timestamp").diff().drop_nulls().min()
    return spacing if isinstance(spacing, dt.timedelta) else dt.timedelta(days=1)


def join_coarse(fine: pl.DataFrame, coarse_features: pl.DataFrame, spacing: dt.timedelta):
    """As-of join of coarse feature rows (with CLOSE_TIME) onto fine rows (in fine order)."""
    keyed = fine.with_columns((pl.col("timestamp") + spacing).alias(CLOSE_TIME))
    joined = keyed.join_asof(coarse_features.sort(CLOSE_TIME), on=CLOSE_TIME, strategy="backward")
    return joined.drop(CLOSE_TIME)
