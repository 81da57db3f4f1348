"""The runner: bar in -> validated -> fills -> features -> policy -> decision out, per bar.

For each raw record from a source:
  1. parse and order-check it (bad bars are logged with their reason and skipped; a bar
     stamped far ahead of the clock or of the previous bar is refused or held, bars.BarGate);
  2. fill the order decided at the previous bar on this bar's open (paper ledger);
  3. update features incrementally, normalize, push into the observation window;
  4. once trading (from `start`) and the window is full: observation = window + portfolio
     state, numpy policy forward pass, action -> target weight with the env's risk rules;
  5. write bar, decision and fills to the replay store in one transaction, then emit the
     decision line (the acknowledgement: a printed bar is already durable in the store).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .bars import Bar, BarGate, format_timestamp
from .bundle import Bundle, load_bundle
from .ensemble import EnsemblePolicy, SearchInputs
from .errors import BarRejected, BundleError
from .features import FeatureEngine, Normalizer, Ring
from .formats import BarFormat
from .ledger import Ledger, summary
from .mcts import MCTSPlanner
from .monitor import Monitor
from .network import ActorNetwork, head_to_action
from .pointer import read_pointer
from .regimes import RegimeFilter
from .sinks import Sink, decision_line
from .sources import MalformedRecord
from .store import ReplayStore, emit_unemitted, take_stored

log = logging.getLogger("jaxtrade.live")
F32 = np.float32
# A bar stamped more than this after the machine's clock is refused (clock skew, feeds that
# stamp a bar with its close or in a nearby time zone all stay well inside a day).
MAX_AHEAD_SECONDS = 86_400.0
# A bar more than this many gap thresholds (the longest pause in training, at least three
# bars) after the previous one waits for the next bar to confirm it.
MAX_JUMP_GAPS = 10
# Raw bars kept to warm a promoted bundle's features up before it takes over.
RECENT_BARS = 50_000
# What a promoted bundle must share with the running one: the ledger carries on with it.
SAME_BOOK = ("action", "trading", "costs", "risk", "symbol")


def promoted_bundle(runner: Any, warm_up: Callable[[Bundle], Any],
                    same_book: tuple[str, ...] = SAME_BOOK) -> tuple[Bundle, Any] | None:
    """The bundle `runner.pointer` names and `warm_up(bundle)` (a runner of it that has seen
    the bars so far) when the pointer moved to a bundle that trades the same book (the
    manifest keys `same_book` equal);
    None otherwise. A pointer or bundle that fails is alerted once (`runner.alert`) and
    remembered in `runner._refused` until the pointer moves. Shared by the single- and the
    multi-asset runner."""
    try:
        target = read_pointer(runner.pointer)
    except BundleError as err:
        if runner._refused != runner.pointer:
            runner._refused = runner.pointer
            runner.alert({"kind": "bundle_refused", "message": str(err)})
        return None
    if target.resolve() == runner.bundle_root.resolve() or target == runner._refused:
        return None
    try:
        bundle = load_bundle(target)
        differ = [k for k in same_book if bundle.manifest.get(k) != runner.manifest.get(k)]
        if differ:
            raise BundleError(f"{target}: trades with other {', '.join(differ)} than the "
                              "running bundle; restart the runner to switch to it")
        return bundle, warm_up(bundle)
    except BundleError as err:
        runner._refused = target
        runner.alert({"kind": "bundle_refused", "to": str(target),
                      "message": f"refused the promoted bundle, keeping {runner.bundle_root}: "
                      f"{err}"})
        return None


class Policy(NamedTuple):
    """What runs a bundle's policy (`load_policy`)."""

    network: Any  # what the runner calls: obs_shape, initial_carry, forward (or search/decide)
    ensemble: EnsemblePolicy | None  # the network, for an ensemble bundle
    planner: MCTSPlanner | None  # the network, for an mcts bundle


