"""Causal indicator expressions over one symbol's bars, sorted by time.

Every function returns polars expressions that read only the columns
`open, high, low, close, volume, timestamp` of the frame they run in and only rows at or
before the current one (shifts are backwards, windows trail, recursions run forward). The
engine evaluates them per symbol, so "row" below means "bar of this symbol".

Conventions follow TA-Lib where TA-Lib defines the indicator:
  * Wilder smoothing is the recursion a_t = a_{t-1} + (x_t - a_{t-1}) / n, i.e. an
    exponential mean with alpha = 1/n that is *seeded* with the simple mean of its first n
    inputs (RSI, ATR) or, for ADX/DI, with the sum of the first n-1 inputs as TA-Lib does.
  * EMAs (MACD, EMA ratios) use alpha = 2/(n+1), seeded with the SMA of the first n values.
    (TA-Lib's MACD seeds its fast EMA later, at the slow EMA's first bar; the two differ
    only during warm-up, by a geometrically decaying amount.)
  * Bollinger bands use the population standard deviation (ddof=0).
  * Stochastic %K/%D is TA-Lib's fast stochastic (STOCHF): %D is the 3-bar SMA of %K.
The `ta` package seeds its recursions differently (RSI and MACD with the first value,
ATR with the mean of n true ranges that include the prior-close-less first bar, ADX/DI with
n-bar sums). The differences decay geometrically, e.g. by (13/14)^t for n=14, so after a
few hundred bars the two agree to float precision; `scripts/bench_features.py` compares
after such a warm-up. `ta` counts an unchanged close as +volume in OBV, TA-Lib as 0; we
follow TA-Lib. `ta` reports Bollinger width in percent; we report the plain ratio.

Degenerate denominators (a zero range or zero deviation) give the neutral value of the
indicator (RSI 50, %K 50, %R -50, %b 0.5, CCI 0, DI/DX 0) rather than NaN, so a flat
stretch does not poison the recursions that follow it. (This departs from TA-Lib, which
returns 0 for RSI and %K there, and from `ta`, which returns 100 for RSI and NaN/inf for the
others.) Warm-up rows are null.
"""

from __future__ import annotations

import math

import polars as pl

OPEN, H, L, C, V = (pl.col(n) for n in ("open", "high", "low", "close", "volume"))


# An indicator that reuses intermediate results returns stages: lists of expressions
# aliased to temporary columns (prefixed by the caller's unique `p`), each stage reading
# only columns of earlier ones, and a last stage of output expressions. Staging makes each
# intermediate computed once; nested expressions would be re-evaluated per use.
Staged = list[list[pl.Expr]]


def name(p: str, what: str) -> str:
    return f"{p}{what}"


def col(p: str, what: str) -> pl.Expr:
    return pl.col(name(p, what))


def row_index() -> pl.Expr:
    return pl.int_range(pl.len())


def safe_div(num: pl.Expr, den: pl.Expr, fallback: float | None) -> pl.Expr:
    """num / den, with `fallback` where den == 0 (a null den stays null)."""
    return pl.when(den == 0).then(pl.lit(fallback, dtype=pl.Float64)).otherwise(num / den)


def seeded_ewm(x: pl.Expr, alpha: float, seed_row: int, seed: pl.Expr) -> pl.Expr:
    """y_t = (1 - alpha) y_{t-1} + alpha x_t for t > seed_row, y_seed_row = seed, null before.

    polars' ewm_mean(adjust=False) starts the recursion at the first non-null input, so
    nulling the rows before `seed_row` and putting the seed value at `seed_row` gives the
    exact seeded recursion as one vectorised expression.
    """
    idx = row_index()
    started = pl.when(idx < seed_row).then(None).when(idx == seed_row).then(seed).otherwise(x)
    return started.ewm_mean(alpha=alpha, adjust=False, min_samples=1)


def log_return(lag: int = 1) -> pl.Expr:
    return (C / C.shift(lag)).log()


def simple_return(lag: int) -> pl.Expr:
    return C / C.shift(lag) - 1.0


