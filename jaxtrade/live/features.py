"""Incremental features: each new bar updates every feature of the spec in O(1) or O(window).

This mirrors `jaxtrade.features` (polars expressions over the whole history) bar by bar with
numpy and floats, for the single-symbol per-bar features of the registry. State is either a
recursion (EMA, Wilder averages, OBV, ADX) or a ring buffer of the last bars that windowed
statistics read (mean, std, min/max, skew, mean absolute deviation: O(window) per bar, and the
windows are small). Conventions match the training engine exactly:

  * a value is NaN where the engine gives null: warm-up rows, and any non-finite result;
  * windowed statistics are NaN while any input in the window is NaN (polars' rolling
    functions with min_samples = window);
  * recursions are seeded at the same row with the same seed (TA-Lib conventions), so the
    row count since the first bar matters: parity with training is exact when the runner sees
    the same history from its first bar; started later, the EMA-type features converge
    geometrically (by (1 - alpha)^bars) to the training values.

Entries with a `timeframe` (e.g. 4h features on 1h bars) run on coarser bars that the
runner builds from the fine ones (`CoarseBars`) with training's closed-bar rule
(`jaxtrade.features.timeframe`): a coarse bar covers [s, s + every) with s a multiple of
`every` since the epoch, and its features reach the fine bars only once it closed, i.e. from
the fine bar t with t + spacing >= s + every (spacing: the smallest bar spacing of training,
`features.bar_spacing_seconds` of the manifest), or from the first bar after it when its last
fine bar is missing. Cross-asset features are computed by the multi-asset runner
(`CrossAsset`); a single symbol has none (the training engine skips them the same way).
"""

from __future__ import annotations

import math

import numpy as np

from .bars import Bar
from .errors import BundleError

NAN = float("nan")
_LN2 = math.log(2.0)


class Ring:
    """The last `capacity` values of a series; `tail(k)` is a contiguous view, oldest first.

    Values are written twice (at i and i + capacity) so any tail is one slice, never a copy.
    """

    __slots__ = ("capacity", "buf", "count")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self.buf = np.full(2 * self.capacity, np.nan)
        self.count = 0

    def push(self, value: float) -> None:
        i = self.count % self.capacity
        self.buf[i] = value
        self.buf[i + self.capacity] = value
        self.count += 1

    def tail(self, k: int) -> np.ndarray | None:
        if self.count < k:
            return None
        end = (self.count - 1) % self.capacity + self.capacity + 1
        return self.buf[end - k : end]

    def lag(self, k: int) -> float:
        """The value k bars ago (0 = the latest); NaN before the series has k+1 values."""
        if self.count <= k:
            return NAN
        return float(self.buf[(self.count - 1 - k) % self.capacity])


# Plain reductions: numpy's mean/std wrappers cost more than the arithmetic at these sizes.
_sum = np.add.reduce


def _mean(x: np.ndarray | None) -> float:
    return NAN if x is None else float(_sum(x)) / len(x)


def _std(x: np.ndarray | None, ddof: int) -> float:
    if x is None or len(x) <= ddof:
        return NAN
    d = x - float(_sum(x)) / len(x)
    return math.sqrt(float(np.dot(d, d)) / (len(x) - ddof))


def _safe_div(num: float, den: float, fallback: float) -> float:
    if math.isnan(den) or math.isnan(num):
        return NAN
    return fallback if den == 0.0 else num / den