def load_policy(bundle: Bundle, engine: str = "numpy", *, search: bool = True) -> Policy:
    """The bundle's policy on `engine` ("numpy" or "onnx"): an ensemble's members and their
    combination (ensemble.EnsemblePolicy) or, when `search`, an mcts bundle's numpy search
    (mcts.MCTSPlanner), both on the numpy engine only; otherwise its network (network.
    ActorNetwork, replaced by onnx_engine.OnnxActor on the onnx engine). Shared by the
    single- and the multi-asset runner; the latter passes `search=False` (an mcts bundle
    trades one symbol), so ActorNetwork refuses an mcts family there. A missing manifest
    key raises KeyError, for the caller to name."""
    m = bundle.manifest
    family = m["network"].get("family")
    ensemble: EnsemblePolicy | None = None
    planner: MCTSPlanner | None = None
    network: Any
    if family == "ensemble":
        # Every member's network and the combination (ensemble.py).
        if engine != "numpy":
            raise BundleError("an ensemble bundle runs on the numpy engine only")
        network = ensemble = EnsemblePolicy(m, bundle.weights)
    elif search and family == "mcts":
        if engine != "numpy":
            raise BundleError("an mcts bundle runs on the numpy engine only")
        network = planner = MCTSPlanner(m, bundle.weights)
    else:
        network = ActorNetwork(m["network"], bundle.weights)
    if engine == "onnx":
        from .onnx_engine import OnnxActor

        network = OnnxActor(bundle)
    elif engine != "numpy":
        raise BundleError(f"engine {engine!r} is not known: numpy or onnx")
    return Policy(network, ensemble, planner)


