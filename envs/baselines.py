"""Baseline policies as pure jittable functions.

A policy is `policy_fn(key, obs, state, params) -> action` for a given env; the makers below
take the env (for its action mode and number of assets) and return such a function. They read
past closes from `params.market` up to the state's bar t only (indices before 0 repeat bar 0,
so nothing after t is ever read). Targets are weights per asset; `env.weights_to_action` turns
them into the env's action (in discrete mode the total exposure nearest to a level).

  buy_and_hold          1/A in every asset, then keep the units held (no rebalancing)
  ma_crossover          +1/A where the fast moving average of closes is above the slow one,
                        -1/A below (long-only envs clip the shorts to flat)
  zscore_reversion      z = (close - mean) / std over `lookback_bars`; -sign(z)/A when
                        |z| > entry_z, flat otherwise
  equal_risk_contribution  long-only weights (summing to 1) whose risk contributions
                        w_i (S w)_i are equal under the sample covariance S of the last
                        `lookback_bars` log returns
  random_policy         a uniform sample from the env's action space

They are walked over a split like any policy by jaxtrade.evaluate.backtest (one evaluation
walk for agents and baselines alike): `backtest(env, params, buy_and_hold(env), "test")`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from envs.trading import EnvParams, EnvState, TradingEnv

PolicyFn = Callable[[jax.Array, jax.Array, EnvState, EnvParams], jax.Array]


def past_closes(params: EnvParams, t: jax.Array, bars: int) -> jax.Array:
    """Closes of bars t-bars+1 .. t as [bars, A]; indices before 0 repeat bar 0."""
    idx = jnp.maximum(t - jnp.arange(bars - 1, -1, -1), 0)
    return params.market.close[idx]


def current_weights(state: EnvState, params: EnvParams) -> jax.Array:
    close = params.market.close[state.t]
    return state.units * close / state.equity


def buy_and_hold(env: TradingEnv) -> PolicyFn:
    def policy(key, obs, state, params):
        invested = jnp.any(state.units != 0)
        target = jnp.where(invested, current_weights(state, params),
                           jnp.full((env.num_assets,), 1.0 / env.num_assets))
        return env.weights_to_action(target)

    return policy


def ma_crossover(env: TradingEnv, fast_bars: int = 20, slow_bars: int = 50) -> PolicyFn:
    def policy(key, obs, state, params):
        closes = past_closes(params, state.t, slow_bars)
        fast = jnp.mean(closes[-fast_bars:], axis=0)
        slow = jnp.mean(closes, axis=0)
        return env.weights_to_action(jnp.sign(fast - slow) / env.num_assets)

    return policy


def zscore_reversion(env: TradingEnv, lookback_bars: int = 20, entry_z: float = 1.0) -> PolicyFn:
    def policy(key, obs, state, params):
        closes = past_closes(params, state.t, lookback_bars)
        z = (closes[-1] - jnp.mean(closes, axis=0)) / (jnp.std(closes, axis=0) + 1e-12)
        target = jnp.where(jnp.abs(z) > entry_z, -jnp.sign(z), 0.0) / env.num_assets
        return env.weights_to_action(target)

    return policy


def erc_weights(cov: jax.Array, iterations: int = 100) -> jax.Array:
    """Long-only equal-risk-contribution weights (sum 1) by multiplicative updates.

    Each step moves w_i by sqrt(target share / current share) of risk; for a positive
    definite covariance the fixed point is the unique ERC portfolio.
    """
    n = cov.shape[0]
    w0 = 1.0 / jnp.sqrt(jnp.diag(cov))
    w0 = w0 / jnp.sum(w0)

    def update(_, w):
        contrib = w * (cov @ w)
        share = contrib / jnp.sum(contrib)
        w = w * jnp.sqrt((1.0 / n) / share)
        return w / jnp.sum(w)

    return jax.lax.fori_loop(0, iterations, update, w0)


def equal_risk_contribution(env: TradingEnv, lookback_bars: int = 60) -> PolicyFn:
    def policy(key, obs, state, params):
        closes = past_closes(params, state.t, lookback_bars + 1)
        rets = jnp.diff(jnp.log(closes), axis=0)
        rets = rets - jnp.mean(rets, axis=0)
        cov = rets.T @ rets / (lookback_bars - 1)
        # A small ridge keeps the warm-up (repeated bar 0, zero variance) well defined.
        cov = cov + 1e-10 * jnp.eye(env.num_assets)
        return env.weights_to_action(erc_weights(cov))

    return policy


def random_policy(env: TradingEnv) -> PolicyFn:
    def policy(key, obs, state, params):
        return env.action_space(params).sample(key)

    return policy


BASELINES: dict[str, Callable[..., PolicyFn]] = {
    "buy_and_hold": buy_and_hold,
    "ma_crossover": ma_crossover,
    "zscore_reversion": zscore_reversion,
    "equal_risk_contribution": equal_risk_contribution,
    "random": random_policy,
}
