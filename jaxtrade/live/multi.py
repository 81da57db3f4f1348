"""The runner for bundles trained on several symbols (MarketData [T, A, F]); numpy only.

Bars arrive one per symbol per timestamp (any order within a timestamp). A timestamp is
complete when every symbol's bar for it arrived, or when a bar of a later timestamp arrives;
then, as `jaxtrade.market.build` aligned the symbols on the union of their timestamps:

  * a symbol with a bar updates its own features (FeatureEngine), ATR and volatility;
  * a symbol without one (missing or late) keeps its last prices (carried forward, as the
    market does), its feature row is 0 in the observation (as the market's), and its order
    is not filled on this timestamp (the env's `valid` mask); a bar arriving after its
    timestamp was processed is rejected (logged), never applied late;
  * cross-asset features (cross_corr, turbulence: `CrossAsset`) read the returns of the
    symbols with a bar at this timestamp, like `jaxtrade.features.cross_asset`;
  * the regime filter reads the equal-weight mean log return of those symbols
    (`jaxtrade.features.regimes.market_returns`).

Then the observation (window [W, A, F] + the portfolio's 3 A + 2 values) goes through the
policy, the action becomes one target weight per symbol (a discrete level split equally over
the A symbols, or a continuous weight each) after the env's risk rules (`MultiLedger`), and
one decision is returned per timestamp with `target_positions` {symbol: weight}. An ensemble
bundle (network.family "ensemble") runs its members and their combination in ensemble.py
(`EnsemblePolicy.decide` with this timestamp's close and volatility per symbol, a missing
bar's carried forward as the market carries them): its action is the combined weight vector,
and the line also carries `rule`, `member_weights`, `member_targets` {member: {symbol:
weight}} and `trade_probability`.

Before a symbol's first bar the market back-fills its prices from that first bar; the runner
cannot, so it holds the symbol flat and, with ATR sizing on, sizes it with ATR 0 until then.
Alerts (monitor.py) as in the single-symbol Runner (`monitor=`), and `on_drift="flat"`
(`--on-drift flat`): from a drift alert on, every symbol's target is 0 (the decision line
keeps the policy's action and says `flat`) until a promoted bundle takes over. `pointer=`
(`--bundle-pointer`) follows promotions as the single-symbol Runner does: between timestamps,
a bundle the pointer newly names is loaded, warmed up on the timestamps seen so far, and takes
over the policy and features while the ledger and its positions carry on; one that trades
other symbols, actions, costs or risk rules, or fails its checks, is refused with an alert.
`store=` (`--store`): the SQLite replay store (store.py) gets each timestamp in one
transaction (every symbol's bar there, the decision with its target per symbol, the fills),
before its line goes to the sinks. After a restart `replay_store` rebuilds the features,
ledger and policy state from the stored timestamps (deciding again, unprinted), the source's
bars up to the last stored timestamp are skipped, rejections already stored are not counted
again, and decisions stored but not printed are printed first (`emit_unemitted`): the run
goes on as one that was never interrupted. A timestamp still being collected when the
process died was not stored; its bars are read again from the source.
Not here yet (the single-symbol Runner has them): the bar gate's clock/jump rules.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .bars import Bar, format_timestamp
from .bundle import Bundle
from .engine import RECENT_BARS, MarketState, _raw, load_policy, promoted_bundle
from .errors import BarRejected, BundleError
from .features import FeatureEngine, Normalizer, Ring
from .formats import BarFormat
from .ledger import BPS, F32, f32, stop_fills, summary, track_entry_arrays
from .regimes import RegimeFilter
from .sinks import decision_line
from .sources import MalformedRecord
from .store import ReplayStore, emit_unemitted, take_stored

# The manifest's `missing_bars` rules (jaxtrade/export.py `missing_bars_rule`).
MISSING_BARS_RULES = ("drop", "flat", "mask")

log = logging.getLogger("jaxtrade.live")
_sum = np.add.reduce
# What a promoted bundle must share with the running one: the ledger carries on with it.
SAME_BOOK = ("action", "trading", "costs", "risk", "symbols")
# The state a promoted bundle brings (features, policy); the ledger and counters stay.
_POLICY_STATE = ("manifest", "format", "window_bars", "layout", "include_portfolio", "engines",
                 "cross", "normalizer", "regimes", "regime_in_features", "network", "ensemble",
                 "market_states", "num_features", "_window", "bars_seen", "carry",
                 "last_regime")


class CrossAsset:
    """Incremental `jaxtrade.features.cross_asset` for one timestamp at a time."""

    def __init__(self, entries: list[dict], num_assets: int) -> None:
        self.entries = [(e["name"], int(e["window"])) for e in entries]
        for name, _ in self.entries:
            if name not in ("cross_corr", "turbulence"):
                raise BundleError(f"cross-asset feature {name!r} has no runner implementation")
        self.num_assets = num_assets
        # cross_corr: per entry, per asset, the (own return, others' mean) pairs of its bars.
        self.pairs = [[(Ring(w), Ring(w)) for _ in range(num_assets)] for _, w in self.entries]
        # turbulence: per entry, the last `window` timestamps' returns [A] (0 where none).
        self.rows = [Ring(w) for _, w in self.entries]
        self.history = [np.zeros((2 * w, num_assets)) for _, w in self.entries]

    def update(self, returns: np.ndarray, present: np.ndarray) -> list[np.ndarray]:
        """Per entry, the value per asset at this timestamp (NaN where training has null).

        `returns[a]`: the asset's one-bar log return (NaN on its first bar or when not
        finite); `present[a]`: the asset has a bar at this timestamp."""
        known = present & np.isfinite(returns)
        count = int(known.sum())
        total = float(np.add.reduce(returns[known])) if count else 0.0
        out = []
        for k, (name, window) in enumerate(self.entries):
            values = np.full(self.num_assets, np.nan)
            if name == "cross_corr":
                for a in np.flatnonzero(present):
                    r = float(returns[a])
                    others = (total - r) / (count - 1) if count > 1 and known[a] else math.nan
                    xs, ys = self.pairs[k][a]
                    xs.push(r)
                    ys.push(others)
                    x, y = xs.tail(window), ys.tail(window)
                    if x is None:
                        continue
                    sx, sy = float(_sum(x)), float(_sum(y))
                    if math.isnan(sx) or math.isnan(sy):  # a NaN in the window: null
                        continue
                    dx, dy = x - sx / window, y - sy / window
                    spread = math.sqrt(float(np.dot(dx, dx) * np.dot(dy, dy)))
                    with np.errstate(invalid="ignore", divide="ignore"):
                        values[a] = float(np.dot(dx, dy)) / spread if spread > 0 else math.nan
            else:  # turbulence, at every timestamp, from the previous `window` rows
                history, ring = self.history[k], self.rows[k]
                if ring.count >= window:
                    end = (ring.count - 1) % window + window + 1
                    past = history[end - window : end]
                    mean = _sum(past, axis=0) / window
                    s2 = past.T @ past
                    cov = (s2 - window * np.outer(mean, mean)) / (window - 1)
                    ridge = 1e-9 * np.trace(cov) / self.num_assets + 1e-18
                    cov = cov + ridge * np.eye(self.num_assets)
                    dev = np.where(known, returns, 0.0) - mean
                    values[:] = float(dev @ np.linalg.solve(cov, dev))
                row = np.where(known, returns, 0.0)
                i = ring.count % window
                history[i] = row
                history[i + window] = row
                ring.push(0.0)
            out.append(values)
        return out


class MultiLedger:
    """`ledger.Ledger` for A assets: the env's transition with [A] float32 arrays."""

    def __init__(self, costs: dict, trading: dict, risk: dict, action: dict, num_assets: int):
        self.costs, self.trading, self.risk, self.action = costs, trading, risk, action
        self.num_assets = num_assets
        self.initial_equity = f32(trading.get("initial_equity", 1.0))
        self.levels = np.asarray(action.get("discrete_levels", ()), F32)
        zeros = np.zeros(num_assets, F32)
        self.cash, self.units = self.initial_equity, zeros.copy()
        self.entry_price, self.best_price = zeros.copy(), zeros.copy()
        self.bars_in_position = np.zeros(num_assets, np.int64)
        self.equity = self.peak_equity = self.breaker_peak = self.initial_equity
        self.pause_left = 0
        self.pending: tuple | None = None  # (decided_at_us, delta_units, rate, atr)
        self.total_costs = 0.0
        self.num_trades = 0
        self.num_stops = 0
        self.last_close = zeros.copy()

    def action_to_weights(self, action) -> np.ndarray:
        lev = f32(self.trading.get("max_leverage", 1.0))
        if self.action["mode"] == "discrete":
            index = min(max(int(action), 0), len(self.levels) - 1)
            weights = np.full(self.num_assets, self.levels[index] / F32(self.num_assets), F32)
        else:
            raw = np.asarray(action, F32).reshape(self.num_assets)
            weights = np.clip(np.nan_to_num(raw, nan=0.0, posinf=lev, neginf=-lev), -lev, lev)
        if self.trading.get("long_only", False):
            weights = np.maximum(weights, F32(0.0))
        return weights.astype(F32)

    def decide(self, timestamp_us, close, atr, volatility, regime, action,
               seen=None) -> np.ndarray:
        """The env's decision at the close of t (envs/risk.py, envs/costs.py), per asset;
        assets not `seen` yet (no bar so far) get no order."""
        r, c = self.risk, self.costs
        close, atr, volatility = (np.asarray(x, F32) for x in (close, atr, volatility))
        weights = self.action_to_weights(action)
        if r.get("atr_sizing", False):
            stop = f32(r.get("stop_loss_atr", 0.0))
            distance = np.maximum((stop if stop > 0 else F32(1.0)) * atr, F32(1e-12))
            weights = weights * f32(r.get("risk_per_trade", 0.01)) * close / distance
        limit = f32(self.trading.get("max_leverage", 1.0))
        if r.get("regime_caps", False):
            caps = np.asarray(r.get("regime_max_leverage", (5.0, 2.0, 1.0)), F32)
            limit = min(limit, caps[int(np.argmax(regime))])
        gross = np.add.reduce(np.abs(weights), dtype=F32)
        weights = (weights * min(F32(1.0), f32(limit / max(gross, F32(1e-12))))).astype(F32)
        if self.pause_left > 0:
            weights = np.zeros_like(weights)
        target_units = weights * self.equity / close
        delta = (target_units - self.units).astype(F32)
        band = f32(c.get("min_trade_fraction", 0.001))
        delta = np.where(np.abs(delta) * close < band * abs(self.equity), F32(0.0), delta)
        if seen is not None:
            delta = np.where(seen, delta, F32(0.0))
        slippage = np.minimum(f32(c.get("slippage_vol_mult", 0.05)) * volatility / BPS,
                              f32(c.get("slippage_cap_bps", 25.0)))
        bps = f32(c.get("fee_bps", 1.0)) + f32(c.get("half_spread_bps", 1.0))
        rate = ((bps + slippage + F32(0.0)) * BPS).astype(F32)
        self.pending = (int(timestamp_us), delta.astype(F32), rate, atr)
        return weights

    def on_bar(self, timestamp_us, open1, high1, low1, close1, valid) -> list[dict]:
        """Fill the pending order (assets with a bar only), stops, mark; returns fills."""
        open1, high1, low1, close1 = (np.asarray(x, F32) for x in (open1, high1, low1, close1))
        self.last_close = close1
        order, self.pending = self.pending, None
        if order is None:
            return []
        decided_at, delta, rate, atr = order
        delta = np.where(valid, delta, F32(0.0))
        high1, low1 = np.maximum(high1, open1), np.minimum(low1, open1)
        at_close = bool(self.trading.get("fill_at_close", False))
        units, cash = self.units, self.cash
        entry, best, bars = self.entry_price, self.best_price, self.bars_in_position

        d_open = np.zeros_like(delta) if at_close else delta
        fee_open = np.add.reduce(np.abs(d_open) * open1 * rate, dtype=F32)
        cash = f32(f32(cash - np.add.reduce(d_open * open1, dtype=F32)) - fee_open)
        new_units = (units + d_open).astype(F32)
        entry, best, bars = track_entry_arrays(units, new_units, entry, best, bars, open1)
        units = new_units

        r = self.risk
        hit, exit_units, stop_price = stop_fills(
            units, entry, best, atr, open1, high1, low1,
            f32(r.get("stop_loss_atr", 0.0)), f32(r.get("trailing_stop_atr", 0.0)))
        fee_stop = np.add.reduce(np.abs(exit_units) * stop_price * rate, dtype=F32)
        cash = f32(f32(cash - np.add.reduce(exit_units * stop_price, dtype=F32)) - fee_stop)
        held = units
        units = (units + exit_units).astype(F32)
        entry, best, bars = track_entry_arrays(held, units, entry, best, bars, stop_price)
        best = np.where(units > 0, np.maximum(best, high1),
                        np.where(units < 0, np.minimum(best, low1), best)).astype(F32)
        self.num_stops += int(hit.sum())

        d_close = np.where(at_close & ~hit, delta, F32(0.0)).astype(F32)
        fee_close = np.add.reduce(np.abs(d_close) * close1 * rate, dtype=F32)
        cash = f32(f32(cash - np.add.reduce(d_close * close1, dtype=F32)) - fee_close)
        before_close = units
        units = (units + d_close).astype(F32)
        entry, best, bars = track_entry_arrays(before_close, units, entry, best, bars, close1)
        bars = np.where(units != 0, bars + 1, 0)

        c = self.costs
        short = np.add.reduce(np.maximum(-units, F32(0.0)) * close1, dtype=F32)
        carry = f32(short * f32(c.get("borrow_bps_per_bar", 0.4)) * BPS
                    + max(-cash, F32(0.0)) * f32(c.get("funding_bps_per_bar", 0.0)) * BPS)
        cash = f32(cash - carry)
        equity = f32(cash + np.add.reduce(units * close1, dtype=F32))
        self.peak_equity = max(self.peak_equity, equity)
        paused = self.pause_left > 0
        self.pause_left = max(self.pause_left - 1, 0)
        self.breaker_peak = max(self.breaker_peak, equity)
        cb = f32(r.get("circuit_breaker_drawdown", 0.0))
        if cb > 0 and not paused and f32(F32(1.0) - equity / self.breaker_peak) >= cb:
            self.pause_left = int(r.get("pause_bars", 20))
            self.breaker_peak = equity

        traded = (d_open != 0) | hit | (d_close != 0)
        # Per asset: the price of its last execution on this bar and every fee it paid.
        price = np.where(d_close != 0, close1, np.where(hit, stop_price, open1))
        cost = (np.abs(d_open) * open1 + np.abs(exit_units) * stop_price
                + np.abs(d_close) * close1) * rate
        fills = [
            {"timestamp_us": int(timestamp_us), "decided_at_us": decided_at, "asset": int(a),
             "price": float(price[a]), "cost": float(cost[a]),
             "from_position": float(self.units[a]), "to_position": float(units[a])}
            for a in np.flatnonzero(traded)
        ]
        self.cash, self.units, self.equity = cash, units, equity
        self.entry_price, self.best_price, self.bars_in_position = entry, best, bars
        self.total_costs += float(fee_open + fee_stop + fee_close + carry)
        self.num_trades += 1 if fills else 0
        return fills

    def portfolio_vector(self, close) -> np.ndarray:
        """envs.observation.portfolio_vector: per asset (weight, unrealized, log1p bars held),
        asset-major, then drawdown and cash fraction; float32."""
        close = np.asarray(close, F32)
        equity = self.equity
        safe = equity if abs(equity) > 1e-12 else F32(1e-12)
        weight = self.units * close / safe
        side = np.sign(self.units)
        entry = np.where(self.entry_price > 0, self.entry_price, F32(1.0))
        unrealized = np.where(side != 0, side * (close / entry - F32(1.0)), F32(0.0))
        held = np.log1p(self.bars_in_position.astype(F32))
        per_asset = np.stack([weight, unrealized, held], axis=-1).reshape(-1)
        drawdown = f32(F32(1.0) - equity / self.peak_equity)
        return np.concatenate([per_asset, np.array([drawdown, self.cash / safe], F32)]).astype(F32)

    def position_weights(self) -> np.ndarray:
        safe = self.equity if abs(self.equity) > 1e-12 else F32(1e-12)
        return self.units * self.last_close / safe

    def bankrupt(self) -> bool:
        fraction = f32(self.risk.get("bankruptcy_fraction", 0.05))
        return bool(self.equity <= fraction * self.initial_equity)


