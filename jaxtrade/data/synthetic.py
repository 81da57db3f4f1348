"""Synthetic markets in pure JAX: regime switching, GARCH clustering, jumps, planted signal.

One bar t of asset a is generated as follows (all returns are log returns per bar):

  regime     s_t ~ Markov chain over (0 trend, 1 range, 2 defensive) with matrix `transition`;
             s_{-1} is drawn from the chain's stationary distribution.
  variance   h_{t,a} = omega + garch_alpha * e_{t-1,a}^2 + garch_beta * h_{t-1,a},
             omega = 1 - garch_alpha - garch_beta (variance targeting: h has long-run mean 1,
             so `regime_vol` is each regime's long-run volatility), h_{-1} = 1.
  shock      z_{t,a} = sqrt(factor_loading) * f_t + sqrt(1 - factor_loading) * n_{t,a}, with
             f_t, n_{t,a} iid N(0, 1): assets share one market factor, so the correlation of
             their diffusion shocks is `factor_loading`.
             e_{t,a} = sqrt(h_{t,a}) * z_{t,a}   (feeds the GARCH recursion; jumps do not)
             sigma_{t,a} = regime_vol[s_t] * asset_vol_scale[a] * sqrt(h_{t,a})
  jump       J_{t,a} = B * (jump_mean + jump_std * N(0,1)), B ~ Bernoulli(jump_prob[s_t] *
             asset_jump_scale[a]).
  return     r_{t,a} = regime_drift[s_t] + asset_drift[a] + predictability * r_{t-1,a}
                       + sigma_{t,a} * z_{t,a} + J_{t,a},     r_{-1,a} = 0.

The planted signal is exactly the `predictability * r_{t-1}` term: the expected next-bar log
return rises by `predictability` times the last bar's log return, which is known at the close
of t-1. Open of bar t equals close of bar t-1 (no overnight gap), so a policy that decides at
the close of t-1 and fills at the open of t earns exactly r_t and can harvest the signal.

Bars: close_t = close_{t-1} * exp(r_t) (close_{-1} = start_price), open_t = close_{t-1},
high_t = max(open, close) * exp(range_scale * sigma * |N(0,1)|), low_t likewise downwards, so
0 < low <= min(open, close) <= max(open, close) <= high always holds. Volume is lognormal
around `volume_base`, scaled by (sigma_t / long-run sigma) ** volume_vol_elasticity, so busy
bars are volatile bars.

Every parameter is a float32 array, so a batch of markets is `jax.vmap` over keys, over
`SyntheticParams` (stack them with `stack_params`) or over both. Per-asset fields accept a
scalar (same for every asset) or an array of length `num_assets`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
from flax import struct

from jaxtrade.errors import ConfigError
from jaxtrade.xla import jit_once

REGIME_NAMES = ("trend", "range", "defensive")
TREND, RANGE, DEFENSIVE = 0, 1, 2


@struct.dataclass
class SyntheticParams:
    """Numeric parameters of the generator (a pytree: vmap over it for domain randomization)."""

    transition: jax.Array  # [3, 3] row-stochastic regime transition matrix
    regime_drift: jax.Array  # [3] log-return drift per bar in each regime
    regime_vol: jax.Array  # [3] long-run diffusion volatility per bar in each regime
    garch_alpha: jax.Array  # () reaction of variance to the last squared shock
    garch_beta: jax.Array  # () persistence of variance (alpha + beta < 1)
    jump_prob: jax.Array  # [3] jump probability per bar in each regime
    jump_mean: jax.Array  # () or [A] mean log jump size
    jump_std: jax.Array  # () or [A] std of log jump size
    predictability: jax.Array  # () or [A] AR(1) coefficient on the previous bar's log return
    factor_loading: jax.Array  # () correlation of diffusion shocks across assets, in [0, 1]
    asset_drift: jax.Array  # () or [A] extra log-return drift per bar
    asset_vol_scale: jax.Array  # () or [A] multiplier on regime volatility
    asset_jump_scale: jax.Array  # () or [A] multiplier on jump probability (0: never jumps)
    range_scale: jax.Array  # () intrabar excursion beyond open/close, in units of sigma
    volume_base: jax.Array  # () median volume per bar at long-run volatility
    volume_vol_elasticity: jax.Array  # () d log(volume) / d log(sigma)
    volume_noise: jax.Array  # () std of log-volume noise
    start_price: jax.Array  # () or [A] close before the first bar


@struct.dataclass
class SyntheticPaths:
    open: jax.Array  # [T, A] float32
    high: jax.Array  # [T, A]
    low: jax.Array  # [T, A]
    close: jax.Array  # [T, A]
    volume: jax.Array  # [T, A]
    regime: jax.Array  # [T] int32: 0 trend, 1 range, 2 defensive
    sigma: jax.Array  # [T, A] diffusion volatility of each bar (log-return std)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float32)


def _transition(stay: Sequence[float]) -> np.ndarray:
    """Transition matrix with `stay[i]` on the diagonal and the rest split evenly."""
    stay_arr = np.asarray(stay, dtype=np.float64)
    matrix = np.tile(((1.0 - stay_arr) / 2.0)[:, None], (1, 3))
    np.fill_diagonal(matrix, stay_arr)
    return matrix


def default_params() -> SyntheticParams:
    """A daily-bar-like market: regimes last ~67/67/33 bars, clustering, rare crashes.

    trend: +12 bps/bar drift at 0.8 % vol; range: no drift at 0.4 %; defensive: -15 bps/bar
    at 2 % with 1 % jump probability. The trend drift is strong enough (per-bar Sharpe 0.15)
    that a regime detector can tell trend from range by its mean, not only by its volatility.
    """
    return SyntheticParams(
        transition=_f32(_transition([0.985, 0.985, 0.97])),
        regime_drift=_f32([0.0012, 0.0, -0.0015]),
        regime_vol=_f32([0.008, 0.004, 0.02]),
        garch_alpha=_f32(0.06),
        garch_beta=_f32(0.90),
        jump_prob=_f32([0.002, 0.001, 0.01]),
        jump_mean=_f32(-0.02),
        jump_std=_f32(0.03),
        predictability=_f32(0.0),
        factor_loading=_f32(0.5),
        asset_drift=_f32(0.0),
        asset_vol_scale=_f32(1.0),
        asset_jump_scale=_f32(1.0),
        range_scale=_f32(0.6),
        volume_base=_f32(1.0e6),
        volume_vol_elasticity=_f32(1.0),
        volume_noise=_f32(0.3),
        start_price=_f32(100.0),
    )


def planted_params(strength: float = 0.3) -> SyntheticParams:
    """`default_params` with r_t containing `strength * r_{t-1}` (a learnable momentum edge).

    At the default strength 0.3 a policy holding sign(r_{t-1}) earns a clearly positive
    Sharpe after 5 bps per unit of turnover (tests/test_synthetic.py checks it).
    """
    return default_params().replace(predictability=_f32(strength))


def crash_pair_params() -> SyntheticParams:
    """Two assets for risk-sensitive agents.

    Asset 0 ("CRASHY") drifts up faster (mean log return ~ +8 bps/bar after crashes) but
    crashes by ~-12 % with probability 0.3 % per bar; asset 1 ("STEADY") drifts +3 bps/bar
    with a third of the volatility and never jumps. A mean-maximizer prefers asset 0, a
    CVaR-aware agent should prefer asset 1.
    """
    return default_params().replace(
        regime_drift=_f32([0.0, 0.0, 0.0]),
        jump_prob=_f32([0.003, 0.003, 0.003]),
        jump_mean=_f32(-0.12),
        jump_std=_f32(0.03),
        factor_loading=_f32(0.2),
        asset_drift=_f32([0.0012, 0.0003]),
        asset_vol_scale=_f32([1.0, 0.35]),
        asset_jump_scale=_f32([1.0, 0.0]),
        start_price=_f32([100.0, 100.0]),
    )


def stack_params(params: Sequence[SyntheticParams]) -> SyntheticParams:
    """Stack several parameter sets along a new leading axis (for `jax.vmap` over params)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params)


