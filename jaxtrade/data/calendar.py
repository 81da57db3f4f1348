"""Bar spacing, trading calendar, gaps and annualization, judged from the bars themselves.

Rules (simple on purpose, so a user can predict them):

* Spacing: the median time between consecutive bars of a symbol.
* Weekend trading: a symbol trades on weekends when at least 5% of its bars fall on a
  Saturday (UTC). Crypto does; equities and forex (closed from Friday evening to Sunday
  evening, i.e. all of Saturday) do not.
* Gaps, daily bars (spacing 1 day) on a weekday calendar: missing weekdays between two bars.
  Weekends are never gaps, and a single missing weekday is taken as an exchange holiday and
  not reported; two or more consecutive missing weekdays are a gap (e.g. the four days the
  NYSE closed after 2001-09-11).
* Gaps, other spacings: a step longer than 1.5 x spacing is a break. A break that recurs with
  the same time of day and the same length in at least a quarter of the weeks spanned (and
  at least twice) is a regular session closure (nights, weekends) and not reported, and so
  is a break within an hour of such a closure's length that shares its start or its end time
  of day (a closure moved by a daylight-saving change); any other break is a gap of
  round(step / spacing) - 1 missing bars.
* Bars per year: days per year (365 with weekend trading, else 252) x bars per day (the
  median number of bars per UTC calendar day) for intraday data; 252 or 365 for daily data;
  365.25 days / spacing for coarser bars (weekly 52.2, monthly about 12). So daily equities
  give 252, 24-hour weekday markets (forex) 252 x 24 = 6048, hourly crypto 365 x 24 = 8760.
  Pass `bars_per_year` explicitly wherever it matters to override the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

DAY_US = 86_400_000_000
WEEK_US = 7 * DAY_US
HOUR_US = 3_600_000_000
WEEKEND_SHARE = 0.05
BREAK_FACTOR = 1.5
REGULAR_WEEK_SHARE = 0.25


@dataclass(frozen=True)
class Gap:
    """Bars missing between two consecutive bars of a symbol."""

    symbol: str | None
    after: datetime  # timestamp of the last bar before the gap
    before: datetime  # timestamp of the first bar after the gap
    missing_bars: int
    row: int | None = None  # 1-based row (in the file or frame) of the bar after the gap

    def __str__(self) -> str:
        who = f"{self.symbol}: " if self.symbol else ""
        where = f" (row {self.row})" if self.row is not None else ""
        gap = f"{self.missing_bars} bar(s) missing between {self.after} and {self.before}"
        return f"{who}{gap}{where}"


def _micros(timestamps: pl.Series) -> np.ndarray:
    return timestamps.dt.cast_time_unit("us").dt.epoch("us").to_numpy().astype(np.int64)


def spacing_us(timestamps: pl.Series) -> int:
    """Median step between consecutive bars in microseconds (0 for fewer than two bars)."""
    t = _micros(timestamps)
    if t.size < 2:
        return 0
    return int(np.median(np.diff(t)))


def trades_weekends(timestamps: pl.Series) -> bool:
    if timestamps.len() == 0:
        return False
    saturday = (timestamps.dt.weekday() == 6).mean()
    return bool(saturday is not None and float(saturday) >= WEEKEND_SHARE)


def is_daily(step_us: int) -> bool:
    return 0.75 * DAY_US <= step_us <= 1.5 * DAY_US


def frequency_label(step_us: int) -> str:
    """Human label of a spacing: '1h', '15m', '1d', '1w', or seconds when irregular."""
    if step_us <= 0:
        return "unknown"
    for unit_us, unit in ((WEEK_US, "w"), (DAY_US, "d"), (3_600_000_000, "h"), (60_000_000, "m"),
                          (1_000_000, "s")):
        if step_us % unit_us == 0:
            return f"{step_us // unit_us}{unit}"
    return f"{step_us / 1e6:g}s"


def _symbol_groups(frame: pl.DataFrame) -> list[tuple[str | None, pl.DataFrame]]:
    if "symbol" not in frame.columns:
        return [(None, frame)]
    names = frame["symbol"].unique(maintain_order=True).to_list()
    return [(name, frame.filter(pl.col("symbol") == name)) for name in names]


def _daily_weekday_gaps(t: np.ndarray) -> np.ndarray:
    """Missing weekdays between consecutive daily bars; single missing days (holidays) -> 0."""
    days = (t // DAY_US).astype("datetime64[D]")
    missing = np.busday_count(days[:-1] + 1, days[1:]).astype(np.int64)
    missing[missing < 0] = 0  # unsorted input is validation's business, not a gap
    missing[missing == 1] = 0
    return missing


def _intraday_gaps(t: np.ndarray, step: int) -> np.ndarray:
    """Missing bars per step; regular closures (recurring nights, weekends) -> 0."""
    diffs = np.diff(t)
    missing = np.zeros(diffs.shape, dtype=np.int64)
    breaks = np.nonzero(diffs > BREAK_FACTOR * step)[0]
    if breaks.size == 0:
        return missing
    weeks = max((t[-1] - t[0]) / WEEK_US, 1.0)
    needed = max(2.0, REGULAR_WEEK_SHARE * weeks)
    start_tod = t[breaks] % DAY_US
    end_tod = t[breaks + 1] % DAY_US
    length = diffs[breaks]
    keys = np.stack([start_tod, length], axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    regular = counts[inverse.reshape(-1)] >= needed
    # A closure moved by a daylight-saving change keeps its start or its end time of day and
    # changes length by at most an hour: still a closure, not missing data.
    for i in np.nonzero(~regular)[0]:
        same_edge = (start_tod[regular] == start_tod[i]) | (end_tod[regular] == end_tod[i])
        near = np.abs(length[regular] - length[i]) <= HOUR_US
        regular[i] = bool(np.any(same_edge & near))
    sel = breaks[~regular]
    missing[sel] = np.rint(diffs[sel] / step).astype(np.int64) - 1
    return missing


def missing_per_step(timestamps: pl.Series, step: int | None = None) -> np.ndarray:
    """Bars missing before each bar after the first (length n - 1), following the rules above."""
    t = _micros(timestamps)
    if t.size < 3:
        return np.zeros(max(t.size - 1, 0), dtype=np.int64)
    step = step or int(np.median(np.diff(t)))
    if step <= 0:
        return np.zeros(t.size - 1, dtype=np.int64)
    if is_daily(step) and not trades_weekends(timestamps):
        return _daily_weekday_gaps(t)
    return _intraday_gaps(t, step)


def find_gaps(frame: pl.DataFrame, row_column: str | None = None) -> list[Gap]:
    """Every gap of every symbol (see the module rules), oldest first within a symbol."""
    gaps: list[Gap] = []
    for name, bars in _symbol_groups(frame):
        missing = missing_per_step(bars["timestamp"])
        at = np.nonzero(missing > 0)[0]
        # Gather only the gap rows: converting whole columns to Python objects is slow.
        after = bars["timestamp"].gather(at).to_list()
        before = bars["timestamp"].gather(at + 1).to_list()
        rows = bars[row_column].gather(at + 1).to_list() if row_column else [None] * at.size
        for i, a, b, row in zip(at, after, before, rows):
            gaps.append(Gap(name, a, b, int(missing[i]), row))
    return gaps


def _fill_one(bars: pl.DataFrame, symbol: str | None) -> pl.DataFrame:
    t = _micros(bars["timestamp"])
    missing = missing_per_step(bars["timestamp"])
    if not missing.any():
        return bars
    step = int(np.median(np.diff(t)))
    daily_weekdays = is_daily(step) and not trades_weekends(bars["timestamp"])
    new: list[int] = []
    for i in np.nonzero(missing > 0)[0]:
        if daily_weekdays:
            start = (t[i] // DAY_US + 1).astype("datetime64[D]")
            stop = (t[i + 1] // DAY_US).astype("datetime64[D]")
            days = np.arange(start, stop, dtype="datetime64[D]")
            days = days[np.is_busday(days)]
            time_of_day = t[i] % DAY_US
            new.extend(int(d.astype(np.int64)) * DAY_US + int(time_of_day) for d in days)
        else:
            new.extend(int(t[i]) + k * step for k in range(1, int(missing[i]) + 1))
    filler = pl.DataFrame(
        {"timestamp": pl.Series(new, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone(
            "UTC")}
    )
    if symbol is not None:
        filler = filler.with_columns(pl.lit(symbol).alias("symbol"))
    merged = pl.concat([bars, filler], how="diagonal").sort("timestamp")
    return forward_fill_bars(merged)


def forward_fill_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with null prices become flat bars at the previous close with zero volume.

    `frame` holds one symbol in time order. Leading rows without an earlier close stay null.
    """
    prev_close = pl.col("close").forward_fill()
    filled = pl.col("close").is_null()
    return frame.with_columns(
        [pl.when(filled).then(prev_close).otherwise(pl.col(p)).alias(p)
         for p in ("open", "high", "low", "close")]
        + [pl.when(filled).then(0.0).otherwise(pl.col("volume")).alias("volume")]
    )


