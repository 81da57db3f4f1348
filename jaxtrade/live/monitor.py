"""Degradation and drift alerts of a running policy (numpy + standard library only).

Degradation: the annualized Sharpe ratio of the paper ledger over the last `sharpe_window`
bars below `min_sharpe` (default 1.0 over 100 bars), and its drawdown from the peak since
trading started deeper than the backtest's worst (the bundle's `monitor.backtest_max_drawdown`,
written at export from the run's report).

Drift: the population stability index (PSI) of the last `drift_window` (default 150)
close-to-close log returns against the training split's returns stored in the bundle
(`monitor.returns`: the deciles of the training returns as bin edges, and the share of
training returns in each bin):

    PSI = sum_b (a_b - e_b) ln(a_b / e_b)      (a: the window's shares, e: training's)

alerting above `drift_psi` (default 0.25, the customary "significant shift" level). For a
window of bars from the training distribution PSI is about chi-square(9) / window, so 0.25
is far in its tail: on held-out i.i.d. bars (1,800 training returns as reference) a
150-bar window exceeded it in 0.07 % of the checks at worst, a 100-bar window in up to
1.5 %, and after the volatility triples a 150-bar window alerts within 92 bars (median 59)
(measured over 4 seeds; tests/test_live_follow.py checks <= 2 % and the delay). Markets
whose volatility moves in regimes shift by this measure every time the regime changes:
raise `drift_window` or `drift_psi` there, or read the alerts as regime changes.

Feature drift: the same PSI for every policy input. At export the bundle stores, per
normalized feature, the deciles of its training-split values and the shares in each bin
(`monitor.features`; features with fewer than 5 distinct deciles, e.g. discrete or constant
ones, are left out). The runner keeps the bins of the last `feature_window` (default 300)
normalized rows it fed the policy (incremental counts, O(features x bins) per bar) and alerts
when the median over the features of their PSI exceeds `feature_psi` (default 0.5); the alert
names the features that moved most. Features are autocorrelated (rolling windows), so one
feature's PSI swings far more than the returns' on unchanged data, and a few non-stationary
inputs (price levels, trend lengths) sit above any threshold; the median over all features
is what stays put. Measured on held-out bars of the steady synthetic market of
tests/test_live_follow.py (the same distribution as training, 4 seeds x 2,700 checked bars):
with a 300-bar window the median PSI never exceeded 0.42 (99th percentiles 0.19-0.34), so
0.5 raised no false alarm; after the volatility triples it passes 0.5 after 126 and 198 bars
(2 seeds). A 250-bar window alerts sooner (100-165 bars) but reached 0.54 on calm bars.
tests/test_live_follow.py checks <= 2 % of bars above the threshold, no alert on calm bars,
and the alert within 200 bars of the shift.

Each alert fires once when its condition starts and again only after the condition cleared:
the Sharpe at or above the threshold for a whole `sharpe_window` of bars, the equity at a new
peak, the PSI below half the threshold (so a figure hovering at a threshold does not chatter).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

PSI_FLOOR = 1e-4  # shares are floored so an empty bin adds a large but finite term


def reference_bins(log_returns: np.ndarray, bins: int = 10) -> dict:
    """The training returns' decile edges (bins - 1 interior edges) and the share of the
    returns in each bin: the `monitor.returns` section of a bundle manifest."""
    r = np.asarray(log_returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < bins * 5:
        raise ValueError(f"{r.size} training returns are too few for {bins} bins")
    edges = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = np.bincount(np.searchsorted(edges, r, side="right"), minlength=edges.size + 1)
    return {"edges": edges.tolist(), "shares": (shares / r.size).tolist(), "num_returns": r.size}


def reference_feature_bins(rows: np.ndarray, names: list[str], bins: int = 10) -> dict:
    """Per feature column of `rows` [N, F] (normalized training values), `reference_bins`,
    or None where it has fewer than bins // 2 distinct deciles: the `monitor.features`
    section of a bundle manifest."""
    rows = np.asarray(rows, dtype=np.float64)
    out = []
    for j in range(rows.shape[1]):
        try:
            ref = reference_bins(rows[:, j], bins)
        except ValueError:
            ref = None
        out.append(ref if ref is not None and len(ref["edges"]) >= bins // 2 else None)
    return {"names": list(names), "bins": out}


class FeatureDrift:
    """Median PSI over features of the last `window` rows against `monitor.features`."""

    def __init__(self, section: dict, window: int) -> None:
        keep = [j for j, ref in enumerate(section["bins"]) if ref is not None]
        if not keep:
            raise ValueError("no feature with a usable training distribution")
        self.columns = np.asarray(keep)
        self.names = [section["names"][j] for j in keep]
        width = max(len(section["bins"][j]["edges"]) for j in keep)
        # Edges padded with +inf (never <= a value): a row's bins in one comparison.
        self.edges = np.full((len(keep), width), np.inf)
        self.expected = np.full((len(keep), width + 1), 1.0)  # padding bins: never filled
        self.used = np.zeros((len(keep), width + 1), bool)
        for i, j in enumerate(keep):
            edges, shares = section["bins"][j]["edges"], section["bins"][j]["shares"]
            self.edges[i, : len(edges)] = edges
            self.expected[i, : len(shares)] = np.maximum(shares, PSI_FLOOR)
            self.used[i, : len(shares)] = True
        self.window = int(window)
        self.counts = np.zeros(self.used.shape)
        self.history = np.zeros((self.window, len(keep)), np.int64)
        self.seen = 0
        self.rows = np.arange(len(keep))

    def update(self, row: np.ndarray) -> np.ndarray | None:
        """Push one normalized row; the PSI per kept feature once the window is full."""
        x = np.asarray(row, dtype=np.float64)[self.columns]
        bins = (self.edges <= x[:, None]).sum(axis=1)
        slot = self.seen % self.window
        if self.seen >= self.window:
            self.counts[self.rows, self.history[slot]] -= 1.0
        self.counts[self.rows, bins] += 1.0
        self.history[slot] = bins
        self.seen += 1
        if self.seen < self.window:
            return None
        actual = np.maximum(self.counts / self.window, PSI_FLOOR)
        terms = np.where(self.used, (actual - self.expected) * np.log(actual / self.expected), 0.0)
        return terms.sum(axis=1)


def psi(values: np.ndarray, reference: dict) -> float:
    """Population stability index of `values` against a `reference_bins` section."""
    edges = np.asarray(reference["edges"], dtype=np.float64)
    expected = np.maximum(np.asarray(reference["shares"], dtype=np.float64), PSI_FLOOR)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    actual = np.maximum(counts / max(len(values), 1), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class Monitor:
    """Feeds on each bar's close and the ledger's equity; returns the alerts it raises."""

    def __init__(
        self,
        manifest: dict,
        *,
        bars_per_year: float,
        sharpe_window: int = 100,
        min_sharpe: float | None = 1.0,
        max_drawdown: float | None = None,
        drift_window: int = 150,
        drift_psi: float | None = 0.25,
        feature_window: int = 300,
        feature_psi: float | None = 0.5,
    ) -> None:
        section = manifest.get("monitor") or {}
        self.feature_psi = feature_psi
        self.features = None
        if feature_psi is not None and section.get("features"):
            try:
                self.features = FeatureDrift(section["features"], feature_window)
            except (ValueError, KeyError, TypeError):
                self.features = None  # nothing to compare with: the rule is off
        self.last_feature_psi = math.nan
        self.reference = section.get("returns") if drift_psi is not None else None
        self.bars_per_year = float(bars_per_year)
        self.sharpe_window, self.min_sharpe = int(sharpe_window), min_sharpe
        worst = section.get("backtest_max_drawdown")
        # The limit is a negative fraction; None (no report at export) turns the rule off.
        self.max_drawdown = max_drawdown if max_drawdown is not None else worst
        self.drift_window, self.drift_psi = int(drift_window), drift_psi
        self.returns: deque[float] = deque(maxlen=self.drift_window)
        self.equity: deque[float] = deque(maxlen=self.sharpe_window + 1)
        self.prev_close = math.nan
        self.peak = -math.inf
        self.active: set[str] = set()
        self.last_psi = math.nan
        self._sharpe_ok_bars = 0

    def describe(self) -> str:
        parts = []
        if self.min_sharpe is not None:
            parts.append(f"Sharpe < {self.min_sharpe:g} over {self.sharpe_window} bars")
        if self.max_drawdown is not None:
            parts.append(f"drawdown deeper than {self.max_drawdown:.1%}")
        if self.reference is not None:
            parts.append(f"return PSI > {self.drift_psi:g} over {self.drift_window} bars")
        if self.features is not None:
            parts.append(f"median feature PSI > {self.feature_psi:g} over "
                         f"{self.features.window} bars")
        return "; ".join(parts) or "nothing (no thresholds)"

    def _raise(self, kind: str, active: bool, clear: bool, payload: dict) -> list[dict]:
        if active and kind not in self.active:
            self.active.add(kind)
            return [dict(kind=kind, **payload)]
        if clear and kind in self.active:
            self.active.discard(kind)
        return []

    def on_features(self, row: np.ndarray, timestamp: str) -> list[dict]:
        """This bar's feature-drift alert: `row` is the normalized features fed the policy
        (several symbols: one row each, pushed in turn)."""
        if self.features is None:
            return []
        values = self.features.update(row)
        if values is None:
            return []
        median = float(np.median(values))
        self.last_feature_psi = median
        top = np.argsort(values)[::-1][:5]
        return self._raise(
            "feature_drift",
            median > self.feature_psi,
            median < self.feature_psi / 2,
            {
                "timestamp": timestamp,
                "median_psi": round(median, 4),
                "threshold": self.feature_psi,
                "window_bars": self.features.window,
                "features": {self.features.names[i]: round(float(values[i]), 3) for i in top},
                "message": f"the policy's inputs shifted from training's: median feature PSI "
                f"{median:.3f} > {self.feature_psi:g} over the last {self.features.window} "
                f"bars (most: {', '.join(self.features.names[i] for i in top[:3])})",
            },
        )

    def on_bar(self, close: float, equity: float | None, timestamp: str) -> list[dict]:
        """This bar's alerts; `equity` is None before the ledger trades."""
        alerts: list[dict] = []
        if math.isfinite(self.prev_close) and self.prev_close > 0 and close > 0:
            self.returns.append(math.log(close / self.prev_close))
        self.prev_close = close
        if self.reference is not None and len(self.returns) == self.drift_window:
            value = psi(np.fromiter(self.returns, np.float64), self.reference)
            self.last_psi = value
            alerts += self._raise(
                "drift",
                value > self.drift_psi,
                value < self.drift_psi / 2,
                {
                    "timestamp": timestamp,
                    "psi": round(value, 4),
                    "threshold": self.drift_psi,
                    "window_bars": self.drift_window,
                    "message": f"the last {self.drift_window} returns' distribution shifted from "
                    f"training's (PSI {value:.3f} > {self.drift_psi:g})",
                },
            )
        if equity is None:
            return alerts
        self.equity.append(float(equity))
        self.peak = max(self.peak, float(equity))
        if self.min_sharpe is not None and len(self.equity) == self.sharpe_window + 1:
            curve = np.fromiter(self.equity, np.float64)
            r = curve[1:] / curve[:-1] - 1.0
            std = r.std(ddof=1)
            sharpe = float(r.mean() / std * math.sqrt(self.bars_per_year)) if std > 0 else 0.0
            self._sharpe_ok_bars = self._sharpe_ok_bars + 1 if sharpe >= self.min_sharpe else 0
            alerts += self._raise(
                "sharpe",
                sharpe < self.min_sharpe,
                self._sharpe_ok_bars >= self.sharpe_window,
                {
                    "timestamp": timestamp,
                    "sharpe": round(sharpe, 4),
                    "threshold": self.min_sharpe,
                    "window_bars": self.sharpe_window,
                    "message": f"live Sharpe {sharpe:.2f} over the last {self.sharpe_window} bars "
                    f"is below {self.min_sharpe:g}",
                },
            )
        if self.max_drawdown is not None and self.peak > 0:
            drawdown = float(equity) / self.peak - 1.0
            alerts += self._raise(
                "drawdown",
                drawdown < self.max_drawdown,
                drawdown >= 0.0,
                {
                    "timestamp": timestamp,
                    "drawdown": round(drawdown, 6),
                    "threshold": self.max_drawdown,
                    "message": f"drawdown {drawdown:.1%} is deeper than the backtest's worst "
                    f"{self.max_drawdown:.1%}",
                },
            )
        return alerts
