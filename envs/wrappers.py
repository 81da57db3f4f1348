"""Wrappers with the same reset/step API as the env (gymnax style: they wrap the state).

  LogWrapper             episode statistics for logging: running and last finished episode
                         return (sum of rewards), length and final equity
  AdversarialWrapper     per step, independently with probability p each: observation noise
                         ("price noise injection"), a slippage shock (extra bps on the step's
                         fills) and a gap at the open of the fill bar
  NormalizeObservation   running mean/variance normalization of observations (Welford),
                         for feature sets that are not already normalized

Wrappers delegate every other attribute (spaces, num_actions, default_params...) to the env.
Like the env's `step`, each wrapper's `step` auto-resets after a done.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.trading import EnvParams, Shock, TradingEnv


class Wrapper:
    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    @property
    def unwrapped(self) -> TradingEnv:
        env = self._env
        while isinstance(env, Wrapper):
            env = env._env
        return env


@struct.dataclass
class LogEnvState:
    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array
    returned_episode_return: jax.Array
    returned_episode_length: jax.Array
    returned_episode_equity: jax.Array


class LogWrapper(Wrapper):
    """Adds `returned_episode*` entries to info (valid where info["returned_episode"])."""

    def reset(self, key: jax.Array, params: EnvParams | None = None):
        obs, env_state = self._env.reset(key, params)
        z = jnp.zeros((), jnp.float32)
        return obs, LogEnvState(env_state, z, jnp.zeros((), jnp.int32), z,
                                jnp.zeros((), jnp.int32), z)

    def step(self, key, state: LogEnvState, action, params: EnvParams | None = None):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        done = terminated | truncated
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + 1
        state = LogEnvState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0, ep_length),
            returned_episode_return=jnp.where(done, ep_return, state.returned_episode_return),
            returned_episode_length=jnp.where(done, ep_length, state.returned_episode_length),
            returned_episode_equity=jnp.where(done, info["equity"],
                                              state.returned_episode_equity),
        )
        info = {
            **info,
            "returned_episode": done,
            "returned_episode_return": state.returned_episode_return,
            "returned_episode_length": state.returned_episode_length,
            "returned_episode_equity": state.returned_episode_equity,
        }
        return obs, state, reward, terminated, truncated, info


class AdversarialWrapper(Wrapper):
    """Stress the agent: each event happens independently with its probability per step.

    obs_noise_prob / obs_noise_std: Gaussian noise added to the returned observation.
    slippage_prob / slippage_shock_bps: extra slippage on every fill of the step.
    gap_prob / gap_std: the fill bar's open jumps by a N(0, gap_std) relative gap (fills and
    stops at the open see it; the close does not).
    info gains "adversarial_obs_noise", "adversarial_slippage", "adversarial_gap" (bool).
    """

    def __init__(self, env: TradingEnv, *, obs_noise_prob: float = 0.05,
                 obs_noise_std: float = 0.5, slippage_prob: float = 0.05,
                 slippage_shock_bps: float = 20.0, gap_prob: float = 0.05,
                 gap_std: float = 0.02) -> None:
        super().__init__(env)
        self.obs_noise_prob = obs_noise_prob
        self.obs_noise_std = obs_noise_std
        self.slippage_prob = slippage_prob
        self.slippage_shock_bps = slippage_shock_bps
        self.gap_prob = gap_prob
        self.gap_std = gap_std

    def reset(self, key: jax.Array, params: EnvParams | None = None):
        return self._env.reset(key, params)

    def step(self, key, state, action, params: EnvParams | None = None):
        params = self._env.default_params if params is None else params
        key, k_noise, k_slip, k_gap, k_obs, k_size = jax.random.split(key, 6)
        noisy = jax.random.bernoulli(k_noise, self.obs_noise_prob)
        slip = jax.random.bernoulli(k_slip, self.slippage_prob)
        gap = jax.random.bernoulli(k_gap, self.gap_prob)
        shock = Shock(
            open_gap=jnp.where(gap, self.gap_std * jax.random.normal(k_size), 0.0),
            slippage_bps=jnp.where(slip, self.slippage_shock_bps, 0.0),
        )
        obs, state, reward, terminated, truncated, info = self._env.step_with_shock(
            key, state, action, params, shock
        )
        noise = self.obs_noise_std * jax.random.normal(k_obs, obs.shape, obs.dtype)
        obs = jnp.where(noisy, obs + noise, obs)
        info = {**info, "adversarial_obs_noise": noisy, "adversarial_slippage": slip,
                "adversarial_gap": gap}
        return obs, state, reward, terminated, truncated, info


@struct.dataclass
class NormEnvState:
    env_state: Any
    mean: jax.Array
    var: jax.Array
    count: jax.Array


class NormalizeObservation(Wrapper):
    """obs -> (obs - running mean) / sqrt(running var + eps), statistics per env (Welford)."""

    def __init__(self, env: Any, eps: float = 1e-8, clip: float = 10.0) -> None:
        super().__init__(env)
        self.eps = eps
        self.clip = clip

    def _update(self, state: NormEnvState, obs: jax.Array) -> NormEnvState:
        count = state.count + 1.0
        delta = obs - state.mean
        mean = state.mean + delta / count
        var = state.var + (delta * (obs - mean) - state.var) / count
        return state.replace(mean=mean, var=var, count=count)

    def _normalize(self, state: NormEnvState, obs: jax.Array) -> jax.Array:
        z = (obs - state.mean) / jnp.sqrt(state.var + self.eps)
        return jnp.clip(z, -self.clip, self.clip)

    def reset(self, key: jax.Array, params: EnvParams | None = None):
        obs, env_state = self._env.reset(key, params)
        state = NormEnvState(env_state, jnp.zeros_like(obs), jnp.ones_like(obs),
                             jnp.zeros((), jnp.float32))
        state = self._update(state, obs)
        return self._normalize(state, obs), state

    def step(self, key, state: NormEnvState, action, params: EnvParams | None = None):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        state = self._update(state.replace(env_state=env_state), obs)
        if "final_observation" in info:
            # A learner bootstraps from it: it must live in the same (normalized) space as obs.
            info = {**info, "final_observation": self._normalize(state, info["final_observation"])}
        return self._normalize(state, obs), state, reward, terminated, truncated, info