def stationary_distribution(transition: jax.Array) -> jax.Array:
    """Stationary distribution of a row-stochastic matrix by repeated squaring (P^(2^16))."""
    power = transition
    for _ in range(16):
        power = power @ power
    row = power[0]
    return row / jnp.sum(row)


@partial(jit_once, static_argnames=("num_bars", "num_assets"))
def generate(
    key: jax.Array, params: SyntheticParams, num_bars: int, num_assets: int = 1
) -> SyntheticPaths:
    """Generate one market of `num_bars` bars for `num_assets` assets (see module docstring)."""
    shape = (num_bars, num_assets)
    per_asset = lambda x: jnp.broadcast_to(x, (num_assets,))
    # All randomness comes from one bulk draw of standard normals (a single RNG kernel keeps
    # compile time low; uniforms are their normal CDF); the scan only runs the recursions.
    size = num_bars * num_assets
    normal = jax.random.normal(key, (8 * size + 1,))
    factor_z, idio_z, jump_z, high_z, low_z, volume_z, jump_n, regime_n = (
        normal[i * size : (i + 1) * size].reshape(shape) for i in range(8)
    )
    factor_z = factor_z[:, :1]
    jump_u = jax.scipy.special.ndtr(jump_n)
    regime_u = jax.scipy.special.ndtr(regime_n[:, 0])
    initial_u = jax.scipy.special.ndtr(normal[-1])
    stationary = jnp.cumsum(stationary_distribution(params.transition))
    initial_regime = jnp.sum(initial_u > stationary[:2]).astype(jnp.int32)

    rho = jnp.clip(params.factor_loading, 0.0, 1.0)
    shock_z = jnp.sqrt(rho) * factor_z + jnp.sqrt(1.0 - rho) * idio_z
    omega = 1.0 - params.garch_alpha - params.garch_beta
    vol_scale = per_asset(params.asset_vol_scale)
    drift = per_asset(params.asset_drift)
    phi = per_asset(params.predictability)
    jump_scale = per_asset(params.asset_jump_scale)
    jump_size = per_asset(params.jump_mean) + per_asset(params.jump_std) * jump_z
    cumulative = jnp.cumsum(params.transition, axis=1)

    def bar(carry, inputs):
        regime_prev, variance_prev, shock_prev, return_prev = carry
        u, z, ju, jsize = inputs
        # Inverse-CDF draw of the next regime from the row of the previous one.
        regime = jnp.sum(u > cumulative[regime_prev, :2]).astype(jnp.int32)
        variance = omega + params.garch_alpha * shock_prev**2 + params.garch_beta * variance_prev
        sigma = params.regime_vol[regime] * vol_scale * jnp.sqrt(variance)
        jump = jnp.where(ju < params.jump_prob[regime] * jump_scale, jsize, 0.0)
        log_return = params.regime_drift[regime] + drift + phi * return_prev + sigma * z + jump
        carry = (regime, variance, jnp.sqrt(variance) * z, log_return)
        return carry, (regime, sigma, log_return)

    init = (
        initial_regime.astype(jnp.int32),
        jnp.ones((num_assets,), jnp.float32),
        jnp.zeros((num_assets,), jnp.float32),
        jnp.zeros((num_assets,), jnp.float32),
    )
    _, (regime, sigma, log_return) = jax.lax.scan(bar, init, (regime_u, shock_z, jump_u, jump_size))

    # Prices are start * exp(cumulative log return): open of bar 0 is exactly start_price,
    # and open_t is bit-identical to close_{t-1} because both come from the same cumsum.
    start_price = per_asset(params.start_price)
    cum_close = jnp.cumsum(log_return, axis=0)
    cum_open = jnp.concatenate([jnp.zeros((1, num_assets)), cum_close[:-1]], axis=0)
    close = start_price * jnp.exp(cum_close)
    open_ = start_price * jnp.exp(cum_open)
    high_log = jnp.maximum(cum_open, cum_close) + params.range_scale * sigma * jnp.abs(high_z)
    low_log = jnp.minimum(cum_open, cum_close) - params.range_scale * sigma * jnp.abs(low_z)
    high = start_price * jnp.exp(high_log)
    low = start_price * jnp.exp(low_log)
    # Guard the OHLC ordering against any float32 rounding in exp.
    high = jnp.maximum(high, jnp.maximum(open_, close))
    low = jnp.minimum(low, jnp.minimum(open_, close))
    long_run_sigma = jnp.mean(params.regime_vol) * vol_scale
    volume = params.volume_base * jnp.exp(
        params.volume_vol_elasticity * jnp.log(sigma / long_run_sigma)
        + params.volume_noise * volume_z
        - 0.5 * params.volume_noise**2
    )
    return SyntheticPaths(
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        regime=regime,
        sigma=sigma,
    )