class RollingMoments:
    """Sums of (x - anchor)^k (k <= order) over the last `window` values, O(1) per push.

    A NaN counts as missing: while the window holds one, every statistic is NaN (polars'
    rolling functions with min_samples = window). Every `refresh` pushes the sums are
    recomputed from the stored window around a new anchor (the window mean): that bounds the
    rounding drift of add-and-subtract updates and the cancellation in central moments.
    """

    __slots__ = ("window", "order", "refresh", "values", "anchor", "s1", "s2", "s3",
                 "missing", "pushes")

    def __init__(self, window: int, order: int = 2, refresh: int = 64) -> None:
        self.window, self.order, self.refresh = window, order, refresh
        self.values = Ring(window)
        self.anchor = NAN
        self.s1 = self.s2 = self.s3 = 0.0
        self.missing = 0
        self.pushes = 0

    def _add(self, x: float, sign: float) -> None:
        if math.isnan(x):
            self.missing += 1 if sign > 0 else -1
            return
        if math.isnan(self.anchor):
            self.anchor = x
        d = x - self.anchor
        self.s1 += sign * d
        if self.order >= 2:
            d2 = d * d
            self.s2 += sign * d2
            if self.order >= 3:
                self.s3 += sign * d2 * d

    def push(self, x: float) -> None:
        if self.values.count >= self.window:
            self._add(self.values.lag(self.window - 1), -1.0)
        self.values.push(x)
        self._add(x, 1.0)
        self.pushes += 1
        if self.pushes % self.refresh == 0:
            self._recompute()

    def _recompute(self) -> None:
        x = self.values.tail(min(self.values.count, self.window))
        finite = x[~np.isnan(x)]
        self.missing = int(x.size - finite.size)
        if finite.size == 0:
            self.anchor, self.s1, self.s2, self.s3 = NAN, 0.0, 0.0, 0.0
            return
        self.anchor = float(_sum(finite)) / finite.size
        d = finite - self.anchor
        d2 = d * d
        self.s1, self.s2 = float(_sum(d)), float(_sum(d2))
        self.s3 = float(np.dot(d2, d)) if self.order >= 3 else 0.0

    @property
    def ready(self) -> bool:
        return self.values.count >= self.window and self.missing == 0

    def mean(self) -> float:
        return self.anchor + self.s1 / self.window if self.ready else NAN

    def var(self, ddof: int) -> float:
        w = self.window
        if not self.ready or w <= ddof:
            return NAN
        m = self.s1 / w
        return max(self.s2 / w - m * m, 0.0) * w / (w - ddof)

    def std(self, ddof: int) -> float:
        v = self.var(ddof)
        return math.sqrt(v) if v == v else NAN

    def skew(self) -> float:
        """Biased skewness m3 / m2^1.5 (population central moments)."""
        if not self.ready:
            return NAN
        w = self.window
        m = self.s1 / w
        m2 = self.s2 / w - m * m
        m3 = self.s3 / w - 3.0 * m * self.s2 / w + 2.0 * m * m * m
        return _safe_div(m3, max(m2, 0.0) ** 1.5, NAN)


class SeededEwm:
    """y = (1 - alpha) y + alpha x from `seed_row` on, seeded with a value computed there."""

    __slots__ = ("alpha", "seed_row", "value")

    def __init__(self, alpha: float, seed_row: int) -> None:
        self.alpha = alpha
        self.seed_row = seed_row
        self.value = NAN

    def update(self, row: int, x: float, seed: float) -> float:
        if row < self.seed_row:
            return NAN
        if row == self.seed_row:
            self.value = seed
        elif not math.isnan(x):  # a missing input leaves the average where it was
            self.value = (1.0 - self.alpha) * self.value + self.alpha * x
        return self.value


class Context:
    """Series shared by all features of one symbol, updated once per bar before them."""

    def __init__(self, capacity: int) -> None:
        self.row = -1
        self.bar: Bar | None = None
        self.open = Ring(capacity)
        self.high = Ring(capacity)
        self.low = Ring(capacity)
        self.close = Ring(capacity)
        self.volume = Ring(capacity)
        self.logret = Ring(capacity)  # one-bar log return, NaN on the first bar
        self.true_range = NAN

    def update(self, bar: Bar) -> None:
        prev_close = self.close.lag(0)
        self.row += 1
        self.bar = bar
        self.open.push(bar.open)
        self.high.push(bar.high)
        self.low.push(bar.low)
        self.close.push(bar.close)
        self.volume.push(bar.volume)
        self.logret.push(_finite(math.log(bar.close / prev_close)) if self.row > 0 else NAN)
        self.true_range = (
            max(bar.high, prev_close) - min(bar.low, prev_close) if self.row > 0 else NAN
        )


def _finite(x: float) -> float:
    return x if math.isfinite(x) else NAN


