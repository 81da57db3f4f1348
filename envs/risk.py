"""Risk manager: pure functions applied by the env around every decision and fill.

All switches are array fields of `RiskConfig` (so one compiled program serves every setting):

- ATR position sizing (`atr_sizing`): the action's weight w in [-1, 1] per asset is read as a
  fraction of a risk budget: units = w * risk_per_trade * equity / (stop_loss_atr * ATR_t),
  i.e. a stop-loss hit costs `risk_per_trade` of equity (1 x ATR when the stop is off).
  As a weight: w * risk_per_trade * close_t / (stop_loss_atr * ATR_t); the leverage cap
  still applies.
- Leverage cap: gross target exposure sum_a |w_a| <= max_leverage (TradingConfig); with
  `regime_caps` the cap is min(max_leverage, regime_max_leverage[argmax regime_t]), e.g.
  trend 5x, range 2x, defensive 1x.
- Stop-loss at `stop_loss_atr` x ATR from the entry price and trailing stop at
  `trailing_stop_atr` x ATR from the best price since entry (0 disables either). Levels use
  the ATR of the decision bar t and the best price up to bar t; a stop triggers intrabar on
  bar t+1 when its low (long) / high (short) crosses the level, and exits at the level, or at
  the open when the bar gaps through it. A stopped asset stays flat until the next decision.
- Max-drawdown circuit breaker (`circuit_breaker_drawdown` > 0): when equity falls that far
  below its peak since the last trip, the next `pause_bars` decisions are forced to flat;
  the reference peak restarts at the equity at the trip.
- Bankruptcy: the episode terminates when equity <= bankruptcy_fraction * initial equity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RiskConfig:
    atr_sizing: jax.Array | bool = False
    risk_per_trade: jax.Array | float = 0.01
    regime_caps: jax.Array | bool = False
    regime_max_leverage: jax.Array | tuple = (5.0, 2.0, 1.0)
    stop_loss_atr: jax.Array | float = 0.0
    trailing_stop_atr: jax.Array | float = 0.0
    circuit_breaker_drawdown: jax.Array | float = 0.0
    pause_bars: jax.Array | int = 20
    bankruptcy_fraction: jax.Array | float = 0.05


def atr_size(weights: jax.Array, close: jax.Array, atr: jax.Array, cfg: RiskConfig) -> jax.Array:
    """Turn risk-budget fractions into portfolio weights when ATR sizing is on."""
    stop_distance = jnp.maximum(jnp.where(cfg.stop_loss_atr > 0, cfg.stop_loss_atr, 1.0) * atr,
                                1e-12)
    sized = weights * cfg.risk_per_trade * close / stop_distance
    return jnp.where(cfg.atr_sizing, sized, weights)


def leverage_limit(max_leverage: jax.Array, regime: jax.Array, cfg: RiskConfig) -> jax.Array:
    regime_cap = jnp.asarray(cfg.regime_max_leverage)[jnp.argmax(regime)]
    return jnp.where(cfg.regime_caps, jnp.minimum(max_leverage, regime_cap), max_leverage)


def cap_gross(weights: jax.Array, limit: jax.Array) -> jax.Array:
    """Scale weights down (never up) so that sum |w| <= limit."""
    gross = jnp.sum(jnp.abs(weights))
    return weights * jnp.minimum(1.0, limit / jnp.maximum(gross, 1e-12))


def stop_levels(
    units: jax.Array, entry: jax.Array, best: jax.Array, atr: jax.Array, cfg: RiskConfig
) -> jax.Array:
    """Per-asset stop price for the held position (-inf/+inf where no stop applies, 0 flat)."""
    side = jnp.sign(units)
    inf = jnp.inf
    sl_on = cfg.stop_loss_atr > 0
    ts_on = cfg.trailing_stop_atr > 0
    long_sl = jnp.where(sl_on, entry - cfg.stop_loss_atr * atr, -inf)
    long_ts = jnp.where(ts_on, best - cfg.trailing_stop_atr * atr, -inf)
    short_sl = jnp.where(sl_on, entry + cfg.stop_loss_atr * atr, inf)
    short_ts = jnp.where(ts_on, best + cfg.trailing_stop_atr * atr, inf)
    long_level = jnp.maximum(long_sl, long_ts)
    short_level = jnp.minimum(short_sl, short_ts)
    return jnp.where(side > 0, long_level, jnp.where(side < 0, short_level, 0.0))


def stop_hits(
    units: jax.Array, level: jax.Array, open_: jax.Array, high: jax.Array, low: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Which held positions are stopped on this bar, and at what price (gaps fill at open)."""
    long_hit = (units > 0) & (low <= level)
    short_hit = (units < 0) & (high >= level)
    hit = long_hit | short_hit
    price = jnp.where(units > 0, jnp.minimum(level, open_), jnp.maximum(level, open_))
    # Where nothing is hit the price is irrelevant; keep it finite so 0 * price stays 0.
    return hit, jnp.where(hit, price, open_)


def is_bankrupt(equity: jax.Array, initial_equity: jax.Array, cfg: RiskConfig) -> jax.Array:
    return equity <= cfg.bankruptcy_fraction * initial_equity