PRESETS = {
    "default": default_params,
    "planted": planted_params,
    "crash_pair": crash_pair_params,
}

_FREQ = re.compile(r"^(\d+)(us|ms|s|m|h|d|w)$")
_FREQ_UNIT = {
    "us": "microseconds",
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}


def _bar_interval(freq: str) -> _dt.timedelta:
    match = _FREQ.match(freq.strip())
    if match is None:
        raise ConfigError(
            f"synthetic freq {freq!r} is not like '1d', '4h', '15m', '30s' (units us ms s m h d w)"
        )
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        raise ConfigError(f"synthetic freq {freq!r} must be positive")
    return _dt.timedelta(**{_FREQ_UNIT[unit]: count})


def _resolve_params(
    preset: str, strength: float | None, overrides: dict[str, Any]
) -> SyntheticParams:
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}; choose one of {sorted(PRESETS)}")
    if strength is not None and preset != "planted":
        raise ConfigError("synthetic option 'strength' only applies to preset='planted'")
    params = planted_params(strength) if strength is not None else PRESETS[preset]()
    fields = {f.name for f in params.__dataclass_fields__.values()}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown synthetic parameter(s) {unknown}; known: {sorted(fields)}")
    return params.replace(**{name: _f32(value) for name, value in overrides.items()})