# --- one class per registry feature: `lookback` (bars of ring needed), `update(ctx) -> list` ---


class Returns:
    def __init__(self, lags: list[int], log: bool) -> None:
        self.lags, self.log, self.lookback = lags, log, max(lags) + 1

    def update(self, ctx: Context) -> list[float]:
        c = ctx.close.lag(0)
        out = []
        for k in self.lags:
            ratio = c / ctx.close.lag(k)
            out.append(math.log(ratio) if self.log and ratio > 0 else ratio - 1.0)
        return out


class SmaRatio:
    def __init__(self, windows: list[int]) -> None:
        self.moments, self.lookback = [RollingMoments(w, order=1) for w in windows], 1

    def update(self, ctx: Context) -> list[float]:
        c = ctx.close.lag(0)
        out = []
        for m in self.moments:
            m.push(c)
            out.append(c / m.mean() - 1.0)
        return out


class Ema:
    """TA-Lib EMA of a series whose first defined row is `first_row`."""

    def __init__(self, n: int, first_row: int = 0) -> None:
        self.n = n
        self.ewm = SeededEwm(2.0 / (n + 1.0), first_row + n - 1)
        self.inputs = Ring(n)

    def update(self, row: int, x: float) -> float:
        self.inputs.push(x)
        seed = _mean(self.inputs.tail(self.n)) if row == self.ewm.seed_row else NAN
        return self.ewm.update(row, x, seed)


class EmaRatio:
    def __init__(self, windows: list[int]) -> None:
        self.emas = [Ema(w) for w in windows]
        self.lookback = 1

    def update(self, ctx: Context) -> list[float]:
        c = ctx.close.lag(0)
        return [c / ema.update(ctx.row, c) - 1.0 for ema in self.emas]


class WilderMean:
    """Wilder average seeded with the mean of the first n inputs (which start at `first_row`)."""

    def __init__(self, n: int, first_row: int) -> None:
        self.n = n
        self.ewm = SeededEwm(1.0 / n, first_row + n - 1)
        self.inputs = Ring(n)

    def update(self, row: int, x: float) -> float:
        self.inputs.push(x)
        seed = _mean(self.inputs.tail(self.n)) if row == self.ewm.seed_row else NAN
        return self.ewm.update(row, x, seed)


class Rsi:
    def __init__(self, window: int) -> None:
        self.gain, self.loss = WilderMean(window, 1), WilderMean(window, 1)
        self.lookback = 2

    def update(self, ctx: Context) -> list[float]:
        diff = ctx.close.lag(0) - ctx.close.lag(1)
        gain = self.gain.update(ctx.row, max(diff, 0.0) if ctx.row > 0 else NAN)
        loss = self.loss.update(ctx.row, max(-diff, 0.0) if ctx.row > 0 else NAN)
        return [100.0 * _safe_div(gain, gain + loss, 0.5)]


class Macd:
    def __init__(self, fast: int, slow: int, signal: int, relative: bool) -> None:
        self.fast, self.slow = Ema(fast), Ema(slow)
        self.signal = Ema(signal, first_row=max(fast, slow) - 1)
        self.relative, self.lookback = relative, 1

    def update(self, ctx: Context) -> list[float]:
        c = ctx.close.lag(0)
        line = self.fast.update(ctx.row, c) - self.slow.update(ctx.row, c)
        signal = self.signal.update(ctx.row, line)
        out = [line, signal, line - signal]
        return [v / c for v in out] if self.relative else out


class Bollinger:
    def __init__(self, window: int, num_std: float) -> None:
        self.moments, self.num_std, self.lookback = RollingMoments(window), num_std, 1

    def update(self, ctx: Context) -> list[float]:
        self.moments.push(ctx.close.lag(0))
        mid, band = self.moments.mean(), self.num_std * self.moments.std(0)
        upper, lower = mid + band, mid - band
        c = ctx.close.lag(0)
        return [_safe_div(c - lower, upper - lower, 0.5), _safe_div(upper - lower, mid, NAN)]


