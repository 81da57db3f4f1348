"""Paper-trading ledger: the env's fills, costs and risk rules for one asset, in numpy.

It repeats `envs.accounting.account` (the env's accounting) step for step, in float32 like
the env (tests/test_accounting.py checks it), so a runner started flat at the first bar of a
backtest split holds the same book and therefore feeds the same portfolio state to the policy:

  decide(close_t, atr_t, vol_t, regime_t, action)  at the close of bar t:
      target weight = action -> weight (discrete level, or clipped continuous weight;
      long-only), ATR sizing, leverage cap (per regime), circuit-breaker pause;
      order = target units - units, dropped inside the no-trade band
  fill(bar t+1):
      fill at the open of t+1 (or its close with fill_at_close) paying
      (fee + half spread + min(slippage_vol_mult * vol_t, cap)) x traded notional,
      stop-loss / trailing stop intrabar, mark at the close, short borrow and funding,
      peak equity and circuit breaker.

Costs and risk parameters come from the manifest (`TransactionConfig`, `TradingConfig`,
`RiskConfig` of the run). The portfolio vector is `envs.observation.portfolio_vector`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
BPS = F32(1e-4)


def f32(x) -> np.float32:
    return np.float32(x)


@dataclass
class PendingOrder:
    decided_at_us: int
    target_weight: np.float32
    delta_units: np.float32
    rate: np.float32  # cost per unit of traded notional
    atr: np.float32  # ATR at decision time (stops)


@dataclass
class Ledger:
    costs: dict
    trading: dict
    risk: dict
    action: dict
    cash: np.float32 = field(init=False)
    units: np.float32 = field(init=False)
    entry_price: np.float32 = field(init=False)
    best_price: np.float32 = field(init=False)
    bars_in_position: int = field(init=False)
    equity: np.float32 = field(init=False)
    peak_equity: np.float32 = field(init=False)
    breaker_peak: np.float32 = field(init=False)
    pause_left: int = field(init=False)
    pending: PendingOrder | None = field(init=False)

    def __post_init__(self) -> None:
        self.initial_equity = f32(self.trading.get("initial_equity", 1.0))
        self.levels = np.asarray(self.action.get("discrete_levels", ()), F32)
        self.reset()

    def reset(self) -> None:
        equity = self.initial_equity
        self.cash, self.units = equity, F32(0.0)
        self.entry_price = self.best_price = F32(0.0)
        self.bars_in_position = 0
        self.equity = self.peak_equity = self.breaker_peak = equity
        self.pause_left = 0
        self.pending = None
        self.total_costs = 0.0
        self.num_trades = 0
        self.num_stops = 0
        self.last_close = F32(0.0)

    # --- decision -----------------------------------------------------------------------------
    def action_to_weight(self, action) -> np.float32:
        lev = f32(self.trading.get("max_leverage", 1.0))
        if self.action["mode"] == "discrete":
            index = min(max(int(action), 0), len(self.levels) - 1)
            weight = self.levels[index] / F32(1.0)
        else:
            raw = f32(np.asarray(action, F32).reshape(-1)[0])
            if math.isnan(raw):
                raw = F32(0.0)
            weight = f32(np.clip(raw, -lev, lev))
        if self.trading.get("long_only", False):
            weight = max(weight, F32(0.0))
        return f32(weight)

    def risk_weight(self, weight, close, atr, regime) -> np.float32:
        """ATR sizing, leverage cap and circuit-breaker pause (envs.risk), decision time."""
        r = self.risk
        if r.get("atr_sizing", False):
            stop = f32(r.get("stop_loss_atr", 0.0))
            distance = max(f32((stop if stop > 0 else F32(1.0)) * atr), F32(1e-12))
            weight = f32(weight * f32(r.get("risk_per_trade", 0.01)) * close / distance)
        limit = f32(self.trading.get("max_leverage", 1.0))
        if r.get("regime_caps", False):
            caps = np.asarray(r.get("regime_max_leverage", (5.0, 2.0, 1.0)), F32)
            limit = min(limit, caps[int(np.argmax(regime))])
        gross = abs(weight)
        weight = f32(weight * min(F32(1.0), f32(limit / max(gross, F32(1e-12)))))
        if self.pause_left > 0:
            weight = F32(0.0)
        return weight

    def decide(self, timestamp_us, close, atr, volatility, regime, action) -> np.float32:
        """Turn the policy's action at the close of bar t into an order for bar t+1."""
        close, atr, volatility = f32(close), f32(atr), f32(volatility)
        weight = self.risk_weight(self.action_to_weight(action), close, atr, regime)
        target_units = f32(weight * self.equity / close)
        delta = f32(target_units - self.units)
        band = f32(self.costs.get("min_trade_fraction", 0.001))
        if f32(abs(delta) * close) < f32(band * abs(self.equity)):
            delta = F32(0.0)
        c = self.costs
        slippage_bps = min(
            f32(f32(c.get("slippage_vol_mult", 0.05)) * volatility / BPS),
            f32(c.get("slippage_cap_bps", 25.0)),
        )
        bps = f32(f32(c.get("fee_bps", 1.0)) + f32(c.get("half_spread_bps", 1.0)))
        rate = f32(f32(bps + slippage_bps + F32(0.0)) * BPS)
        self.pending = PendingOrder(int(timestamp_us), weight, delta, rate, atr)
        return weight

    # --- the next bar ---------------------------------------------------------------------------
    def on_bar(self, bar) -> list[dict]:
        """Fill the pending order on this bar, apply stops, mark to market; returns fills."""
        order, fills = self.pending, []
        self.pending = None
        open1, high1, low1, close1 = f32(bar.open), f32(bar.high), f32(bar.low), f32(bar.close)
        self.last_close = close1
        if order is None:
            return fills
        high1, low1 = max(high1, open1), min(low1, open1)
        at_close = bool(self.trading.get("fill_at_close", False))
        cash, units = self.cash, self.units
        entry, best, bars = self.entry_price, self.best_price, self.bars_in_position
        costs_paid = F32(0.0)

        d_open = F32(0.0) if at_close else order.delta_units
        fee = f32(abs(d_open) * open1 * order.rate)
        cash = f32(f32(cash - f32(d_open * open1)) - fee)
        costs_paid = f32(costs_paid + fee)
        new_units = f32(units + d_open)
        entry, best, bars = _track_entry(units, new_units, entry, best, bars, open1)
        units = new_units
        if d_open != 0:
            fills.append(self._fill(bar, order, open1, units - d_open, units, fee))

        level = self._stop_level(units, entry, best, order.atr)
        hit = (units > 0 and low1 <= level) or (units < 0 and high1 >= level)
        if hit:
            stop_price = min(level, open1) if units > 0 else max(level, open1)
            exit_units = f32(-units)
            fee = f32(abs(exit_units) * stop_price * order.rate)
            cash = f32(f32(cash - f32(exit_units * stop_price)) - fee)
            costs_paid = f32(costs_paid + fee)
            fills.append(self._fill(bar, order, stop_price, units, F32(0.0), fee))
            self.num_stops += 1
            entry, best, bars = _track_entry(units, F32(0.0), entry, best, bars, stop_price)
            units = F32(0.0)
        if units > 0:
            best = max(best, high1)
        elif units < 0:
            best = min(best, low1)

        d_close = order.delta_units if (at_close and not hit) else F32(0.0)
        if d_close != 0:
            fee = f32(abs(d_close) * close1 * order.rate)
            cash = f32(f32(cash - f32(d_close * close1)) - fee)
            costs_paid = f32(costs_paid + fee)
            new_units = f32(units + d_close)
            entry, best, bars = _track_entry(units, new_units, entry, best, bars, close1)
            fills.append(self._fill(bar, order, close1, units, new_units, fee))
            units = new_units
        bars = bars + 1 if units != 0 else 0

        c = self.costs
        carry = f32(
            f32(max(-units, F32(0.0)) * close1 * f32(c.get("borrow_bps_per_bar", 0.4)) * BPS)
            + f32(max(-cash, F32(0.0)) * f32(c.get("funding_bps_per_bar", 0.0)) * BPS)
        )
        cash = f32(cash - carry)
        equity = f32(cash + f32(units * close1))
        self.peak_equity = max(self.peak_equity, equity)

        paused = self.pause_left > 0
        self.pause_left = max(self.pause_left - 1, 0)
        self.breaker_peak = max(self.breaker_peak, equity)
        cb = f32(self.risk.get("circuit_breaker_drawdown", 0.0))
        if cb > 0 and not paused and f32(F32(1.0) - equity / self.breaker_peak) >= cb:
            self.pause_left = int(self.risk.get("pause_bars", 20))
            self.breaker_peak = equity

        self.cash, self.units, self.equity = cash, units, equity
        self.entry_price, self.best_price, self.bars_in_position = entry, best, bars
        self.total_costs += float(costs_paid + carry)
        self.num_trades += 1 if fills else 0
        return fills

    def _stop_level(self, units, entry, best, atr) -> float:
        sl = f32(self.risk.get("stop_loss_atr", 0.0))
        ts = f32(self.risk.get("trailing_stop_atr", 0.0))
        if units > 0:
            return max(
                f32(entry - sl * atr) if sl > 0 else -np.inf,
                f32(best - ts * atr) if ts > 0 else -np.inf,
            )
        if units < 0:
            return min(
                f32(entry + sl * atr) if sl > 0 else np.inf,
                f32(best + ts * atr) if ts > 0 else np.inf,
            )
        return math.nan

    @staticmethod
    def _fill(bar, order, price, before, after, fee) -> dict:
        return {
            "timestamp_us": bar.timestamp_us,
            "decided_at_us": order.decided_at_us,
            "price": float(price),
            "from_position": float(before),
            "to_position": float(after),
            "cost": float(fee),
        }

    # --- observation and reporting -------------------------------------------------------------
    def portfolio_vector(self, close) -> np.ndarray:
        """(weight, unrealized P&L, log(1 + bars held), drawdown, cash fraction), float32."""
        close = f32(close)
        equity = self.equity
        safe = equity if abs(equity) > 1e-12 else F32(1e-12)
        weight = f32(self.units * close / safe)
        side = np.sign(self.units)
        entry = self.entry_price if self.entry_price > 0 else F32(1.0)
        unrealized = f32(side * f32(close / entry - F32(1.0))) if side != 0 else F32(0.0)
        held = np.log1p(F32(self.bars_in_position))
        drawdown = f32(F32(1.0) - equity / self.peak_equity)
        return np.array([weight, unrealized, held, drawdown, f32(self.cash / safe)], F32)

    def position_weight(self) -> float:
        safe = self.equity if abs(self.equity) > 1e-12 else F32(1e-12)
        return float(self.units * self.last_close / safe)

    def bankrupt(self) -> bool:
        fraction = f32(self.risk.get("bankruptcy_fraction", 0.05))
        return bool(self.equity <= fraction * self.initial_equity)


