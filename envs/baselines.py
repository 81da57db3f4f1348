"""Baseline policies as pure jittable functions, and `rollout_policy` to walk a split.

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

`rollout_policy(env, params, policy_fn, key, split="test")` runs a policy in evaluation mode
over a whole split inside one `lax.scan` and returns a `Rollout` of per-bar arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

from envs.trading import EnvParams, EnvState, TradingEnv
from jaxtrade.errors import ConfigError
from jaxtrade.market import SPLIT_NAMES

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


@struct.dataclass
class Rollout:
    """Per-step arrays of an evaluation walk, one row per decision (length S).

    Row i is the step from bar `bar[i] - 1` to `bar[i]`: equity/position are at the close of
    `bar[i]`, reward/log_return/costs/traded_notional belong to that step. `alive` is False
    after a bankruptcy (the walk then stays frozen: equity constant, no costs, reward 0).
    """

    bar: jax.Array  # [S] int32
    equity: jax.Array  # [S]
    position: jax.Array  # [S, A] weights at the close
    action: jax.Array  # [S] or [S, A]
    reward: jax.Array  # [S]
    log_return: jax.Array  # [S]
    costs: jax.Array  # [S]
    traded_notional: jax.Array  # [S]
    alive: jax.Array  # [S] bool
    start_bar: jax.Array  # the bar of the first decision
    initial_equity: jax.Array


def eval_steps(env: TradingEnv, params: EnvParams, split: int) -> int:
    """Number of decisions an evaluation walk of `split` makes (host-side, static)."""
    start, end = (int(x) for x in params.market.splits[split])
    first = max(start, env.window_bars - 1)
    final = min(end - 1, params.market.num_bars - 1)
    if final - first < 1:
        raise ConfigError(
            f"split '{SPLIT_NAMES[split]}' has bars [{start}, {end}): too short to trade with "
            f"window_bars={env.window_bars} (needs at least 2 bars after the warm-up)")
    return final - first


def rollout_policy(
    env: TradingEnv,
    params: EnvParams,
    policy_fn: PolicyFn,
    key: jax.Array,
    split: int | str = "test",
) -> Rollout:
    """Walk `split` deterministically (eval mode) from its first bar to its last with one scan.

    The policy sees (key, obs, state, params) at each close; keys are split per step, so a
    stochastic policy is reproducible from `key`.
    """
    split_index = SPLIT_NAMES.index(split) if isinstance(split, str) else int(split)
    params = params.replace(split=jnp.asarray(split_index, jnp.int32),
                            eval_mode=jnp.asarray(True))
    return _rollout(env, policy_fn, eval_steps(env, params, split_index), params, key)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _rollout(env: TradingEnv, policy_fn: PolicyFn, num_steps: int, params: EnvParams,
             key: jax.Array) -> Rollout:
    obs, state = env.reset_env(key, params)
    start_bar = state.t

    def body(carry, step_key):
        obs, state, alive = carry
        act_key, env_key = jax.random.split(step_key)
        action = policy_fn(act_key, obs, state, params)
        next_obs, next_state, reward, terminated, info = env.step_env(env_key, state, action,
                                                                      params)
        keep = lambda new, old: jnp.where(alive, new, old)
        state = jax.tree_util.tree_map(keep, next_state, state)
        obs = keep(next_obs, obs)
        row = dict(
            bar=state.t, equity=state.equity, position=current_weights(state, params),
            action=action,
            reward=keep(reward, 0.0), log_return=keep(info["log_return"], 0.0),
            costs=keep(info["costs"], 0.0), traded_notional=keep(info["traded_notional"], 0.0),
            alive=alive,
        )
        return (obs, state, alive & ~terminated), row

    keys = jax.random.split(key, num_steps)
    _, rows = jax.lax.scan(body, (obs, state, jnp.asarray(True)), keys)
    return Rollout(start_bar=start_bar, initial_equity=params.trading.initial_equity, **rows)
