"""Reward terms: pure functions of the step's log return and running statistics.

The env's reward is a weighted sum of the terms below (weights in `RewardConfig`, so terms are
selectable by zeroing weights and combinable by setting several), times `scale`:

  reward = scale * ( w_log_return * r_t
                   + w_dsr        * D_t                      (Differential Sharpe Ratio)
                   + w_ddr        * DD_t                     (downside-deviation variant)
                   - drawdown_penalty * max(dd_t - dd_{t-1}, 0)
                   - turnover_penalty * traded_notional_t / equity_{t-1}
                   - tail_penalty * max(-r_t - tail_threshold, 0) )

r_t = log(equity_t / equity_{t-1}) is the net-of-cost log return of the step.

Differential Sharpe Ratio (Moody & Saffell 1998/2001). With exponential moving moments of r
(rate eta), A_t = A_{t-1} + eta (r_t - A_{t-1}) and B_t = B_{t-1} + eta (r_t^2 - B_{t-1}),
the first-order sensitivity of the moving Sharpe ratio to eta is

  D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) / (B_{t-1} - A_{t-1}^2)^{3/2},
  dA_t = r_t - A_{t-1},  dB_t = r_t^2 - B_{t-1}.

We carry the mean A and the variance V = B - A^2 rather than B (a Welford-style exponential
update, V_t = (1 - eta) (V_{t-1} + eta dA_t^2)), which avoids the cancellation in B - A^2 in
float32; B_{t-1} is recovered as V_{t-1} + A_{t-1}^2. The denominator is floored at
`moment_floor` so the first steps of an episode (V = 0) give a finite reward.

Downside Deviation Ratio (Moody & Saffell 2001, Sortino-style), with DD2_t the exponential
moving mean of min(r_t, 0)^2:

  DD_t = (r_t - 0.5 A_{t-1}) / DD_{t-1}                                  if r_t > 0
  DD_t = (DD2_{t-1} (r_t - 0.5 A_{t-1}) - 0.5 A_{t-1} r_t^2) / DD_{t-1}^3   otherwise

The tail term is a hinge on losses beyond `tail_threshold` (a log-return magnitude), a cheap
proxy that CVaR agents can weight; they also receive `info["log_return"]` to form their own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RewardConfig:
    w_log_return: jax.Array | float = 1.0
    w_dsr: jax.Array | float = 0.0
    w_ddr: jax.Array | float = 0.0
    drawdown_penalty: jax.Array | float = 0.0
    turnover_penalty: jax.Array | float = 0.0
    tail_penalty: jax.Array | float = 0.0
    tail_threshold: jax.Array | float = 0.02
    dsr_eta: jax.Array | float = 0.01
    moment_floor: jax.Array | float = 1e-8
    scale: jax.Array | float = 1.0


@struct.dataclass
class RewardStats:
    """Running moments carried in the env state (per env)."""

    mean: jax.Array  # A: exponential moving mean of r
    var: jax.Array  # V = B - A^2: exponential moving variance of r
    down2: jax.Array  # DD2: exponential moving mean of min(r, 0)^2

    @staticmethod
    def zeros() -> RewardStats:
        z = jnp.zeros((), jnp.float32)
        return RewardStats(mean=z, var=z, down2=z)


def log_return(equity: jax.Array, prev_equity: jax.Array, floor: jax.Array) -> jax.Array:
    """log(equity / prev_equity), with equity floored (a bankrupt step must stay finite)."""
    return jnp.log(jnp.maximum(equity, floor)) - jnp.log(jnp.maximum(prev_equity, floor))


def differential_sharpe(r: jax.Array, stats: RewardStats, cfg: RewardConfig) -> jax.Array:
    a_prev = stats.mean
    b_prev = stats.var + a_prev**2
    d_a = r - a_prev
    d_b = r**2 - b_prev
    denom = jnp.maximum(stats.var, cfg.moment_floor) ** 1.5
    return (b_prev * d_a - 0.5 * a_prev * d_b) / denom


def differential_downside(r: jax.Array, stats: RewardStats, cfg: RewardConfig) -> jax.Array:
    a_prev = stats.mean
    dd2 = jnp.maximum(stats.down2, cfg.moment_floor)
    dd = jnp.sqrt(dd2)
    gain = (r - 0.5 * a_prev) / dd
    loss = (dd2 * (r - 0.5 * a_prev) - 0.5 * a_prev * r**2) / dd**3
    return jnp.where(r > 0, gain, loss)


def update_stats(r: jax.Array, stats: RewardStats, eta: jax.Array) -> RewardStats:
    d_a = r - stats.mean
    return RewardStats(
        mean=stats.mean + eta * d_a,
        var=(1.0 - eta) * (stats.var + eta * d_a**2),
        down2=stats.down2 + eta * (jnp.minimum(r, 0.0) ** 2 - stats.down2),
    )


def combined_reward(
    r: jax.Array,
    stats: RewardStats,
    drawdown: jax.Array,
    prev_drawdown: jax.Array,
    turnover: jax.Array,
    cfg: RewardConfig,
) -> jax.Array:
    """The weighted reward of one step (see the module docstring); `stats` are pre-step."""
    total = (
        cfg.w_log_return * r
        + cfg.w_dsr * differential_sharpe(r, stats, cfg)
        + cfg.w_ddr * differential_downside(r, stats, cfg)
        - cfg.drawdown_penalty * jnp.maximum(drawdown - prev_drawdown, 0.0)
        - cfg.turnover_penalty * turnover
        - cfg.tail_penalty * jnp.maximum(-r - cfg.tail_threshold, 0.0)
    )
    return cfg.scale * total