def synthetic_frame(
    seed: int = 0,
    num_bars: int = 5000,
    num_assets: int = 1,
    start: str = "2010-01-01",
    freq: str = "1d",
    *,
    preset: str = "default",
    strength: float | None = None,
    symbols: Sequence[str] | None = None,
    return_regimes: bool = False,
    **param_overrides: Any,
) -> pl.DataFrame | tuple[pl.DataFrame, np.ndarray]:
    """A synthetic market as a canonical OHLCV polars frame.

    Columns: timestamp (datetime[us, UTC], one bar every `freq` from `start`), open, high,
    low, close, volume (float64) and, when `num_assets > 1`, `symbol` (rows ordered by
    timestamp, then symbol). `preset` picks `default_params`, `planted_params(strength)` or
    `crash_pair_params`; any `SyntheticParams` field can be overridden by name.
    With `return_regimes=True` also returns the true regime of every row (int array aligned
    with the rows: 0 trend, 1 range, 2 defensive).
    """
    if num_bars < 2:
        raise ConfigError(f"synthetic num_bars must be >= 2, got {num_bars}")
    if num_assets < 1:
        raise ConfigError(f"synthetic num_assets must be >= 1, got {num_assets}")
    params = _resolve_params(preset, strength, param_overrides)
    for field in params.__dataclass_fields__:
        value = getattr(params, field)
        if value.ndim == 1 and field not in ("regime_drift", "regime_vol", "jump_prob"):
            if value.shape[0] != num_assets:
                raise ConfigError(
                    f"synthetic parameter {field} has {value.shape[0]} per-asset values "
                    f"but num_assets={num_assets}"
                )
    if symbols is None:
        symbols = [f"SYN{i}" for i in range(num_assets)]
    if len(symbols) != num_assets:
        raise ConfigError(f"got {len(symbols)} symbols for num_assets={num_assets}")

    step = np.timedelta64(_bar_interval(freq), "us")
    try:
        start_dt = _dt.datetime.fromisoformat(start)
        if start_dt.tzinfo is not None:
            start_dt = start_dt.astimezone(_dt.timezone.utc)
        start_ts = np.datetime64(start_dt.replace(tzinfo=None), "us")
    except ValueError as error:
        raise ConfigError(f"synthetic start {start!r} is not an ISO date: {error}") from None
    paths = jax.device_get(generate(jax.random.key(seed), params, num_bars, num_assets))
    timestamps = start_ts + step * np.arange(num_bars)

    columns = {
        "timestamp": np.repeat(timestamps, num_assets),
        "open": np.asarray(paths.open, np.float64).reshape(-1),
        "high": np.asarray(paths.high, np.float64).reshape(-1),
        "low": np.asarray(paths.low, np.float64).reshape(-1),
        "close": np.asarray(paths.close, np.float64).reshape(-1),
        "volume": np.asarray(paths.volume, np.float64).reshape(-1),
    }
    frame = pl.DataFrame(columns).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    if num_assets > 1:
        frame = frame.with_columns(pl.Series("symbol", list(symbols) * num_bars, pl.String))
    if return_regimes:
        regimes = np.repeat(np.asarray(paths.regime, np.int64), num_assets)
        return frame, regimes
    return frame


def synthetic_regimes(seed: int = 0, num_bars: int = 5000, **options: Any) -> np.ndarray:
    """The true regime path [num_bars] of `synthetic_frame(seed, num_bars, **options)`."""
    options = {**options, "return_regimes": True}
    frame, regimes = synthetic_frame(seed, num_bars, **options)
    return regimes[:: max(1, len(frame) // num_bars)]


def crash_pair_frame(seed: int = 0, num_bars: int = 5000, **options: Any) -> pl.DataFrame:
    """`synthetic_frame` of the two-asset crash pair, symbols CRASHY (crashes) and STEADY."""
    return synthetic_frame(
        seed,
        num_bars,
        num_assets=2,
        preset="crash_pair",
        symbols=("CRASHY", "STEADY"),
        **options,
    )