def _track_entry(old_units, new_units, entry, best, bars, price):
    opened = np.sign(new_units) != np.sign(old_units) and new_units != 0
    if opened:
        return f32(price), f32(price), 0
    if new_units == 0:
        return F32(0.0), F32(0.0), 0
    return entry, best, bars


def track_entry_arrays(old_units, new_units, entry, best, bars, price):
    """`_track_entry` elementwise over arrays (several assets, or a tree's outcomes)."""
    opened = (np.sign(new_units) != np.sign(old_units)) & (new_units != 0)
    flat = new_units == 0
    entry = np.where(opened, price, np.where(flat, F32(0.0), entry)).astype(F32)
    best = np.where(opened, price, np.where(flat, F32(0.0), best)).astype(F32)
    bars = np.where(opened | flat, 0, bars)
    return entry, best, bars


def stop_fills(units, entry, best, atr, open1, high1, low1, stop_loss_atr, trailing_stop_atr):
    """The env's intrabar stops elementwise: (hit, exit units, stop fill price) for held `units`
    whose stop level (entry -/+ stop_loss_atr ATR, best -/+ trailing_stop_atr ATR; a gap
    through it fills at the open) the bar's low / high reached."""
    sl, ts, inf = stop_loss_atr, trailing_stop_atr, F32(np.inf)
    long_level = np.maximum(entry - sl * atr if sl > 0 else -inf,
                            best - ts * atr if ts > 0 else -inf)
    short_level = np.minimum(entry + sl * atr if sl > 0 else inf,
                             best + ts * atr if ts > 0 else inf)
    level = np.where(units > 0, long_level, np.where(units < 0, short_level, F32(0.0)))
    hit = ((units > 0) & (low1 <= level)) | ((units < 0) & (high1 >= level))
    price = np.where(units > 0, np.minimum(level, open1), np.maximum(level, open1))
    stop_price = np.where(hit, price, open1).astype(F32)
    exit_units = np.where(hit, -units, F32(0.0)).astype(F32)
    return hit, exit_units, stop_price


