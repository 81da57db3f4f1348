"""Portfolio accounting of one step: a pure function of the portfolio, the action and bars.

The env step is "read the bars from MarketData" + the functions below; nothing here reads
MarketData, so a planner can call the same accounting with modelled bars and the numpy
ledger of the live runner (jaxtrade/live/ledger.py) is tested against it.

    after = decide(state, target_weights, decision_bar, params)          # close of t
    next_state, reward, terminated, truncated, info = settle(after, next_bar, params)
    # the same, in one call:
    account(state, target_weights, decision_bar, next_bar, params)

Time indices. `state` is the portfolio marked at the close of bar t (state.t = t).
`DecisionBar` holds values of bar t, known at the close of t (the decision may use them);
`NextBar` holds bar t+1, unknown when the decision is taken (the env reads the market's row
t+1; a planner supplies a modelled outcome). `decide` reads only the state and the decision
bar and returns the `Afterstate`: the book after the action is decided and the order sent,
before anything of bar t+1 is known. `settle` fills that order on bar t+1, checks stops,
marks at the close of t+1, charges carry, computes the reward and updates the risk state.

`params` is an `envs.trading.EnvParams`; only `params.costs`, `params.trading`,
`params.risk` and `params.reward` are read (`params.market` may be None).

Everything is elementwise over assets ([A]) and scalar otherwise: jit and vmap apply (vmap
`settle` over a batch of `NextBar`s with the afterstate unbatched to score chance outcomes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from envs import costs as costs_lib
from envs import rewards as rewards_lib
from envs import risk as risk_lib
from envs.rewards import RewardStats

if TYPE_CHECKING:
    from envs.trading import EnvParams


@struct.dataclass
class TradingConfig:
    initial_equity: jax.Array | float = 1.0
    max_leverage: jax.Array | float = 1.0
    long_only: jax.Array | bool = False
    fill_at_close: jax.Array | bool = False  # fill at the close of t+1 instead of its open


@struct.dataclass
class EnvState:
    t: jax.Array  # bar whose close was last observed
    end: jax.Array  # the episode is truncated when t reaches this bar
    time: jax.Array  # steps taken in this episode
    cash: jax.Array
    units: jax.Array  # [A] signed quantities held
    entry_price: jax.Array  # [A] fill price of the current position's opening trade
    best_price: jax.Array  # [A] most favourable price since entry (trailing stop)
    bars_in_position: jax.Array  # [A] int32
    equity: jax.Array  # marked at the close of t
    peak_equity: jax.Array
    breaker_peak: jax.Array  # circuit-breaker reference peak (restarts at a trip)
    pause_left: jax.Array  # int32 decisions still forced flat by the circuit breaker
    stats: RewardStats


@struct.dataclass
class DecisionBar:
    """Values of bar t, known at the close of t (the env reads row t of MarketData)."""

    close: jax.Array  # [A] close of t: sizes the order (target units) and the no-trade band
    atr: jax.Array  # [A] ATR at t: ATR sizing and the stop distances used during t+1
    volatility: jax.Array  # [A] volatility at t: the slippage part of the fill cost rate
    regime: jax.Array  # [R] regime probabilities at t: the per-regime leverage cap


@struct.dataclass
class NextBar:
    """Bar t+1, not known at decision time (env: row t+1; planner: a modelled outcome)."""

    open: jax.Array  # [A] open of t+1: the fill price (opening gap included)
    high: jax.Array  # [A] high of t+1: short stops (raised to the open if below it)
    low: jax.Array  # [A] low of t+1: long stops (lowered to the open if above it)
    close: jax.Array  # [A] close of t+1: the mark, carry costs, fills with fill_at_close
    valid: jax.Array  # [A] > 0 where the asset trades on t+1; orders elsewhere are dropped


@struct.dataclass
class Afterstate:
    """The book after the decision at the close of t, before bar t+1 is known."""

    state: EnvState  # the portfolio at the close of t, unchanged
    target_weights: jax.Array  # [A] after the risk manager (0 while the breaker pauses)
    order_units: jax.Array  # [A] units to trade on t+1 (no-trade band applied)
    cost_rate: jax.Array  # [A] cost per unit of traded notional of every fill on t+1
    stop_atr: jax.Array  # [A] ATR of bar t, for the stop levels during t+1
    paused: jax.Array  # bool: the circuit breaker forced this decision flat


def decide(state: EnvState, target_weights: jax.Array, bar: DecisionBar, params: EnvParams,
           slippage_bps: jax.Array | None = None) -> Afterstate:
    """The order sent at the close of t: exact, from data known at the close of t only.

    `target_weights` [A] are the action's raw weights (`TradingEnv.action_to_weights`);
    here they pass ATR sizing, the (regime) leverage cap and the circuit-breaker pause, become
    target units at the close of t and an order after the no-trade band. `slippage_bps` is
    extra slippage on the step's fills (the adversarial wrapper's shock; default none).
    """
    tc, cfg_risk, trade = params.costs, params.risk, params.trading
    if slippage_bps is None:
        slippage_bps = jnp.zeros((), jnp.float32)
    weights = risk_lib.atr_size(target_weights, bar.close, bar.atr, cfg_risk)
    limit = risk_lib.leverage_limit(trade.max_leverage, bar.regime, cfg_risk)
    weights = risk_lib.cap_gross(weights, limit)
    paused = state.pause_left > 0
    weights = jnp.where(paused, 0.0, weights)
    target_units = weights * state.equity / bar.close
    delta = costs_lib.apply_no_trade_band(target_units - state.units, bar.close,
                                          state.equity, tc)
    rate = costs_lib.fill_cost_rate(bar.volatility, tc, slippage_bps)
    return Afterstate(state=state, target_weights=weights, order_units=delta, cost_rate=rate,
                      stop_atr=bar.atr, paused=paused)


def settle(after: Afterstate, bar: NextBar, params: EnvParams):
    """Bar t+1 happens to the afterstate: fills, stops, mark, carry, reward, risk state.

    Returns (next_state, reward, terminated, truncated, info) with next_state.t = t + 1;
    info: equity, position, units, target_weights, traded_notional, costs, traded, stopped,
    paused, log_return, bar (the env adds regime). See envs/trading.py for their meaning.
    """
    state, rate, atr_t, paused = after.state, after.cost_rate, after.stop_atr, after.paused
    tc, cfg_risk, trade = params.costs, params.risk, params.trading
    t1 = state.t + 1
    one = _runtime_one(state)
    open1 = bar.open
    high1 = jnp.maximum(bar.high, open1)
    low1 = jnp.minimum(bar.low, open1)
    close1 = bar.close
    delta = jnp.where(bar.valid > 0, after.order_units, 0.0)

    # Fill at the open of t+1 (unless filling at the close).
    at_open = ~trade.fill_at_close
    d_open = jnp.where(at_open, delta, 0.0)
    fee_open = jnp.sum(jnp.abs(d_open) * open1 * rate)
    cash = state.cash - jnp.sum(d_open * open1) - fee_open
    units = _shared(state.units + d_open, one)
    entry, best, bars = _track_entry(state.units, units, state.entry_price,
                                     state.best_price, state.bars_in_position, open1)

    # Stops during bar t+1 on what is held through the bar.
    level = risk_lib.stop_levels(units, entry, best, atr_t, cfg_risk)
    hit, stop_price = risk_lib.stop_hits(units, level, open1, high1, low1)
    exit_units = _shared(jnp.where(hit, -units, 0.0), one)
    fee_stop = jnp.sum(jnp.abs(exit_units) * stop_price * rate)
    cash = cash - jnp.sum(exit_units * stop_price) - fee_stop
    held = units
    units = units + exit_units
    entry, best, bars = _track_entry(held, units, entry, best, bars, stop_price)
    best = jnp.where(units > 0, jnp.maximum(best, high1),
                     jnp.where(units < 0, jnp.minimum(best, low1), best))

    # Fill at the close of t+1 (stopped assets stay flat until the next decision).
    d_close = jnp.where(trade.fill_at_close & ~hit, delta, 0.0)
    fee_close = jnp.sum(jnp.abs(d_close) * close1 * rate)
    cash = cash - jnp.sum(d_close * close1) - fee_close
    before_close = units
    units = units + d_close
    entry, best, bars = _track_entry(before_close, units, entry, best, bars, close1)
    bars = jnp.where(units != 0, bars + 1, 0)

    # Mark at the close of t+1, carry costs, reward, risk state.
    carry = costs_lib.carry_cost(units, close1, cash, tc)
    cash = cash - carry
    equity = _shared(cash + jnp.sum(units * close1), one)
    peak = jnp.maximum(state.peak_equity, equity)
    equity_floor = 1e-6 * trade.initial_equity
    r = rewards_lib.log_return(equity, state.equity, equity_floor)
    traded_notional = (jnp.sum(jnp.abs(d_open) * open1)
                       + jnp.sum(jnp.abs(exit_units) * stop_price)
                       + jnp.sum(jnp.abs(d_close) * close1))
    drawdown = 1.0 - equity / peak
    prev_drawdown = 1.0 - state.equity / state.peak_equity
    turnover = traded_notional / jnp.maximum(jnp.abs(state.equity), equity_floor)
    reward = rewards_lib.combined_reward(r, state.stats, drawdown, prev_drawdown, turnover,
                                         params.reward)
    stats = rewards_lib.update_stats(r, state.stats, params.reward.dsr_eta)

    pause_left = jnp.maximum(state.pause_left - 1, 0)
    breaker_peak = jnp.maximum(state.breaker_peak, equity)
    cb = cfg_risk.circuit_breaker_drawdown
    trip = (cb > 0) & (1.0 - equity / breaker_peak >= cb) & ~paused
    pause_left = jnp.where(trip, cfg_risk.pause_bars, pause_left).astype(jnp.int32)
    breaker_peak = jnp.where(trip, equity, breaker_peak)

    next_state = EnvState(
        t=t1, end=state.end, time=state.time + 1, cash=cash, units=units,
        entry_price=entry, best_price=best, bars_in_position=bars.astype(jnp.int32),
        equity=equity, peak_equity=peak, breaker_peak=breaker_peak,
        pause_left=pause_left, stats=stats,
    )
    terminated = risk_lib.is_bankrupt(equity, trade.initial_equity, cfg_risk)
    truncated = (t1 >= state.end) & ~terminated
    safe_equity = jnp.where(jnp.abs(equity) > equity_floor, equity, equity_floor)
    info = {
        "equity": equity,
        "position": units * close1 / safe_equity,
        "units": units,
        "target_weights": after.target_weights,
        "traded_notional": traded_notional,
        "costs": fee_open + fee_stop + fee_close + carry,
        "traded": traded_notional > 0,
        "stopped": jnp.any(hit),
        "paused": paused,
        "log_return": r,
        "bar": t1,
    }
    return next_state, reward, terminated, truncated, info


def account(state: EnvState, target_weights: jax.Array, decision_bar: DecisionBar,
            next_bar: NextBar, params: EnvParams, slippage_bps: jax.Array | None = None):
    """One step of accounting from the close of t to the close of t+1.

    `settle(decide(state, target_weights, decision_bar, params, slippage_bps), next_bar,
    params)`: returns (next_state, reward, terminated, truncated, info). Inputs by time:
      state           the portfolio marked at the close of t (state.t = t)
      target_weights  [A] the action decided at the close of t, as raw weights
      decision_bar    close, atr, volatility [A] and regime [R] of bar t (known at t)
      next_bar        open, high, low, close, valid [A] of bar t+1 (not known at t)
    """
    after = decide(state, target_weights, decision_bar, params, slippage_bps)
    return settle(after, next_bar, params)


def _runtime_one(state: EnvState) -> jax.Array:
    """A float32 1 per env that the compiler cannot see is 1 (see `_shared`)."""
    n = (jnp.abs(state.end) + 1).astype(jnp.float32)  # never 0, always finite
    return n / n


def _shared(x: jax.Array, one: jax.Array) -> jax.Array:
    """`x` unchanged, but computed once per step instead of once per consumer.

    XLA:CPU copies chains of cheap elementwise ops into every fused loop that reads them.
    With the auto-reset every state field is selected separately, so the whole transition
    (equity depends on all of it) was recomputed for each of ~15 fields: a step with
    auto-reset cost 2.5x one without. A division counts as expensive, so XLA materializes
    its result once and shares it; dividing by an exact 1 keeps every bit (NaN, inf, -0 too).
    Booleans go through float32 and back.
    """
    if x.dtype == jnp.bool_:
        return (x.astype(jnp.float32) / one) > 0
    return x / one


def _track_entry(old_units, new_units, entry, best, bars, price):
    """Entry/best price and holding time after a change of position at `price`."""
    opened = (jnp.sign(new_units) != jnp.sign(old_units)) & (new_units != 0)
    flat = new_units == 0
    entry = jnp.where(opened, price, jnp.where(flat, 0.0, entry))
    best = jnp.where(opened, price, jnp.where(flat, 0.0, best))
    bars = jnp.where(opened | flat, 0, bars)
    return entry, best, bars