def sma(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_mean(n)


def ema(x: pl.Expr, n: int, first_row: int = 0) -> pl.Expr:
    """TA-Lib EMA: alpha 2/(n+1), seeded with the SMA of the first n values of x.

    `first_row` is the first row where x is defined (x is null before it).
    """
    return seeded_ewm(x, 2.0 / (n + 1.0), first_row + n - 1, x.rolling_mean(n))


def wilder_mean(x: pl.Expr, n: int, first_row: int) -> pl.Expr:
    """Wilder average of x seeded with the mean of its first n values (RSI, ATR)."""
    return seeded_ewm(x, 1.0 / n, first_row + n - 1, x.rolling_mean(n))


def rsi(n: int, p: str) -> Staged:
    diff = C.diff()
    avg_gain, avg_loss = col(p, "avg_gain"), col(p, "avg_loss")
    return [
        [
            diff.clip(lower_bound=0.0).alias(name(p, "gain")),
            (-diff).clip(lower_bound=0.0).alias(name(p, "loss")),
        ],
        [
            wilder_mean(col(p, "gain"), n, 1).alias(name(p, "avg_gain")),
            wilder_mean(col(p, "loss"), n, 1).alias(name(p, "avg_loss")),
        ],
        [100.0 * safe_div(avg_gain, avg_gain + avg_loss, 0.5)],
    ]


def macd(fast: int, slow: int, signal: int, p: str) -> Staged:
    line = col(p, "line")
    first_line_row = max(fast, slow) - 1
    return [
        [(ema(C, fast) - ema(C, slow)).alias(name(p, "line"))],
        [ema(line, signal, first_row=first_line_row).alias(name(p, "signal"))],
        [line, col(p, "signal"), line - col(p, "signal")],
    ]


def bollinger(n: int, num_std: float, p: str) -> Staged:
    """(%b, width): %b = (close - lower) / (upper - lower), width = (upper - lower) / middle."""
    mid, band = col(p, "mid"), col(p, "band")
    upper, lower = mid + band, mid - band
    return [
        [
            C.rolling_mean(n).alias(name(p, "mid")),
            (num_std * C.rolling_std(n, ddof=0)).alias(name(p, "band")),
        ],
        [safe_div(C - lower, upper - lower, 0.5), safe_div(upper - lower, mid, None)],
    ]


def true_range() -> pl.Expr:
    """TA-Lib true range: null on the first bar (it needs the previous close)."""
    prev = C.shift(1)
    return pl.max_horizontal(H, prev) - pl.min_horizontal(L, prev) + prev * 0.0


def atr(n: int, p: str) -> Staged:
    return [
        [true_range().alias(name(p, "tr"))],
        [wilder_mean(col(p, "tr"), n, 1).alias(name(p, "atr"))],
        [col(p, "atr"), col(p, "atr") / C],
    ]


def directional(n: int, p: str) -> Staged:
    """(ADX, +DI, -DI) with TA-Lib's seeding.

    TA-Lib keeps Wilder *sums* seeded with the sum of the first n-1 one-bar values; a sum
    is n times the Wilder mean, and the DIs are ratios, so the mean form below is exact.
    """
    up = H - H.shift(1)
    down = L.shift(1) - L
    plus_dm = pl.when((up > down) & (up > 0)).then(up).otherwise(0.0) + up * 0.0
    minus_dm = pl.when((down > up) & (down > 0)).then(down).otherwise(0.0) + down * 0.0

    def wilder_sum_seeded(x: pl.Expr) -> pl.Expr:
        # Seed at row n-1 with sum(x[1..n-1]) / n, then the mean-form Wilder recursion.
        return seeded_ewm(x, 1.0 / n, n - 1, x.rolling_sum(n - 1) / n)

    s_tr, s_plus, s_minus = col(p, "s_tr"), col(p, "s_plus"), col(p, "s_minus")
    plus_di, minus_di, dx = col(p, "plus_di"), col(p, "minus_di"), col(p, "dx")
    valid = row_index() >= n  # TA-Lib's first DI is at row n
    return [
        [
            true_range().alias(name(p, "tr")),
            plus_dm.alias(name(p, "pdm")),
            minus_dm.alias(name(p, "mdm")),
        ],
        [
            wilder_sum_seeded(col(p, "tr")).alias(name(p, "s_tr")),
            wilder_sum_seeded(col(p, "pdm")).alias(name(p, "s_plus")),
            wilder_sum_seeded(col(p, "mdm")).alias(name(p, "s_minus")),
        ],
        [
            pl.when(valid).then(100.0 * safe_div(s_plus, s_tr, 0.0)).alias(name(p, "plus_di")),
            pl.when(valid).then(100.0 * safe_div(s_minus, s_tr, 0.0)).alias(name(p, "minus_di")),
        ],
        [
            (100.0 * safe_div((plus_di - minus_di).abs(), plus_di + minus_di, 0.0)).alias(
                name(p, "dx")
            )
        ],
        [seeded_ewm(dx, 1.0 / n, 2 * n - 1, dx.rolling_mean(n)), plus_di, minus_di],
    ]


def stochastic(n: int, smooth: int, p: str) -> Staged:
    lowest, highest, k = col(p, "lowest"), col(p, "highest"), col(p, "k")
    return [
        [L.rolling_min(n).alias(name(p, "lowest")), H.rolling_max(n).alias(name(p, "highest"))],
        [(100.0 * safe_div(C - lowest, highest - lowest, 0.5)).alias(name(p, "k"))],
        [k, k.rolling_mean(smooth)],
    ]


def williams_r(n: int, p: str) -> Staged:
    lowest, highest = col(p, "lowest"), col(p, "highest")
    return [
        [L.rolling_min(n).alias(name(p, "lowest")), H.rolling_max(n).alias(name(p, "highest"))],
        [-100.0 * safe_div(highest - C, highest - lowest, 0.5)],
    ]


def cci(n: int, p: str, constant: float = 0.015) -> Staged:
    """(tp - SMA(tp)) / (constant * mean |tp_i - SMA(tp)_t| over the window).

    The mean absolute deviation is around the *current* window mean, so it is not a
    running sum; written as n backward shifts it stays one exact vectorised expression
    (n is small, 20 by default).
    """
    tp, mean = col(p, "tp"), col(p, "mean")
    mad = pl.sum_horizontal([(tp.shift(k) - mean).abs() for k in range(n)]) / n
    # sum_horizontal skips nulls; keep the warm-up rows null.
    mad = pl.when(mean.is_not_null()).then(mad)
    return [
        [((H + L + C) / 3.0).alias(name(p, "tp"))],
        [tp.rolling_mean(n).alias(name(p, "mean"))],
        [safe_div(tp - mean, constant * mad, 0.0)],
    ]


def obv(n: int, p: str) -> Staged:
    """TA-Lib OBV (starts at the first bar's volume; +v on up closes, -v on down, 0 if
    equal) and its slope: net signed volume over the last n bars / volume traded, [-1, 1]."""
    direction = C.diff().sign().fill_null(1.0)  # the first bar counts its volume, as TA-Lib
    o = col(p, "obv")
    return [
        [(direction * V).cum_sum().alias(name(p, "obv"))],
        [o, safe_div(o - o.shift(n), V.rolling_sum(n), 0.0)],
    ]


def volume_roc(lag: int) -> pl.Expr:
    return safe_div(V, V.shift(lag), None) - 1.0


def realized_vol(n: int) -> pl.Expr:
    """Rolling sample std (ddof=1) of one-bar log returns, per bar (not annualised)."""
    return log_return().rolling_std(n, ddof=1)


def parkinson_vol(n: int) -> pl.Expr:
    hl = (H / L).log()
    return ((hl * hl).rolling_mean(n) / (4.0 * math.log(2.0))).sqrt()


def garman_klass_vol(n: int) -> pl.Expr:
    hl = (H / L).log()
    co = (C / OPEN).log()
    per_bar = 0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co
    return per_bar.rolling_mean(n).clip(lower_bound=0.0).sqrt()


def zscore(x: pl.Expr, n: int) -> pl.Expr:
    return safe_div(x - x.rolling_mean(n), x.rolling_std(n, ddof=1), 0.0)


def rolling_skew(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_skew(n, bias=True)


def candle() -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(body, upper wick, lower wick) as fractions of the bar range, and range / close."""
    rng = H - L
    body = safe_div(C - OPEN, rng, 0.0)
    upper = safe_div(H - pl.max_horizontal(OPEN, C), rng, 0.0)
    lower = safe_div(pl.min_horizontal(OPEN, C) - L, rng, 0.0)
    return body, upper, lower, rng / C


def distance_high_low(n: int) -> tuple[pl.Expr, pl.Expr]:
    """close / rolling max(high) - 1 (<= 0) and close / rolling min(low) - 1 (>= 0)."""
    return C / H.rolling_max(n) - 1.0, C / L.rolling_min(n) - 1.0


def calendar() -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """sin/cos of the UTC hour of day (with minutes) and of the day of week (Monday = 0).

    Integer arithmetic on epoch minutes: the same numbers as the calendar accessors, without
    their per-row date conversion.
    """
    minutes = pl.col("timestamp").dt.epoch("s") // 60
    minute_of_day = (minutes % 1440).cast(pl.Float64)
    days = minutes // 1440
    dow = ((days + 3) % 7).cast(pl.Float64)  # 1970-01-01 was a Thursday (3 with Monday = 0)
    h = (2.0 * math.pi / 1440.0) * minute_of_day
    d = (2.0 * math.pi / 7.0) * dow
    return h.sin(), h.cos(), d.sin(), d.cos()