def _raw(record: object) -> str:
    """The stored text of a rejected record (cut before any long repr is built)."""
    if isinstance(record, Bar):
        return json.dumps({"timestamp": record.iso, "open": record.open, "high": record.high,
                           "low": record.low, "close": record.close, "volume": record.volume})
    try:
        return str(record)[:1000]
    except (ValueError, RecursionError):  # an int of 5,000 digits, nesting beyond the limit
        return f"<unprintable {type(record).__name__}>"


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
        max_ahead_seconds: float | None = MAX_AHEAD_SECONDS,
        max_jump_seconds: float | None = None,
        clock=time.time,
        pointer: str | Path | None = None,
        monitor: dict | None = None,
        on_drift: str = "alert",
        engine: str = "numpy",
    ) -> None:
        """`max_ahead_seconds`: refuse bars stamped further ahead of `clock()`;
        `max_jump_seconds`: hold a bar further after the previous one until the next bar
        confirms it (None: `MAX_JUMP_GAPS` gap thresholds of the manifest). 0 turns either
        rule off. `pointer`: the bundle pointer to follow (`follow_pointer`); `monitor`:
        keyword arguments of monitor.Monitor (None: no alerts); `on_drift`: "alert", or
        "flat" to hold no position from a drift alert until a promoted bundle takes over.
        `engine`: "numpy" (network.py) or "onnx" (the bundle's policy.onnx through
        onnxruntime, onnx_engine.py) runs the policy, a promoted bundle's too; everything
        else is the same code."""
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
        if len(m.get("symbols") or [None]) > 1:
            raise BundleError(f"this bundle trades {len(m['symbols'])} symbols "
                              f"({', '.join(map(str, m['symbols']))}): run it with "
                              "--multi-asset (jaxtrade_live.multi.MultiAssetRunner)")
        try:
            features, observation = m["features"], m["observation"]
            self.window_bars = int(observation["window_bars"])
            self.layout = observation.get("layout", "flat")
            self.include_portfolio = bool(observation.get("include_portfolio", True))
            spacing = features.get("bar_spacing_seconds")
            self.features = FeatureEngine(features["spec"]["features"], spacing)
            self.normalizer = Normalizer(features["normalizer"])
            regimes = features.get("regimes")
            self.regimes = RegimeFilter(regimes) if regimes else None
            self.regime_in_features = int(features.get("regime_columns_in_features", 0))
            # An mcts bundle: the numpy search (mcts.py) decides; it has no plain forward pass.
            self.network, self.ensemble, self.planner = load_policy(bundle, engine)
            self.engine = engine
            trading = dict(m["trading"])
            if initial_equity is not None:
                trading["initial_equity"] = float(initial_equity)
            self.ledger = Ledger(m["costs"], trading, m.get("risk", {}), m["action"])
            market = m.get("market", {})
            self.market_state = MarketState(
                int(market.get("atr_window", 14)), int(market.get("volatility_window", 20))
            )
            if self.layout not in ("flat", "window"):
                raise BundleError(f"observation layout {self.layout!r} is not supported")
            self.num_features = len(self.normalizer.center)
            computed = FeatureEngine(features["spec"]["features"], spacing).update(
                Bar(0, 1.0, 1.0, 1.0, 1.0, 0.0)).shape[0] + 3 * bool(self.regime_in_features)
            if computed != self.num_features:
                raise BundleError(
                    f"the manifest's feature spec gives {computed} features, its normalization "
                    f"statistics {self.num_features}"
                )
            # Rows written twice (at i and i + W), so the window is always one contiguous view.
            self._window = np.zeros((2 * self.window_bars, self.num_features), F32)
            self.bars_seen = 0
            built = self.observation(1.0).shape
            if built != self.network.obs_shape:
                raise BundleError(
                    f"the runner builds observations of shape {list(built)} (window_bars="
                    f"{self.window_bars}, {self.num_features} features, layout {self.layout}), "
                    f"the network takes {list(self.network.obs_shape)}"
                )
        except KeyError as err:
            raise BundleError(f"manifest lacks {err}") from None
        except (TypeError, ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError) as err:
            # check_manifest covers the common mistakes; this keeps the rest to one line too.
            raise BundleError(f"manifest holds a value the runner cannot use: {err}") from None
        self.carry = self.network.initial_carry()
        gap_threshold_us = int(float(m.get("gap_threshold_seconds", 0)) * 1e6) or None
        self.gate = BarGate(
            int(float(m.get("bar_interval_seconds", 0)) * 1e6) or None,
            gap_threshold_us,
            max_ahead_us=int((max_ahead_seconds or 0) * 1e6) or None,
            clock=clock,
        )
        if max_jump_seconds is None:
            self.gate.max_jump_us = MAX_JUMP_GAPS * self.gate.gap_threshold_us or None
        else:
            self.gate.max_jump_us = int(max_jump_seconds * 1e6) or None
        self.sink, self.store = sink, store
        self.trading = False
        self.equity_curve: list[float] = []
        self.accepted = 0
        self.rejected = 0
        self.gaps = 0
        # Records of the source already processed before a restart (bars in the store, and
        # rejections stored after the same bar with the same text): skipped, counted here.
        self.resumed = 0
        self.resume_after_us: int | None = None
        self._stored_rejections: Counter | None = None
        self._position_us: int | None = None  # the last bar of the source used or skipped
        self.start_us: int | None = None  # bars before it only warm up
        self.first_rejection: str | None = None
        self.decisions = 0
        self.last_regime = np.full(3, 1.0 / 3.0)
        self.bundle_root = Path(bundle.root)
        self.pointer = Path(pointer) if pointer is not None else None
        self._refused: Path | None = None  # a promoted bundle refused, until the pointer moves
        self.switches = 0
        self._recent: deque[Bar] = deque(maxlen=RECENT_BARS)
        if on_drift not in ("alert", "flat"):
            raise BundleError(f"on_drift must be alert or flat, got {on_drift!r}")
        self.on_drift = on_drift
        self.flat_until_promotion = False
        self.monitor_options = monitor
        self.monitor = None
        if monitor is not None:
            self.monitor = Monitor(m, bars_per_year=float(m.get("bars_per_year", 252.0)),
                                   **monitor)
        if on_drift == "flat" and self._flat_action() is None:
            raise BundleError("--on-drift flat needs a flat action: the bundle's discrete "
                              "levels hold no 0")
        self.alerts = 0

    # --- per bar ------------------------------------------------------------------------------
    def process(self, record, *, trade: bool = True, emit: bool = True) -> dict | None:
        """Handle one raw record; never raises for bad input (it is logged and skipped).

        Returns the decision of the last bar this record let through (a held bar and the bar
        confirming it go through together), or None.
        """
        if self.pointer is not None:
            self.follow_pointer()  # between bars: a promotion takes over before this one
        if isinstance(record, MalformedRecord):
            return self._reject(record.reason, record.raw)
        try:
            bar = self.format.bar(record)
        except BarRejected as err:
            return self._reject(err.reason, _raw(record))
        except Exception as err:  # noqa: BLE001 - no record, however built, may stop the runner
            return self._reject(f"unreadable record ({type(err).__name__})", _raw(record))
        if self.resume_after_us is not None and bar.timestamp_us <= self.resume_after_us:
            # Already processed before the restart; a bar held before it was out of place.
            for held, reason in self.gate.finish(f"the next bar is {bar.iso}"):
                self._reject(reason, _raw(held))
            self.resumed += 1
            self._position_us = max(self._position_us or bar.timestamp_us, bar.timestamp_us)
            return None
        try:
            admitted, dropped = self.gate.admit(bar)
        except BarRejected as err:
            return self._reject(err.reason, _raw(record))
        for held, reason in dropped:
            self._reject(reason, _raw(held))
        decision = None
        for bar, note in admitted:
            self._stored_rejections = None  # past the restart point: every rejection is new
            self._position_us = bar.timestamp_us
            self.accepted += 1
            if note:
                self.gaps += 1
                log.warning("gap: %s", note)
            trade_bar = trade and (self.start_us is None or bar.timestamp_us >= self.start_us)
            try:
                decision = self._step(bar, trade=trade_bar, emit=emit)
            except BundleError:
                raise  # a bundle that cannot run is fatal; one bar's trouble is not
            except Exception:  # noqa: BLE001 - the runner must outlive a failure on one bar
                log.exception("internal error on bar %s; skipped", bar.iso)
                decision = None
        return decision

    def finish(self) -> None:
        """End of the stream: a bar still held for confirmation is rejected."""
        for held, reason in self.gate.finish():
            self._reject(reason, _raw(held))

    def _reject(self, reason: str, raw: str) -> None:
        if take_stored(self._stored_rejections, self._position_us, raw):
            self.resumed += 1  # rejected and stored before the restart: not a new rejection
            return None
        self.rejected += 1
        if self.first_rejection is None:
            self.first_rejection = reason
        log.warning("rejected bar: %s", reason)
        if self.store is not None:
            self.store.record_rejection(reason, raw, self._position_us)
        return None

    def _step(self, bar: Bar, *, trade: bool, emit: bool) -> dict | None:
        started = time.perf_counter()
        self._recent.append(bar)
        fills = self.ledger.on_bar(bar) if self.trading else []
        if self.trading:
            self.equity_curve.append(float(self.ledger.equity))
        if self.monitor is not None and not self._rebuilding:
            # Not while rebuilding from the store after a restart: those alerts were sent.
            for alert in self.monitor.on_bar(bar.close, float(self.ledger.equity)
                                             if self.trading else None, bar.iso):
                self.alert(alert)
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
        if self.monitor is not None and not self._rebuilding:
            for alert in self.monitor.on_features(row, bar.iso):
                self.alert(alert)
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
        deliver = decision is not None and emit and self.sink is not None
        if self.store is not None:
            # The line goes into the store with the bar; it is marked emitted once the sinks
            # took it, so a kill in between prints it after the restart.
            self.store.record_bar(bar, decision, fills,
                                  line=decision_line(decision) if deliver else None)
            if self.max_age_seconds is not None and self.bars_seen % self.purge_every_bars == 0:
                self.store.purge(self.max_age_seconds)
        if deliver:
            self.sink.emit(decision)
            if self.store is not None:
                self.store.mark_emitted(bar.timestamp_us)
        return decision

    def latest_row(self) -> np.ndarray:
        """The normalized float32 features of the last bar."""
        return self._window[(self.bars_seen - 1) % self.window_bars]

    def _window_rows(self) -> np.ndarray:
        start = self.bars_seen % self.window_bars  # the oldest row of the ring
        return self._window[start : start + self.window_bars]

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

    def _forward(self, obs: np.ndarray, out: dict) -> np.ndarray:
        """The policy head's output for `obs` (the carry moves on); an actor-critic's state
        value goes into the decision line as `value`, a replay actor-critic's Q(s, pi(s)) as
        `q_value` (the network's `value_key`)."""
        if getattr(self.network, "has_value", False):
            head, value, self.carry = self.network.forward_with_value(obs, self.carry)
            out[getattr(self.network, "value_key", "value")] = round(float(value), 6)
            return head
        head, self.carry = self.network.forward(obs, self.carry)
        return head

    def _decide(self, bar: Bar) -> dict:
        obs = self.observation(bar.close)
        action_spec = self.manifest["action"]
        out: dict = {"timestamp": bar.iso}
        ms = self.market_state
        if self.ensemble is not None:
            search = SearchInputs(self._window_rows(), MCTSPlanner.root(self.ledger, bar.close),
                                  ms.atr) if self.ensemble.searches else None
            combined, self.carry = self.ensemble.decide(
                obs, self.carry, self.bars_seen, bar.close, ms.volatility, self.last_regime,
                search)
            action = combined.target
            out["action"] = [float(a) for a in action]
            out["confidence"] = None
            out["rule"] = self.ensemble.rule
            out["member_weights"] = {n: float(w) for n, w in
                                     zip(self.ensemble.names, combined.weights)}
            out["member_targets"] = {n: float(t[0]) for n, t in
                                     zip(self.ensemble.names, combined.member_targets)}
            out["trade_probability"] = combined.trade_probability
        elif self.planner is not None:
            action, probs, value = self.planner.search(
                self._window_rows(), self.planner.root(self.ledger, bar.close), ms.atr,
                ms.volatility, self.last_regime)
            out["action"] = action
            out["probabilities"] = [round(float(p), 6) for p in probs]
            out["confidence"] = round(float(probs[action]), 6)
            out["value"] = round(value, 6)
        elif action_spec["mode"] == "discrete":
            head = self._forward(obs, out)
            logits = head.astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            action = int(np.argmax(head))
            out["action"] = action
            out["probabilities"] = [round(float(p), 6) for p in probs]
            out["confidence"] = round(float(probs[action]), 6)
        else:
            head = self._forward(obs, out)
            action = head_to_action(head, action_spec)
            out["action"] = [float(a) for a in np.atleast_1d(action)]
            out["confidence"] = None
        target = self.ledger.decide(
            bar.timestamp_us, bar.close, ms.atr, ms.volatility, self.last_regime, action
        )
        self.decisions += 1
        if self.flat_until_promotion:
            target = self.ledger.decide(bar.timestamp_us, bar.close, ms.atr, ms.volatility,
                                        self.last_regime, self._flat_action())
            out["flat"] = "drift alert: flat until a retrained bundle is promoted"
        out["target_position"] = float(target)
        out["position"] = round(self.ledger.position_weight(), 8)
        out["equity"] = float(self.ledger.equity)
        return out

    # --- whole streams ------------------------------------------------------------------------
    def run(
        self, records: Iterable, *, start_us: int | None = None, resume_after_us: int | None = None
    ) -> dict:
        """Feed a stream; bars before `start_us` only warm up; returns the summary."""
        if start_us is not None:
            self.start_us = start_us
        if resume_after_us is not None:
            self.resume_after_us = resume_after_us
        for record in records:
            self.process(record)
        self.finish()
        return self.summary()

    def summary(self) -> dict:
        bars_per_year = float(self.manifest.get("bars_per_year", 252.0))
        out = summary(self.equity_curve, bars_per_year, self.ledger) if self.equity_curve else {}
        out["decisions"] = self.decisions
        out["accepted_bars"] = self.accepted
        out["rejected_bars"] = self.rejected
        out["gap_bars"] = self.gaps
        if self.switches:
            out["bundle_switches"] = self.switches
            out["bundle"] = str(self.bundle_root)
        if self.alerts:
            out["alerts"] = self.alerts
        if self.resumed:
            out["resumed_bars"] = self.resumed
        return out

    def replay_store(self, start_us: int | None) -> int | None:
        """Rebuild state from the bars already in the store (after a restart); last timestamp.

        The source's bars up to that timestamp, and the rejections stored after the same bar
        with the same text, are then skipped as already processed.
        """
        if self.store is None:
            return None
        self.start_us = start_us
        rows = self.store.last_bars(10**12)
        if not rows:
            return None
        last = int(rows[-1][0])
        limit = self.gate.max_ahead_us
        if limit is not None and last > int(self.gate.clock() * 1e6) + limit:
            raise BundleError(
                f"{self.store.path}: holds bars up to {format_timestamp(last)}, ahead of this "
                f"machine's clock; delete them (DELETE FROM bars WHERE timestamp_us > ...) or "
                "start a new store"
            )
        for ts, o, h, lo, c, v in rows:
            bar = Bar(int(ts), o, h, lo, c, v)
            trade = start_us is None or bar.timestamp_us >= start_us
            self._step_without_store(bar, trade)
        self.gate.resume(last)
        self.resume_after_us = last
        self._stored_rejections = self.store.rejection_counts()
        return last

    def emit_unemitted(self) -> int:
        """Hands the sinks the decisions stored but not emitted before a restart, in order."""
        return emit_unemitted(self.store, self.sink)

    _rebuilding = False

    def _step_without_store(self, bar: Bar, trade: bool) -> None:
        store, self.store = self.store, None
        self._rebuilding = True
        try:
            self._step(bar, trade=trade, emit=False)
        finally:
            self.store = store
            self._rebuilding = False

    # --- alerts and promotions ----------------------------------------------------------------
    def _flat_action(self):
        """The action whose target weight is 0 (None when a discrete bundle has no such)."""
        action = self.manifest["action"]
        if action["mode"] == "discrete":
            levels = [float(x) for x in action["discrete_levels"]]
            return levels.index(0.0) if 0.0 in levels else None
        return np.zeros(len(action["low"]), F32)

    def alert(self, payload: dict) -> None:
        """Log an alert, store it with the bar it follows, hand it to the sinks; a drift
        alert with on_drift="flat" also takes the position flat until a promotion."""
        payload = dict(payload, bundle=str(self.bundle_root))
        if payload.get("kind") in ("drift", "feature_drift") and self.on_drift == "flat":
            self.flat_until_promotion = True
            payload["action_taken"] = "flat until a retrained bundle is promoted"
        self.alerts += 1
        log.warning("alert: %s", payload.get("message", payload.get("kind")))
        if self.store is not None:
            self.store.record_event(payload.get("kind", "alert"), payload, self._position_us)
        if self.sink is not None:
            self.sink.alert(payload)

    def _warmed_up(self, bundle: Bundle) -> Runner:
        """A runner of `bundle` that has seen the bars this one has (nothing traded)."""
        fresh = Runner(bundle, max_ahead_seconds=0, max_jump_seconds=0, engine=self.engine)
        for bar in self._recent:
            fresh._step_without_store(bar, trade=False)
        return fresh

    def follow_pointer(self) -> bool:
        """Switch to the bundle the pointer names when it moved (True when switched).

        The new bundle is loaded (sha256-checked), must trade the same book (actions,
        trading, costs, risk, symbol) and warms its features up on the bars seen so far;
        then it takes over the features, normalization, regimes and network, and the ledger,
        store, sinks and counters carry on. A bundle that fails is refused with an alert and
        the running one keeps trading; it is tried again only when the pointer moves."""
        promoted = promoted_bundle(self, lambda bundle: self._warmed_up(bundle))
        if promoted is None:
            return False
        bundle, fresh = promoted
        target = Path(bundle.root)
        previous = self.bundle_root
        for name in ("manifest", "format", "window_bars", "layout", "include_portfolio",
                     "features", "normalizer", "regimes", "regime_in_features", "network",
                     "planner", "ensemble", "market_state", "num_features", "_window",
                     "bars_seen", "carry", "last_regime"):
            setattr(self, name, getattr(fresh, name))
        self.bundle_root, self._refused = Path(bundle.root), None
        self.switches += 1
        if self.monitor is not None:
            self.monitor = Monitor(self.manifest, bars_per_year=float(
                self.manifest.get("bars_per_year", 252.0)), **self.monitor_options)
        was_flat, self.flat_until_promotion = self.flat_until_promotion, False
        event = {"kind": "bundle_switched", "from": str(previous), "to": str(target),
                 "warmup_bars": len(self._recent),
                 "message": f"switched to the promoted bundle {target} (was {previous})"
                 + ("; trading again after the drift alert" if was_flat else "")}
        log.warning("%s", event["message"])
        if self.store is not None:
            self.store.record_event("bundle_switched", event, self._position_us)
        return True
