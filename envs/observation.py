"""Observation = a window of normalized features + the portfolio state.

With W = window_bars, A assets and F features per asset:

  market window  features[t-W+1 .. t, :, :]  -> [W, A, F]  (read with dynamic_slice from the
                 shared MarketData, so nothing is copied per env; rows are bars oldest first)
  portfolio      P = 3 A + 2 values (0 when include_portfolio=False):
                   per asset a (3 A, asset-major): weight_a = units_a close_a,t / equity_t,
                     unrealized_a = side_a (close_a,t / entry_a - 1) (0 when flat),
                     time_in_position_a = log(1 + bars held)
                   then drawdown_t = 1 - equity_t / peak equity, cash_fraction_t = cash_t / equity_t

Layouts (static):
  "flat"    [W * A * F + P]       the window flattened row-major (bar, asset, feature) then P
  "window"  [W, A * F + P]        one row per bar; the P portfolio values repeated on every row
                                  (so a convolutional/attention torso sees them at every step)

Everything observed at bar t depends only on data <= t (the close of t) and the portfolio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LAYOUTS = ("flat", "window")


def portfolio_size(num_assets: int, include_portfolio: bool) -> int:
    return 3 * num_assets + 2 if include_portfolio else 0


def observation_shape(
    window_bars: int, num_assets: int, num_features: int, layout: str, include_portfolio: bool
) -> tuple[int, ...]:
    p = portfolio_size(num_assets, include_portfolio)
    if layout == "flat":
        return (window_bars * num_assets * num_features + p,)
    return (window_bars, num_assets * num_features + p)


def feature_window(features: jax.Array, t: jax.Array, window_bars: int) -> jax.Array:
    """features[t-W+1 .. t] as [W, A, F] (t >= W-1 is guaranteed by the episode start)."""
    _, num_assets, num_features = features.shape
    row = num_assets * num_features
    # One contiguous slice of the flattened table: XLA:CPU copies it about 20% faster than
    # a 3-D window slice (measured at 65,536 envs x 32 x 62 features).
    flat = jax.lax.dynamic_slice(features.reshape(-1), ((t - window_bars + 1) * row,),
                                 (window_bars * row,))
    return flat.reshape(window_bars, num_assets, num_features)


def portfolio_vector(
    units: jax.Array,
    entry_price: jax.Array,
    bars_in_position: jax.Array,
    cash: jax.Array,
    equity: jax.Array,
    peak_equity: jax.Array,
    close: jax.Array,
) -> jax.Array:
    safe_equity = jnp.where(jnp.abs(equity) > 1e-12, equity, 1e-12)
    weight = units * close / safe_equity
    side = jnp.sign(units)
    unrealized = jnp.where(side != 0, side * (close / jnp.where(entry_price > 0, entry_price, 1.0)
                                              - 1.0), 0.0)
    held = jnp.log1p(bars_in_position.astype(jnp.float32))
    per_asset = jnp.stack([weight, unrealized, held], axis=-1).reshape(-1)
    drawdown = 1.0 - equity / peak_equity
    return jnp.concatenate([per_asset, jnp.stack([drawdown, cash / safe_equity])])


def assemble(window: jax.Array, portfolio: jax.Array | None, layout: str) -> jax.Array:
    w = window.shape[0]
    if layout == "flat":
        parts = [window.reshape(-1)] + ([] if portfolio is None else [portfolio])
        return jnp.concatenate(parts).astype(jnp.float32)
    rows = window.reshape(w, -1)
    if portfolio is not None:
        rows = jnp.concatenate([rows, jnp.broadcast_to(portfolio, (w, portfolio.shape[0]))], 1)
    return rows.astype(jnp.float32)
