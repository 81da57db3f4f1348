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
    ) -> None:
        section = manifest.get("monitor") or {}
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
        return "; ".join(parts) or "nothing (no thresholds)"

    def _raise(self, kind: str, active: bool, clear: bool, payload: dict) -> list[dict]:
        if active and kind not in self.active:
            self.active.add(kind)
            return [dict(kind=kind, **payload)]
        if clear and kind in self.active:
            self.active.discard(kind)
        return []

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