class Atr:
    def __init__(self, window: int) -> None:
        self.mean, self.lookback = WilderMean(window, 1), 2

    def update(self, ctx: Context) -> list[float]:
        atr = self.mean.update(ctx.row, ctx.true_range)
        return [atr, atr / ctx.close.lag(0)]


class Adx:
    """ADX, +DI, -DI with TA-Lib seeding (see `indicators.directional`)."""

    def __init__(self, n: int) -> None:
        self.n, self.lookback = n, 2
        self.sums = [SeededEwm(1.0 / n, n - 1) for _ in range(3)]
        self.inputs = [Ring(max(n - 1, 1)) for _ in range(3)]
        self.adx = SeededEwm(1.0 / n, 2 * n - 1)
        self.dx = Ring(n)

    def update(self, ctx: Context) -> list[float]:
        n, row = self.n, ctx.row
        if row > 0:
            up = ctx.high.lag(0) - ctx.high.lag(1)
            down = ctx.low.lag(1) - ctx.low.lag(0)
            pdm = up if (up > down and up > 0) else 0.0
            mdm = down if (down > up and down > 0) else 0.0
            raw = (ctx.true_range, pdm, mdm)
        else:
            raw = (NAN, NAN, NAN)
        smoothed = []
        for ewm, ring, x in zip(self.sums, self.inputs, raw):
            ring.push(x)
            seed = NAN
            if row == n - 1:
                window = ring.tail(n - 1)
                seed = NAN if window is None else float(window.sum()) / n
            smoothed.append(ewm.update(row, x, seed))
        s_tr, s_plus, s_minus = smoothed
        if row >= n:
            plus_di = 100.0 * _safe_div(s_plus, s_tr, 0.0)
            minus_di = 100.0 * _safe_div(s_minus, s_tr, 0.0)
            dx = 100.0 * _safe_div(abs(plus_di - minus_di), plus_di + minus_di, 0.0)
        else:
            plus_di = minus_di = dx = NAN
        self.dx.push(dx)
        seed = _mean(self.dx.tail(n)) if row == 2 * n - 1 else NAN
        return [self.adx.update(row, dx, seed), plus_di, minus_di]


class Stochastic:
    def __init__(self, window: int, smooth: int) -> None:
        self.window, self.smooth, self.lookback = window, smooth, window
        self.k = Ring(smooth)

    def update(self, ctx: Context) -> list[float]:
        lows, highs = ctx.low.tail(self.window), ctx.high.tail(self.window)
        if lows is None:
            k = NAN
        else:
            lowest, highest = float(lows.min()), float(highs.max())
            k = 100.0 * _safe_div(ctx.close.lag(0) - lowest, highest - lowest, 0.5)
        self.k.push(k)
        return [k, _mean(self.k.tail(self.smooth))]


class WilliamsR:
    def __init__(self, window: int) -> None:
        self.window, self.lookback = window, window

    def update(self, ctx: Context) -> list[float]:
        lows, highs = ctx.low.tail(self.window), ctx.high.tail(self.window)
        if lows is None:
            return [NAN]
        lowest, highest = float(lows.min()), float(highs.max())
        return [-100.0 * _safe_div(highest - ctx.close.lag(0), highest - lowest, 0.5)]


class Cci:
    def __init__(self, window: int) -> None:
        self.window, self.lookback = window, 1
        self.tp = Ring(window)

    def update(self, ctx: Context) -> list[float]:
        b = ctx.bar
        tp = (b.high + b.low + b.close) / 3.0
        self.tp.push(tp)
        x = self.tp.tail(self.window)
        if x is None:
            return [NAN]
        mean = _mean(x)
        mad = float(_sum(np.abs(x - mean))) / self.window
        return [_safe_div(tp - mean, 0.015 * mad, 0.0)]


class Obv:
    def __init__(self, window: int) -> None:
        self.window, self.lookback = window, window
        self.obv = Ring(window + 1)
        self.total = 0.0

    def update(self, ctx: Context) -> list[float]:
        diff = ctx.close.lag(0) - ctx.close.lag(1)
        direction = 1.0 if ctx.row == 0 else float(np.sign(diff))
        self.total += direction * ctx.volume.lag(0)
        self.obv.push(self.total)
        volume = ctx.volume.tail(self.window)
        past = self.obv.lag(self.window)
        slope = NAN if volume is None else _safe_div(self.total - past, float(volume.sum()), 0.0)
        return [self.total, slope]