class MultiAssetRunner:
    """Bars of several symbols in, one decision per timestamp out (module docstring)."""

    def __init__(self, bundle: Bundle, *, sink=None, initial_equity: float | None = None,
                 engine: str = "numpy", monitor: dict | None = None,
                 on_drift: str = "alert", pointer: str | Path | None = None,
                 store: ReplayStore | None = None, max_age_seconds: float | None = None,
                 purge_every_bars: int = 1000) -> None:
        """`monitor`: keyword arguments of monitor.Monitor (None: no alerts). Its return
        drift reads the first symbol's closes (the bundle's reference is that symbol's
        training returns), feature drift every symbol's rows in turn, degradation the
        ledger's equity; alerts are logged and handed to the sink. `on_drift`: "alert", or
        "flat" to hold every symbol flat from a drift alert until a promotion. `pointer`:
        the bundle pointer to follow (`follow_pointer`). `store`: the replay store (module
        docstring); rows older than `max_age_seconds` are purged every `purge_every_bars`
        timestamps."""
        m = bundle.manifest
        self.manifest = m
        self.format = BarFormat(m.get("bars"))
        try:
            self.symbols = [str(s) for s in m["symbols"]]
            self.index = {s: a for a, s in enumerate(self.symbols)}
            num_assets = len(self.symbols)
            features, observation = m["features"], m["observation"]
            self.window_bars = int(observation["window_bars"])
            self.layout = observation.get("layout", "flat")
            self.include_portfolio = bool(observation.get("include_portfolio", True))
            spec = features["spec"]["features"]
            spacing = features.get("bar_spacing_seconds")
            self.engines = [FeatureEngine(spec, spacing, cross_asset=True)
                            for _ in self.symbols]
            self.cross = CrossAsset(self.engines[0].cross_entries, num_assets)
            self.normalizer = Normalizer(features["normalizer"])
            regimes = features.get("regimes")
            self.regimes = RegimeFilter(regimes) if regimes else None
            self.regime_in_features = int(features.get("regime_columns_in_features", 0))
            # An ensemble bundle: every member's network and the combination, per timestamp.
            self.network, self.ensemble, _ = load_policy(bundle, engine, search=False)
            trading = dict(m["trading"])
            if initial_equity is not None:
                trading["initial_equity"] = float(initial_equity)
            self.ledger = MultiLedger(m["costs"], trading, m.get("risk", {}), m["action"],
                                      num_assets)
            market = m.get("market", {})
            self.market_states = [
                MarketState(int(market.get("atr_window", 14)),
                            int(market.get("volatility_window", 20)))
                for _ in self.symbols
            ]
            self.num_features = len(self.normalizer.center)
            if self.layout not in ("flat", "window"):
                raise BundleError(f"observation layout {self.layout!r} is not supported")
        except KeyError as err:
            raise BundleError(f"manifest lacks {err}") from None
        self._window = np.zeros((2 * self.window_bars, num_assets, self.num_features), F32)
        self.num_assets = num_assets
        self.bars_seen = 0
        built = self.observation().shape
        if built != self.network.obs_shape:
            raise BundleError(
                f"the runner builds observations of shape {list(built)} ({num_assets} symbols, "
                f"window_bars={self.window_bars}, {self.num_features} features), the network "
                f"takes {list(self.network.obs_shape)}"
            )
        self.carry = self.network.initial_carry()
        self.sink = sink
        # The last real bar of each symbol: its prices are carried over a missing bar.
        self.last_bar: list[Bar | None] = [None] * num_assets
        self.last_regime = np.full(3, 1.0 / 3.0)
        self.trading = False
        self.equity_curve: list[float] = []
        self.decisions = 0
        self.rejected = 0
        self.timestamps = 0
        self.missing_bars = 0
        # A timestamp where some symbol has no bar: as the run's data loading treated it
        # (`missing_bars` in the manifest, jaxtrade/export.py `missing_bars_rule`).
        self.missing_rule = str(m.get("missing_bars") or "mask")
        if self.missing_rule not in MISSING_BARS_RULES:
            raise BundleError(f"manifest missing_bars={self.missing_rule!r}: expected one of "
                              f"{', '.join(MISSING_BARS_RULES)}")
        self.dropped_timestamps = 0
        self.last_timestamp_us: int | None = None
        self._pending_us: int | None = None
        self._pending: dict[int, Bar] = {}
        self._pending_trade = True
        self.start_us: int | None = None
        self.store = store
        self.max_age_seconds, self.purge_every_bars = max_age_seconds, purge_every_bars
        # After a restart: bars up to `resume_after_us` were processed before; they and the
        # rejections stored then (`_stored_rejections`) are skipped and counted in `resumed`.
        self.resumed = 0
        self.resume_after_us: int | None = None
        self._stored_rejections = None
        self._last_stored_rejection_us: int | None = None
        self._position_us: int | None = None  # the latest bar taken in or skipped
        self._rebuilding = False
        self.monitor = None
        if monitor is not None:
            from .monitor import Monitor

            self.monitor = Monitor(m, bars_per_year=float(m.get("bars_per_year", 252.0)),
                                   **monitor)
        self.alerts = 0
        if on_drift not in ("alert", "flat"):
            raise BundleError(f"on_drift must be alert or flat, got {on_drift!r}")
        self.on_drift = on_drift
        self.flat_after_drift = False
        self.engine, self.monitor_options = engine, monitor
        self.bundle_root = Path(bundle.root)
        self.pointer = Path(pointer) if pointer is not None else None
        self._refused: Path | None = None  # a promoted bundle refused, until the pointer moves
        self.switches = 0
        # Timestamps seen (their bars by symbol index), to warm a promoted bundle up.
        self._recent: deque[tuple[int, dict[int, Bar]]] = deque(maxlen=RECENT_BARS)
        if on_drift == "flat" and self._flat_action() is None:
            raise BundleError("--on-drift flat needs a flat action: the bundle's discrete "
                              "levels have no 0")

    # --- input -------------------------------------------------------------------------------
    def process_record(self, record, symbol: str | None = None, *, trade: bool = True):
        """A raw record of a source (read as training read its bars); its symbol is
        `symbol` (one file per symbol) or the record's own `symbol` field."""
        if isinstance(record, MalformedRecord):
            return self._reject(record.reason, record.raw)
        if symbol is None:
            symbol = record.get("symbol") if isinstance(record, dict) else None
            if symbol in (None, ""):
                return self._reject("record without a symbol", record)
        try:
            bar = self.format.bar(record)
        except BarRejected as err:
            return self._reject(err.reason, record)
        return self.process(str(symbol), bar, trade=trade, record=record)

    def process(self, symbol: str, bar: Bar, *, trade: bool = True,
                record: object = None) -> list[dict]:
        """One symbol's bar; returns the decisions of the timestamps this bar completed.
        `record`: what the source gave, stored as a rejection's text (default the bar)."""
        raw = bar if record is None else record
        a = self.index.get(str(symbol))
        if a is None:
            return self._reject(f"symbol {symbol!r} is not one of the bundle's {self.symbols}",
                                raw)
        if self.resume_after_us is not None and bar.timestamp_us <= self.resume_after_us:
            self.resumed += 1  # processed and stored before the restart
            self._position_us = max(self._position_us or bar.timestamp_us, bar.timestamp_us)
            return []
        if self.last_timestamp_us is not None and bar.timestamp_us <= self.last_timestamp_us:
            return self._reject(f"{symbol} bar {bar.iso} arrived after its timestamp was "
                                "processed (late bars are not applied)", raw)
        out: list[dict] = []
        if self._pending_us is not None and bar.timestamp_us != self._pending_us:
            if bar.timestamp_us < self._pending_us:
                return self._reject(f"{symbol} bar {bar.iso} is older than the timestamp "
                                    f"{format_timestamp(self._pending_us)} being collected", raw)
            out += self.flush()  # the earlier timestamp, with the trade flag it came with
        if a in self._pending:
            return out + self._reject(f"duplicate {symbol} bar at {bar.iso}", raw)
        self._position_us = bar.timestamp_us
        if not self._pending:
            self._pending_trade = trade
        self._pending_us = bar.timestamp_us
        self._pending[a] = bar
        if len(self._pending) == self.num_assets:
            out += self.flush()
        return out

    def flush(self, *, trade: bool | None = None) -> list[dict]:
        """Process the timestamp being collected with the bars that came (end of a stream);
        `trade` None: as its first bar's `process` call said."""
        if self._pending_us is None:
            return []
        ts, bars = self._pending_us, self._pending
        self._pending_us, self._pending = None, {}
        trade = self._pending_trade if trade is None else trade
        trade = trade and (self.start_us is None or ts >= self.start_us)
        decision = self.step(ts, bars, trade=trade)
        return [decision] if decision is not None else []

    def _reject(self, reason: str, record: object = "") -> list[dict]:
        """Count and log a rejected record, and store it after the latest bar taken in; one
        stored before a restart (same text after the same bar) is not counted again."""
        raw = _raw(record)  # only now: accepted bars never pay for the text
        if self._stored_rejections is not None:
            if take_stored(self._stored_rejections, self._position_us, raw):
                self.resumed += 1
                return []
            if (self._position_us or 0) > (self._last_stored_rejection_us or 0):
                self._stored_rejections = None  # past every stored one: each is new now
        self.rejected += 1
        log.warning("rejected bar: %s", reason)
        if self.store is not None:
            self.store.record_rejection(reason, raw, self._position_us)
        return []

    # --- one timestamp -----------------------------------------------------------------------
    def _complete(self, timestamp_us: int, bars: dict[int, Bar]) -> dict[int, Bar] | None:
        """The bars a timestamp is processed with when some symbol has none, by the bundle's
        `missing_bars` rule: "drop" skips the timestamp (None; training's inner alignment
        kept only timestamps every symbol has), "flat" gives the missing symbol a flat bar at
        its previous close with zero volume (outer alignment, forward-filled; a symbol
        without a previous bar drops the timestamp, as that timeline starts once every
        symbol has begun), "mask" leaves it missing (module docstring)."""
        if len(bars) == self.num_assets or self.missing_rule == "mask":
            return bars
        absent = [a for a in range(self.num_assets) if a not in bars]
        if self.missing_rule == "drop" or any(self.last_bar[a] is None for a in absent):
            self.dropped_timestamps += 1
            log.info("timestamp %s skipped: no bar of %s (missing_bars=%s, as in training)",
                     format_timestamp(timestamp_us),
                     ", ".join(self.symbols[a] for a in absent), self.missing_rule)
            return None
        filled = dict(bars)
        for a in absent:
            close = self.last_bar[a].close  # type: ignore[union-attr]
            filled[a] = Bar(timestamp_us, close, close, close, close, 0.0)
        return filled

    def step(self, timestamp_us: int, bars: dict[int, Bar], *, trade: bool = True) -> dict | None:
        """Everything of one timestamp: fills, features, and the decision (when trading)."""
        started = time.perf_counter()
        if self.pointer is not None and not self._rebuilding:
            self.follow_pointer()  # between timestamps: a promotion takes over before this one
        received, missing = bars, self.num_assets - len(bars)
        bars = self._complete(timestamp_us, bars)
        if bars is None:
            return None
        self._recent.append((timestamp_us, dict(received)))
        present = np.zeros(self.num_assets, bool)
        for a in bars:
            present[a] = True
        self.missing_bars += missing if self.timestamps else 0
        self.timestamps += 1
        returns = np.full(self.num_assets, np.nan)
        for a, bar in bars.items():
            previous = self.last_bar[a]
            if previous is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = math.log(bar.close / previous.close) if previous.close > 0 else math.nan
                returns[a] = r if math.isfinite(r) else math.nan
            self.last_bar[a] = bar
        carried = [self.last_bar[a] for a in range(self.num_assets)]
        # A symbol not seen yet holds nothing; 1.0 stands in for its prices.
        prices = np.array([[b.open, b.high, b.low, b.close] if b is not None else [1.0] * 4
                           for b in carried], np.float64)
        fills: list[dict] = []
        if self.trading:
            fills = self.ledger.on_bar(timestamp_us, prices[:, 0], prices[:, 1], prices[:, 2],
                                       prices[:, 3], present)
            for fill in fills:
                fill["symbol"] = self.symbols[fill["asset"]]
            self.equity_curve.append(float(self.ledger.equity))
        else:
            self.ledger.last_close = np.asarray(prices[:, 3], F32)
        iso = format_timestamp(timestamp_us)
        # Not while rebuilding from the store after a restart: those alerts were sent.
        monitor = None if self._rebuilding else self.monitor
        if monitor is not None and 0 in bars:
            equity = float(self.ledger.equity) if self.trading else None
            for alert in monitor.on_bar(bars[0].close, equity, iso):
                self.alert(alert)

        parts = {a: self.engines[a].parts(bar) for a, bar in bars.items()}
        cross = self.cross.update(returns, present) if self.cross.entries else []
        if self.regimes is not None:
            known = returns[present & np.isfinite(returns)]
            market_return = float(known.mean()) if known.size else math.nan
            self.last_regime = self.regimes.update(market_return)
        row = np.zeros((self.num_assets, self.num_features), F32)
        for a, bar in bars.items():
            self.market_states[a].update(bar)
            values = []
            for part, step in zip(parts[a], self.engines[a].plan):
                values += part if part is not None else [cross[step[1]][a]]
            raw = np.asarray(values, np.float64)
            raw[~np.isfinite(raw)] = np.nan
            if self.regime_in_features:
                raw = np.concatenate([raw, self.last_regime])
            if raw.shape[0] != self.num_features:
                raise BundleError(f"the runner computes {raw.shape[0]} features, the normalizer "
                                  f"has {self.num_features}")
            row[a] = self.normalizer(raw).astype(F32)
            if monitor is not None:
                for alert in monitor.on_features(row[a], iso):
                    self.alert(alert)
        i = self.bars_seen % self.window_bars
        self._window[i] = row
        self._window[i + self.window_bars] = row
        self.bars_seen += 1
        self.last_timestamp_us = timestamp_us

        decision = None
        if trade and self.bars_seen >= self.window_bars and not self.ledger.bankrupt():
            if not self.trading:
                self.trading = True
                self.equity_curve.append(float(self.ledger.equity))
            decision = self._decide(timestamp_us)
            # Symbols without a bar of their own here (a "flat" rule's filled ones included).
            decision["missing"] = [s for a, s in enumerate(self.symbols) if a not in received]
            decision["latency_us"] = round((time.perf_counter() - started) * 1e6, 1)
        if self._rebuilding:
            return decision
        deliver = decision is not None and self.sink is not None
        if self.store is not None:
            # Stored with its line before the sinks get it; marked emitted once they took it.
            self.store.record_timestamp(
                timestamp_us, {self.symbols[a]: bar for a, bar in received.items()}, decision,
                fills, line=decision_line(decision) if deliver else None)
            if self.max_age_seconds is not None and self.timestamps % self.purge_every_bars == 0:
                self.store.purge(self.max_age_seconds)
        if deliver:
            self.sink.emit(decision)
            if self.store is not None:
                self.store.mark_emitted(timestamp_us)
        return decision

    def _warmed_up(self, bundle: Bundle) -> MultiAssetRunner:
        """A runner of `bundle` that has seen the timestamps this one has (nothing traded)."""
        fresh = MultiAssetRunner(bundle, engine=self.engine)
        for timestamp_us, bars in self._recent:
            fresh.step(timestamp_us, bars, trade=False)
        return fresh

    def follow_pointer(self) -> bool:
        """Switch to the bundle the pointer names when it moved (True when switched); the
        rules are engine.Runner.follow_pointer's, for every symbol."""
        promoted = promoted_bundle(self, self._warmed_up, SAME_BOOK)
        if promoted is None:
            return False
        bundle, fresh = promoted
        target = Path(bundle.root)
        previous = self.bundle_root
        for name in _POLICY_STATE:
            setattr(self, name, getattr(fresh, name))
        self.bundle_root, self._refused = Path(bundle.root), None
        self.switches += 1
        if self.monitor is not None:
            from .monitor import Monitor

            self.monitor = Monitor(self.manifest, bars_per_year=float(
                self.manifest.get("bars_per_year", 252.0)), **self.monitor_options)
        was_flat, self.flat_after_drift = self.flat_after_drift, False
        log.warning("switched to the promoted bundle %s (was %s)%s", target, previous,
                    "; trading again after the drift alert" if was_flat else "")
        if self.store is not None:
            self.store.record_event("bundle_switched", {"kind": "bundle_switched",
                                                        "from": str(previous),
                                                        "to": str(target)}, self._position_us)
        return True

    def _flat_action(self):
        """The action whose target weights are all 0 (None when a discrete bundle has none)."""
        action = self.manifest["action"]
        if action["mode"] == "discrete":
            levels = [float(x) for x in action["discrete_levels"]]
            return levels.index(0.0) if 0.0 in levels else None
        return np.zeros(len(action["low"]), F32)

    def alert(self, payload: dict) -> None:
        """Log an alert and hand it to the sink; a drift alert with on_drift="flat" also
        takes every symbol flat from the next decision on."""
        if payload.get("kind") in ("drift", "feature_drift") and self.on_drift == "flat":
            self.flat_after_drift = True
            payload = dict(payload, action_taken="every symbol flat until a retrained "
                           "bundle is promoted")
        self.alerts += 1
        log.warning("alert: %s", payload.get("message", payload.get("kind")))
        if self.store is not None:
            self.store.record_event(payload.get("kind", "alert"), payload, self._position_us)
        if self.sink is not None and hasattr(self.sink, "alert"):
            self.sink.alert(payload)

    def observation(self) -> np.ndarray:
        start = self.bars_seen % self.window_bars
        window = self._window[start : start + self.window_bars]  # [W, A, F]
        flat_rows = window.reshape(self.window_bars, -1)
        if not self.include_portfolio:
            return flat_rows.reshape(-1) if self.layout == "flat" else flat_rows
        portfolio = self.ledger.portfolio_vector(self.ledger.last_close)
        if self.layout == "flat":
            return np.concatenate([flat_rows.reshape(-1), portfolio])
        tiled = np.broadcast_to(portfolio, (self.window_bars, portfolio.shape[0]))
        return np.concatenate([flat_rows, tiled], axis=1)

    def _decide(self, timestamp_us: int) -> dict:
        out: dict = {"timestamp": format_timestamp(timestamp_us)}
        close = self.ledger.last_close
        vol = np.array([s.volatility for s in self.market_states], F32)
        if self.ensemble is not None:
            action = self._combine(close, vol, out)
        else:
            action = self._policy_action(out)
        atr = np.array([np.nan_to_num(s.atr) for s in self.market_states], F32)
        seen = np.array([b is not None for b in self.last_bar])
        targets = self.ledger.decide(timestamp_us, close, atr, vol, self.last_regime, action,
                                     seen)
        self.decisions += 1
        if self.flat_after_drift:  # the order of the flat action replaces the policy's
            targets = self.ledger.decide(timestamp_us, close, atr, vol, self.last_regime,
                                         self._flat_action(), seen)
            out["flat"] = "drift alert: every symbol flat"
        out["target_positions"] = {s: float(targets[a]) for a, s in enumerate(self.symbols)}
        weights = self.ledger.position_weights()
        out["positions"] = {s: round(float(weights[a]), 8) for a, s in enumerate(self.symbols)}
        out["equity"] = float(self.ledger.equity)
        return out

    def _policy_action(self, out: dict):
        """The network's action on this timestamp's observation (the carry moves on); the
        line gets the action, a discrete policy's probabilities and the critic's value."""
        if getattr(self.network, "has_value", False):  # the critic's value or Q(s, pi(s))
            head, value, self.carry = self.network.forward_with_value(self.observation(),
                                                                      self.carry)
            out[getattr(self.network, "value_key", "value")] = round(float(value), 6)
        else:
            head, self.carry = self.network.forward(self.observation(), self.carry)
        spec = self.manifest["action"]
        if spec["mode"] == "discrete":
            logits = head.astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            action = int(np.argmax(head))
            out["action"] = action
            out["probabilities"] = [round(float(p), 6) for p in probs]
        else:
            raw = head.astype(F32)
            unit = np.tanh(raw) if spec.get("squash") == "tanh" else np.clip(raw, -1, 1)
            low, high = np.asarray(spec["low"], F32), np.asarray(spec["high"], F32)
            action = low + (unit + F32(1.0)) * F32(0.5) * (high - low)
            out["action"] = [float(x) for x in np.atleast_1d(action)]
        return action

    def _combine(self, close: np.ndarray, volatility: np.ndarray, out: dict) -> np.ndarray:
        """An ensemble bundle's action: the members' target weights combined by the rule
        (ensemble.py) from this timestamp's close and volatility per symbol, as the backtest
        reads the market's [A] rows (a missing bar's carried forward). The line gets the
        rule, member weights, each member's target per symbol and the trade probability."""
        combined, self.carry = self.ensemble.decide(
            self.observation(), self.carry, self.bars_seen, close, volatility,
            self.last_regime)
        out["action"] = [float(x) for x in combined.target]
        out["rule"] = self.ensemble.rule
        out["member_weights"] = {n: float(w) for n, w in
                                 zip(self.ensemble.names, combined.weights)}
        out["member_targets"] = {n: {s: float(t[a]) for a, s in enumerate(self.symbols)}
                                 for n, t in zip(self.ensemble.names, combined.member_targets)}
        out["trade_probability"] = combined.trade_probability
        return combined.target

    # --- whole streams -----------------------------------------------------------------------
    def run(self, records: Iterable, *, start_us: int | None = None,
            resume_after_us: int | None = None) -> dict:
        """Feed records in time order (raw records with a `symbol` field, or (symbol,
        record) pairs); bars before `start_us` only warm up, bars up to `resume_after_us`
        (`replay_store`'s answer after a restart) are skipped as processed."""
        if start_us is not None:
            self.start_us = start_us
        if resume_after_us is not None:
            self.resume_after_us = resume_after_us
        for record in records:
            if isinstance(record, tuple) and len(record) == 2 and isinstance(record[0], str):
                self.process_record(record[1], record[0])
            else:
                self.process_record(record)
        self.flush()
        return self.summary()

    def summary(self) -> dict:
        bars_per_year = float(self.manifest.get("bars_per_year", 252.0))
        out = summary(self.equity_curve, bars_per_year, self.ledger) if self.equity_curve else {}
        out.update(decisions=self.decisions, timestamps=self.timestamps,
                   missing_bars=self.missing_bars, dropped_timestamps=self.dropped_timestamps,
                   rejected_bars=self.rejected)
        if self.alerts:
            out["alerts"] = self.alerts
        if self.switches:
            out["bundle_switches"] = self.switches
            out["bundle"] = str(self.bundle_root)
        if self.resumed:
            out["resumed_bars"] = self.resumed
        return out

    # --- restart from the replay store -------------------------------------------------------
    def replay_store(self, start_us: int | None) -> int | None:
        """Rebuild the state from the timestamps already in the store (after a restart);
        returns the last one (None: an empty store). Each stored timestamp is stepped again
        with its bars, deciding where the first run decided (the ledger's orders must be
        the same) but storing, printing and alerting nothing."""
        if self.store is None:
            return None
        self.start_us = start_us
        if self.store.has_rows("bars"):
            raise BundleError(f"{self.store.path}: holds a single-symbol runner's bars; use "
                              "another store for a bundle trading several symbols")
        stored = self.store.symbol_bars()
        if not stored:
            return None
        unknown = sorted({s for _, bars in stored for s in bars} - set(self.index))
        if unknown:
            raise BundleError(f"{self.store.path}: holds bars of {', '.join(unknown)}, which "
                              f"the bundle does not trade ({', '.join(self.symbols)})")
        self._rebuilding = True
        try:
            for timestamp_us, rows in stored:
                bars = {self.index[s]: Bar(timestamp_us, *ohlcv) for s, ohlcv in rows.items()}
                trade = start_us is None or timestamp_us >= start_us
                self.step(timestamp_us, dict(sorted(bars.items())), trade=trade)
        finally:
            self._rebuilding = False
        last = stored[-1][0]
        self.resume_after_us = last
        self._stored_rejections = self.store.rejection_counts()
        self._last_stored_rejection_us = max(
            (after for after, _ in self._stored_rejections if after is not None), default=None)
        return last

    def emit_unemitted(self) -> int:
        """Hands the sinks the decisions stored but not emitted before a restart, in order."""
        return emit_unemitted(self.store, self.sink)
