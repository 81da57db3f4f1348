"""Transaction costs: commission, half-spread, volatility-scaled slippage, borrow and funding.

Every cost is charged in cash at the moment it is incurred, so equity curves are net of costs
by construction. Defaults (always on) are chosen for liquid large-cap equities on daily bars:

  fee_bps = 1.0              commission, bps of traded notional (retail/low-cost broker)
  half_spread_bps = 1.0      half the quoted spread paid on every fill (large caps: 1-3 bps)
  slippage_vol_mult = 0.05   extra slippage = 0.05 x the bar volatility (in bps), e.g. a 1%
                             daily volatility adds 5 bps ...
  slippage_cap_bps = 25.0    ... but never more than 25 bps
  borrow_bps_per_bar = 0.4   short borrow on short notional per bar (~1%/year on daily bars)
  funding_bps_per_bar = 0.0  interest on negative cash (leverage); 0 by default
  min_trade_fraction = 0.001 no-trade band: a per-asset order smaller than 0.1% of equity is
                             skipped (no fill, no cost)

Per fill the rate in bps is fee + half_spread + min(slippage_vol_mult * volatility * 1e4, cap),
applied to |traded units| * fill price. The volatility is the one known at decision time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

BPS = 1e-4


@struct.dataclass
class TransactionConfig:
    fee_bps: jax.Array | float = 1.0
    half_spread_bps: jax.Array | float = 1.0
    slippage_vol_mult: jax.Array | float = 0.05
    slippage_cap_bps: jax.Array | float = 25.0
    borrow_bps_per_bar: jax.Array | float = 0.4
    funding_bps_per_bar: jax.Array | float = 0.0
    min_trade_fraction: jax.Array | float = 0.001


def fill_cost_rate(
    volatility: jax.Array, cfg: TransactionConfig, shock_bps: jax.Array
) -> jax.Array:
    """Cost per unit of traded notional (a fraction, not bps) for each asset.

    `shock_bps` is extra slippage injected by the adversarial wrapper (0 normally).
    """
    slippage_bps = jnp.minimum(cfg.slippage_vol_mult * volatility / BPS, cfg.slippage_cap_bps)
    return (cfg.fee_bps + cfg.half_spread_bps + slippage_bps + shock_bps) * BPS


def apply_no_trade_band(
    delta_units: jax.Array, decision_price: jax.Array, equity: jax.Array, cfg: TransactionConfig
) -> jax.Array:
    """Zero the per-asset orders whose notional is below `min_trade_fraction` of equity."""
    small = jnp.abs(delta_units) * decision_price < cfg.min_trade_fraction * jnp.abs(equity)
    return jnp.where(small, 0.0, delta_units)


def carry_cost(units: jax.Array, price: jax.Array, cash: jax.Array, cfg: TransactionConfig):
    """Per-bar borrow on short notional plus funding on negative cash (both >= 0)."""
    short_notional = jnp.sum(jnp.maximum(-units, 0.0) * price)
    return short_notional * cfg.borrow_bps_per_bar * BPS + jnp.maximum(
        -cash, 0.0
    ) * cfg.funding_bps_per_bar * BPS
