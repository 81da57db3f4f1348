"""Features that look across assets at the same bar: correlation and turbulence.

Both read the one-bar log returns of every symbol at timestamps <= t only. The rolling
correlation is a polars expression; the turbulence index needs a small linear solve per
bar, which polars cannot express, so it is a vectorised numpy computation over the wide
[T, A] return matrix (done in blocks so memory stays bounded).
"""

from __future__ import annotations

import numpy as np
import polars as pl

RET = "__logret"


def cross_corr(frame: pl.DataFrame, window: int) -> pl.Series:
    """Rolling corr(own log return, mean log return of the other assets at that bar).

    `frame` is long (timestamp, symbol, RET), sorted by symbol then time. Returns a series
    aligned with `frame`'s rows.
    """
    r = pl.col(RET)
    total = r.sum().over("timestamp")
    count = r.count().over("timestamp")
    # Where the asset's own return is null the correlation window is null anyway.
    others = pl.when(count > 1).then((total - r) / (count - 1))
    # Two steps: a window over timestamps nested in a window over symbols gives nulls.
    with_others = frame.select("symbol", RET, others.alias("__others"))
    out = with_others.select(
        pl.rolling_corr(r, pl.col("__others"), window_size=window).over("symbol")
    )
    return out.to_series()


def turbulence(wide_returns: np.ndarray, window: int, block_rows: int = 65_536) -> np.ndarray:
    """Turbulence d_t = (r_t - mu)' S^-1 (r_t - mu), mu/S over bars t-window .. t-1.

    `wide_returns` is [T, A] with NaN where an asset has no return (treated as 0). The
    covariance gets a tiny ridge (1e-9 of its mean variance) so a degenerate window still
    solves. The first `window` bars are NaN.
    """
    r = np.nan_to_num(np.asarray(wide_returns, dtype=np.float64))
    num_bars, num_assets = r.shape
    out = np.full(num_bars, np.nan)
    for start in range(window, num_bars, block_rows):
        end = min(start + block_rows, num_bars)
        # Rows [start - window, end): window sums for t in [start, end) from prefix sums.
        chunk = r[start - window : end]
        c1 = np.concatenate([np.zeros((1, num_assets)), np.cumsum(chunk, axis=0)])
        outer = chunk[:, :, None] * chunk[:, None, :]
        c2 = np.concatenate([np.zeros((1, num_assets, num_assets)), np.cumsum(outer, axis=0)])
        n = end - start
        s1 = c1[window : window + n] - c1[:n]
        s2 = c2[window : window + n] - c2[:n]
        mean = s1 / window
        cov = (s2 - window * mean[:, :, None] * mean[:, None, :]) / (window - 1)
        ridge = 1e-9 * np.trace(cov, axis1=1, axis2=2) / num_assets + 1e-18
        cov = cov + ridge[:, None, None] * np.eye(num_assets)
        dev = r[start:end] - mean
        out[start:end] = np.einsum("ta,ta->t", dev, np.linalg.solve(cov, dev[:, :, None])[..., 0])
    return out