class VolumeRoc:
    def __init__(self, lags: list[int]) -> None:
        self.lags, self.lookback = lags, max(lags) + 1

    def update(self, ctx: Context) -> list[float]:
        v = ctx.volume.lag(0)
        return [_safe_div(v, ctx.volume.lag(k), NAN) - 1.0 for k in self.lags]


class RealizedVol:
    def __init__(self, windows: list[int]) -> None:
        self.moments, self.lookback = [RollingMoments(w) for w in windows], 1

    def update(self, ctx: Context) -> list[float]:
        r = ctx.logret.lag(0)
        out = []
        for m in self.moments:
            m.push(r)
            out.append(m.std(1))
        return out


class RangeVol:
    """Parkinson (high/low) or Garman-Klass (OHLC) volatility over a window."""

    def __init__(self, window: int, garman_klass: bool) -> None:
        self.garman_klass, self.lookback = garman_klass, 1
        self.per_bar = RollingMoments(window, order=1)

    def update(self, ctx: Context) -> list[float]:
        b = ctx.bar
        hl = math.log(b.high / b.low)
        if self.garman_klass:
            co = math.log(b.close / b.open)
            self.per_bar.push(0.5 * hl * hl - (2.0 * _LN2 - 1.0) * co * co)
            mean = self.per_bar.mean()
            return [math.sqrt(max(mean, 0.0)) if mean == mean else NAN]
        self.per_bar.push(hl * hl)
        mean = self.per_bar.mean()
        return [math.sqrt(mean / (4.0 * _LN2)) if mean == mean else NAN]


class ZScore:
    def __init__(self, column: str, windows: list[int]) -> None:
        self.column, self.lookback = column, 1
        self.moments = [RollingMoments(w) for w in windows]

    def _source(self, ctx: Context) -> float:
        if self.column == "close":
            return ctx.close.lag(0)
        if self.column == "volume":
            return ctx.volume.lag(0)
        if self.column == "log_volume":
            return _finite(math.log(ctx.volume.lag(0) + 1.0))
        return ctx.logret.lag(0)

    def update(self, ctx: Context) -> list[float]:
        x = self._source(ctx)
        out = []
        for m in self.moments:
            m.push(x)
            out.append(_safe_div(x - m.mean(), m.std(1), 0.0))
        return out


class Skew:
    def __init__(self, windows: list[int]) -> None:
        self.moments, self.lookback = [RollingMoments(w, order=3) for w in windows], 1

    def update(self, ctx: Context) -> list[float]:
        r = ctx.logret.lag(0)
        out = []
        for m in self.moments:
            m.push(r)
            out.append(m.skew())
        return out


class Candle:
    lookback = 1

    def update(self, ctx: Context) -> list[float]:
        b = ctx.bar
        rng = b.high - b.low
        return [
            _safe_div(b.close - b.open, rng, 0.0),
            _safe_div(b.high - max(b.open, b.close), rng, 0.0),
            _safe_div(min(b.open, b.close) - b.low, rng, 0.0),
            rng / b.close,
        ]


class HighLowDistance:
    def __init__(self, windows: list[int]) -> None:
        self.windows, self.lookback = windows, max(windows)

    def update(self, ctx: Context) -> list[float]:
        c, out = ctx.close.lag(0), []
        for w in self.windows:
            highs, lows = ctx.high.tail(w), ctx.low.tail(w)
            if highs is None:
                out += [NAN, NAN]
            else:
                out += [c / float(highs.max()) - 1.0, c / float(lows.min()) - 1.0]
        return out