def summary(equity_curve: list[float], bars_per_year: float, ledger: Ledger) -> dict:
    """Paper-trading metrics with the conventions of jaxtrade.metrics (simple returns)."""
    equity = np.asarray(equity_curve, dtype=np.float64)
    returns = equity[1:] / np.where(equity[:-1] != 0, equity[:-1], np.nan) - 1.0
    returns = np.nan_to_num(returns)
    out = {
        "bars": int(returns.size),
        "initial_equity": float(equity[0]) if equity.size else math.nan,
        "final_equity": float(equity[-1]) if equity.size else math.nan,
        "total_return": float(np.prod(1.0 + returns) - 1.0) if returns.size else math.nan,
        "bars_with_fills": ledger.num_trades,
        "stops": ledger.num_stops,
        "costs_paid": ledger.total_costs,
    }
    if returns.size >= 2:
        std = returns.std(ddof=1)
        out["annual_return"] = float(
            np.expm1(np.log1p(returns).sum() * bars_per_year / returns.size)
        )
        out["annual_volatility"] = float(std * math.sqrt(bars_per_year))
        out["sharpe"] = float(returns.mean() / std * math.sqrt(bars_per_year)) if std > 0 else 0.0
        downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
        out["sortino"] = (
            float(returns.mean() * bars_per_year / (downside * math.sqrt(bars_per_year)))
            if downside > 0
            else math.inf
        )
        curve = np.cumprod(1.0 + returns)
        peak = np.maximum.accumulate(np.concatenate([[1.0], curve]))[1:]
        out["max_drawdown"] = float(min(np.min(curve / peak - 1.0), 0.0))
    return out