def fill_gaps(frame: pl.DataFrame) -> pl.DataFrame:
    """Insert the bars that `find_gaps` reports as flat bars (OHLC = previous close, volume 0).

    Only reported gaps are filled: weekends, holidays and session closures stay as they are.
    Inserted bars sit on the symbol's regular spacing (daily weekday data: on the missing
    weekdays, at the time of day of the bar before the gap).
    """
    parts = [_fill_one(bars, name) for name, bars in _symbol_groups(frame)]
    out = pl.concat(parts, how="diagonal")
    keys = ["timestamp", "symbol"] if "symbol" in frame.columns else ["timestamp"]
    return out.select(frame.columns).sort(keys)


def infer_bars_per_year(frame: pl.DataFrame, bars_per_year: float | None = None) -> float:
    """Annualization factor by the module rule; `bars_per_year` (if given) wins."""
    if bars_per_year is not None:
        if bars_per_year <= 0:
            raise ValueError(f"bars_per_year must be positive, got {bars_per_year}")
        return float(bars_per_year)
    _, bars = _symbol_groups(frame)[0]
    ts = bars["timestamp"]
    step = spacing_us(ts)
    if step <= 0:
        return 252.0
    days_per_year = 365.0 if trades_weekends(ts) else 252.0
    if is_daily(step):
        return days_per_year
    if step > DAY_US:
        return 365.25 * DAY_US / step
    per_day = ts.dt.date().value_counts()["count"].median()
    return days_per_year * float(per_day)