class Calendar:
    lookback = 1

    def update(self, ctx: Context) -> list[float]:
        seconds = ctx.bar.timestamp_us // 1_000_000
        day_seconds = seconds % 86_400
        hour = (day_seconds // 3600) + ((day_seconds % 3600) // 60) / 60.0
        dow = ((seconds // 86_400) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        h = 2.0 * math.pi * hour / 24.0
        d = 2.0 * math.pi * dow / 7.0
        return [math.sin(h), math.cos(h), math.sin(d), math.cos(d)]


def _build(name: str, p: dict):
    builders = {
        "returns": lambda: Returns(p["lags"], log=False),
        "log_returns": lambda: Returns(p["lags"], log=True),
        "sma_ratio": lambda: SmaRatio(p["windows"]),
        "ema_ratio": lambda: EmaRatio(p["windows"]),
        "rsi": lambda: Rsi(p["window"]),
        "macd": lambda: Macd(p["fast"], p["slow"], p["signal"], p["relative"]),
        "bollinger": lambda: Bollinger(p["window"], p["num_std"]),
        "atr": lambda: Atr(p["window"]),
        "adx": lambda: Adx(p["window"]),
        "stochastic": lambda: Stochastic(p["window"], p["smooth"]),
        "williams_r": lambda: WilliamsR(p["window"]),
        "cci": lambda: Cci(p["window"]),
        "obv": lambda: Obv(p["window"]),
        "volume_roc": lambda: VolumeRoc(p["lags"]),
        "realized_vol": lambda: RealizedVol(p["windows"]),
        "parkinson_vol": lambda: RangeVol(p["window"], garman_klass=False),
        "garman_klass_vol": lambda: RangeVol(p["window"], garman_klass=True),
        "zscore": lambda: ZScore(p["column"], p["windows"]),
        "skew": lambda: Skew(p["windows"]),
        "candle": lambda: Candle(),
        "high_low_distance": lambda: HighLowDistance(p["windows"]),
        "calendar": lambda: Calendar(),
    }
    if name not in builders:
        raise BundleError(f"feature {name!r} has no incremental implementation in the runner")
    try:
        return builders[name]()
    except KeyError as err:
        raise BundleError(f"feature {name!r}: parameter {err} missing from the manifest") from None


SUPPORTED = (
    "returns log_returns sma_ratio ema_ratio rsi macd bollinger atr adx stochastic williams_r "
    "cci obv volume_roc realized_vol parkinson_vol garman_klass_vol zscore skew candle "
    "high_low_distance calendar"
).split()
# Produce no column for a single symbol (the training engine skips them the same way).
CROSS_ASSET = ("cross_corr", "turbulence")


class CoarseBars:
    """The features of one timeframe's entries on coarser bars built from the fine bars."""

    def __init__(self, every_seconds: int, spacing_us: int, features: list) -> None:
        self.every_us = int(every_seconds) * 1_000_000
        self.spacing_us = int(spacing_us)
        self.features = features
        capacity = max([f.lookback for f in features] + [2]) + 1
        self.context = Context(capacity)
        self.bucket: int | None = None  # the open time of the coarse bar being built
        self.open = self.high = self.low = self.close = self.volume = NAN
        self.closed = True  # the bucket was handed to the features
        self.latest: list[list[float]] | None = None  # per entry, of the last closed bar

    def _close(self) -> None:
        bar = Bar(self.bucket, self.open, self.high, self.low, self.close, self.volume)
        self.context.update(bar)
        self.latest = [f.update(self.context) for f in self.features]
        self.closed = True

    def update(self, bar: Bar) -> None:
        bucket = bar.timestamp_us - bar.timestamp_us % self.every_us
        if bucket != self.bucket:
            if not self.closed:  # its last fine bar never came: it closed before this bar
                self._close()
            self.bucket, self.closed = bucket, False
            self.open, self.high, self.low = bar.open, bar.high, bar.low
            self.close, self.volume = bar.close, bar.volume
        else:
            self.high, self.low = max(self.high, bar.high), min(self.low, bar.low)
            self.close, self.volume = bar.close, self.volume + bar.volume
        if bar.timestamp_us + self.spacing_us >= bucket + self.every_us:
            self._close()


def _width(feature) -> int:
    """Columns a feature writes (asked of a fresh copy on one bar)."""
    context = Context(max(feature.lookback, 2) + 1)
    context.update(Bar(0, 1.0, 1.0, 1.0, 1.0, 1.0))
    return len(feature.update(context))


class FeatureEngine:
    """All features of a spec (`FeatureSpec.to_dict()` entries), updated bar by bar.

    `bar_spacing_seconds`: the smallest spacing of training's bars, needed by `timeframe`
    entries (the manifest's `features.bar_spacing_seconds`)."""

    def __init__(
        self,
        entries: list[dict],
        bar_spacing_seconds: float | None = None,
        cross_asset: bool = False,
    ) -> None:
        """`cross_asset`: leave a slot for the cross-asset entries in `parts` (the multi-asset
        runner fills them, multi.CrossAsset); without it they are skipped, as for one symbol."""
        self.features = []
        # Per output entry: ("fine", index into self.features), (timeframe, index, width) or
        # ("cross", index into self.cross_entries).
        self.plan: list[tuple] = []
        self.cross_entries: list[dict] = []
        coarse: dict[str, list] = {}
        for raw in entries:
            entry = dict(raw)
            name = entry.pop("name")
            timeframe = entry.pop("timeframe", None)
            if name in CROSS_ASSET:
                if cross_asset:
                    self.plan.append(("cross", len(self.cross_entries)))
                    self.cross_entries.append(dict(raw))
                continue
            if timeframe:
                if not bar_spacing_seconds:
                    raise BundleError(
                        f"feature {name!r} has timeframe={timeframe!r} but the manifest gives no "
                        "features.bar_spacing_seconds (export it again)"
                    )
                feature = _build(name, entry)
                members = coarse.setdefault(str(timeframe), [])
                self.plan.append((str(timeframe), len(members), _width(feature)))
                members.append(feature)
            else:
                self.plan.append(("fine", len(self.features)))
                self.features.append(_build(name, entry))
        spacing_us = int(round(float(bar_spacing_seconds or 0) * 1e6))
        self.coarse = {
            tf: CoarseBars(_timeframe_seconds(tf), spacing_us, members)
            for tf, members in coarse.items()
        }
        capacity = max([f.lookback for f in self.features] + [2]) + 1
        self.context = Context(capacity)

    def update(self, bar: Bar) -> np.ndarray:
        """Raw (unnormalized) feature values at this bar, NaN where training has null."""
        if self.coarse or self.cross_entries:
            values = [v for part in self.parts(bar) if part is not None for v in part]
        else:
            self.context.update(bar)
            values = [v for f in self.features for v in f.update(self.context)]
        out = np.asarray(values, dtype=np.float64)
        out[~np.isfinite(out)] = np.nan
        return out

    def parts(self, bar: Bar) -> list[list[float] | None]:
        """This bar's values per spec entry, in spec order (None: a cross-asset entry)."""
        self.context.update(bar)
        fine = [f.update(self.context) for f in self.features]
        for frame in self.coarse.values():
            frame.update(bar)
        out: list[list[float] | None] = []
        for step in self.plan:
            if step[0] == "fine":
                out.append(fine[step[1]])
            elif step[0] == "cross":
                out.append(None)
            else:
                latest = self.coarse[step[0]].latest
                out.append(latest[step[1]] if latest is not None else [NAN] * step[2])
        return out


_TIMEFRAME_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _timeframe_seconds(timeframe: str) -> int:
    """`jaxtrade.features.spec.timeframe_seconds` (the runner imports no jaxtrade)."""
    try:
        return int(timeframe[:-1]) * _TIMEFRAME_UNITS[timeframe[-1]]
    except (KeyError, ValueError):
        raise BundleError(f"timeframe {timeframe!r} is not like 15m, 4h, 1d or 1w") from None


class Normalizer:
    """`Normalizer.to_dict()` of training applied per bar: clip((x - center) / scale), NaN -> 0."""

    def __init__(self, stats: dict) -> None:
        self.center = np.asarray(stats["center"], dtype=np.float64)
        self.scale = np.asarray(stats["scale"], dtype=np.float64)
        self.clip = stats.get("clip")
        self.names = list(stats.get("feature_names", []))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            y = (x - self.center) / self.scale
            if self.clip is not None:
                y = np.clip(y, -self.clip, self.clip)
        y[~np.isfinite(y)] = 0.0
        return y
