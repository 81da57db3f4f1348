"""The runner: bar in -> validated -> fills -> features -> policy -> decision out, per bar.

For each raw record from a source:
  1. parse and order-check it (bad bars are logged with their reason and skipped);
  2. fill the order decided at the previous bar on this bar's open (paper ledger);
  3. update features incrementally, normalize, push into the observation window;
  4. once trading (from `start`) and the window is full: observation = window + portfolio
     state, numpy policy forward pass, action -> target weight with the env's risk rules;
  5. write bar, decision and fills to the replay store in one transaction, then emit the
     decision line (the acknowledgement: a printed bar is already durable in the store).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

import numpy as np

from .bars import Bar, BarGate
from .bundle import Bundle
from .errors import BarRejected, BundleError
from .features import FeatureEngine, Normalizer, Ring
from .formats import BarFormat
from .ledger import Ledger, summary
from .network import ActorNetwork
from .regimes import RegimeFilter
from .sinks import Sink
from .sources import MalformedRecord
from .store import ReplayStore

log = logging.getLogger("jaxtrade.live")
F32 = np.float32


class MarketState:
    """ATR and volatility as `jaxtrade.market` computes them (costs and risk read them)."""

    def __init__(self, atr_window: int = 14, volatility_window: int = 20) -> None:
        self.atr_window, self.volatility_window = atr_window, volatility_window
        self.returns = Ring(volatility_window)
        self.prev_close = math.nan
        self.atr = math.nan
        self.count = 0
        self.volatility = 0.0

    def update(self, bar: Bar) -> None:
        prev = bar.close if self.count == 0 else self.prev_close
        tr = max(bar.high - bar.low, abs(bar.high - prev), abs(bar.low - prev))
        if self.count == 0:
            self.atr = tr
        else:
            n = min(self.count + 1, self.atr_window)
            self.atr = self.atr + (tr - self.atr) / n
        self.returns.push(0.0 if self.count == 0 else math.log(bar.close / prev))
        self.count += 1
        self.prev_close = bar.close
        n = min(self.count, self.volatility_window)
        if n > 1:
            x = self.returns.tail(n)
            d = x - float(np.add.reduce(x)) / n
            self.volatility = math.sqrt(max(float(np.dot(d, d)) / (n - 1), 0.0))
        else:
            self.volatility = 0.0


class Runner:
    def __init__(
        self,
        bundle: Bundle,
        *,
        sink: Sink | None = None,
        store: ReplayStore | None = None,
        initial_equity: float | None = None,
        max_age_seconds: float | None = None,
        purge_every_bars: int = 1000,
    ) -> None:
        m = bundle.manifest
        # Age policy of the replay store: rows older than this are deleted every
        # `purge_every_bars` bars (and once at start by the CLI).
        self.max_age_seconds = max_age_seconds
        self.purge_every_bars = purge_every_bars
        self.manifest = m
        # How training read its bars; every record from every source is read through it.
        self.format = BarFormat(m.get("bars"))
        if self.format.spec.get("fill_gaps") == "ffill":
            log.warning("training filled gaps with flat bars (fill_gaps='ffill'); this runner "
                        "does not, so features after a gap can differ from training's")
        try:
            features, observation = m["features"], m["observation"]
            self.window_bars = int(observation["window_bars"])
            self.layout = observation.get("layout", "flat")
            self.include_portfolio = bool(observation.get("include_portfolio", True))
            self.features = FeatureEngine(features["spec"]["features"])
            self.normalizer = Normalizer(features["normalizer"])
            regimes = features.get("regimes")
            self.regimes = RegimeFilter(regimes) if regimes else None
            self.regime_in_features = int(features.get("regime_columns_in_features", 0))
            self.network = ActorNetwork(m["network"], bundle.weights)
            trading = dict(m["trading"])
            if initial_equity is not None:
                trading["initial_equity"] = float(initial_equity)
            self.ledger = Ledger(m["costs"], trading, m.get("risk", {}), m["action"])
            market = m.get("market", {})
            self.market_state = MarketState(
                int(market.get("atr_window", 14)), int(market.get("volatility_window", 20))
            )
        except KeyError as err:
            raise BundleError(f"manifest lacks {err}") from None
        if self.layout not in ("flat", "window"):
            raise BundleError(f"observation layout {self.layout!r} is not supported")
        self.num_features = len(self.normalizer.center)
        # Rows written twice (at i and i + W), so the window is always one contiguous view.
        self._window = np.zeros((2 * self.window_bars, self.num_features), F32)
        self.bars_seen = 0
        self.carry = self.network.initial_carry()
        self.gate = BarGate(
            int(float(m.get("bar_interval_seconds", 0)) * 1e6) or None,
            int(float(m.get("gap_threshold_seconds", 0)) * 1e6) or None,
        )
        self.sink, self.store = sink, store
        self.trading = False
        self.equity_curve: list[float] = []
        self.accepted = 0
        self.rejected = 0
        self.gaps = 0
        self.resumed = 0  # bars of the source already in the store (skipped after a restart)
        self.first_rejection: str | None = None
        self.decisions = 0
        self.last_regime = np.full(3, 1.0 / 3.0)

    # --- per bar ------------------------------------------------------------------------------
    def process(self, record, *, trade: bool = True, emit: bool = True) -> dict | None:
        """Handle one raw record; never raises for bad input (it is logged and skipped)."""
        if isinstance(record, MalformedRecord):
            return self._reject(record.reason, record.raw)
        try:
            bar = self.format.bar(record)
            note = self.gate.admit(bar)
        except BarRejected as err:
            return self._reject(err.reason, str(record))
        self.accepted += 1
        if note:
            self.gaps += 1
            log.warning("gap: %s", note)
        try:
            return self._step(bar, trade=trade, emit=emit)
        except BundleError:
            raise  # a bundle that cannot run is fatal; one bar's trouble is not
        except Exception:  # noqa: BLE001 - the runner must outlive a failure on one bar
            log.exception("internal error on bar %s; skipped", bar.iso)
            return None

    def _reject(self, reason: str, raw: str) -> None:
        self.rejected += 1
        if self.first_rejection is None:
            self.first_rejection = reason
        log.warning("rejected bar: %s", reason)
        if self.store is not None:
            self.store.record_rejection(reason, raw)
        return None

    def _step(self, bar: Bar, *, trade: bool, emit: bool) -> dict | None:
        started = time.perf_counter()
        fills = self.ledger.on_bar(bar) if self.trading else []
        if self.trading:
            self.equity_curve.append(float(self.ledger.equity))
        raw = self.features.update(bar)
        prev_close = self.market_state.prev_close
        self.market_state.update(bar)
        if self.regimes is not None:
            r = math.log(bar.close / prev_close) if self.bars_seen > 0 else math.nan
            self.last_regime = self.regimes.update(r)
            if self.regime_in_features:
                raw = np.concatenate([raw, self.last_regime])
        if raw.shape[0] != self.num_features:
            raise BundleError(
                f"the runner computes {raw.shape[0]} features, the normalizer has "
                f"{self.num_features}: the manifest's spec and statistics disagree"
            )
        # The env reads float32 features from MarketData: round the same way.
        row = self.normalizer(raw).astype(F32)
        i = self.bars_seen % self.window_bars
        self._window[i] = row
        self._window[i + self.window_bars] = row
        self.bars_seen += 1

        decision = None
        if trade and self.bars_seen >= self.window_bars and not self.ledger.bankrupt():
            if not self.trading:
                self.trading = True
                self.equity_curve.append(float(self.ledger.equity))
            decision = self._decide(bar)
        if decision is not None:
            decision["latency_us"] = round((time.perf_counter() - started) * 1e6, 1)
        if self.store is not None:
            self.store.record_bar(bar, decision, fills)
            if self.max_age_seconds is not None and self.bars_seen % self.purge_every_bars == 0:
                self.store.purge(self.max_age_seconds)
        if decision is not None and emit and self.sink is not None:
            self.sink.emit(decision)
        return decision

    def latest_row(self) -> np.ndarray:
        """The normalized float32 features of the last bar."""
        return self._window[(self.bars_seen - 1) % self.window_bars]

    def observation(self, close: float) -> np.ndarray:
        start = self.bars_seen % self.window_bars  # the oldest row of the ring
        window = self._window[start : start + self.window_bars]
        if not self.include_portfolio:
            return window.reshape(-1) if self.layout == "flat" else window
        portfolio = self.ledger.portfolio_vector(close)
        if self.layout == "flat":
            return np.concatenate([window.reshape(-1), portfolio])
        tiled = np.broadcast_to(portfolio, (self.window_bars, portfolio.shape[0]))
        return np.concatenate([window, tiled], axis=1)

    def _decide(self, bar: Bar) -> dict:
        obs = self.observation(bar.close)
        head, self.carry = self.network.forward(obs, self.carry)
        action_spec = self.manifest["action"]
        out: dict = {"timestamp": bar.iso}
        if action_spec["mode"] == "discrete":
            logits = head.astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            action = int(np.argmax(head))
            out["action"] = action
            out["probabilities"] = [round(float(p), 6) for p in probs]
            out["confidence"] = round(float(probs[action]), 6)
        else:
            raw = head.astype(F32)
            unit = np.tanh(raw) if action_spec.get("squash") == "tanh" else np.clip(raw, -1, 1)
            low = np.asarray(action_spec["low"], F32)
            high = np.asarray(action_spec["high"], F32)
            action = low + (unit + F32(1.0)) * F32(0.5) * (high - low)
            out["action"] = [float(a) for a in np.atleast_1d(action)]
            out["confidence"] = None
        ms = self.market_state
        target = self.ledger.decide(
            bar.timestamp_us, bar.close, ms.atr, ms.volatility, self.last_regime, action
        )
        self.decisions += 1
        out["target_position"] = float(target)
        out["position"] = round(self.ledger.position_weight(), 8)
        out["equity"] = float(self.ledger.equity)
        return out

    # --- whole streams ------------------------------------------------------------------------
    def run(
        self, records: Iterable, *, start_us: int | None = None, resume_after_us: int | None = None
    ) -> dict:
        """Feed a stream; bars before `start_us` only warm up; returns the summary."""
        for record in records:
            bar = None
            if not isinstance(record, MalformedRecord):
                try:
                    bar = self.format.bar(record)
                except BarRejected:
                    bar = None  # `process` logs and stores the reason
            if bar is not None and resume_after_us is not None:
                if bar.timestamp_us <= resume_after_us:
                    self.resumed += 1
                    continue  # already processed before the restart
            trade = start_us is None or bar is None or bar.timestamp_us >= start_us
            self.process(record if bar is None else bar, trade=trade)
        return self.summary()

    def summary(self) -> dict:
        bars_per_year = float(self.manifest.get("bars_per_year", 252.0))
        out = summary(self.equity_curve, bars_per_year, self.ledger) if self.equity_curve else {}
        out["decisions"] = self.decisions
        out["accepted_bars"] = self.accepted
        out["rejected_bars"] = self.rejected
        out["gap_bars"] = self.gaps
        if self.resumed:
            out["resumed_bars"] = self.resumed
        return out

    def replay_store(self, start_us: int | None) -> int | None:
        """Rebuild state from the bars already in the store (after a restart); last timestamp."""
        if self.store is None:
            return None
        rows = self.store.last_bars(10**12)
        for ts, o, h, lo, c, v in rows:
            bar = Bar(int(ts), o, h, lo, c, v)
            self.gate.admit(bar)
            trade = start_us is None or bar.timestamp_us >= start_us
            self._step_without_store(bar, trade)
        return rows[-1][0] if rows else None

    def _step_without_store(self, bar: Bar, trade: bool) -> None:
        store, self.store = self.store, None
        try:
            self._step(bar, trade=trade, emit=False)
        finally:
            self.store = store
