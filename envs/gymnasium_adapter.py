"""Gymnasium adapters, so Stable-Baselines3-style code trains on jaxtrade's env unchanged.

  GymnasiumTradingEnv(env, params)               gymnasium.Env, one env, numpy in/out
  GymnasiumVectorTradingEnv(env, params, n)      gymnasium.vector.VectorEnv backed by the
                                                 vmapped JAX env (one jitted call per step)

Both are thin: every step is one compiled call into the pure JAX env. The single env does not
auto-reset (Gymnasium convention: call reset after terminated/truncated). The vector env
auto-resets in the same step (AutoresetMode.SAME_STEP): the returned observation of a finished
env is its reset observation and infos["final_obs"] holds the last one.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from envs.trading import EnvParams, TradingEnv


def _spaces(env: TradingEnv, params: EnvParams) -> tuple[spaces.Space, spaces.Space]:
    obs_space = spaces.Box(-np.inf, np.inf, env.observation_shape, np.float32)
    if env.action_mode == "discrete":
        return obs_space, spaces.Discrete(env.num_actions)
    high = float(params.trading.max_leverage)
    low = 0.0 if bool(params.trading.long_only) else -high
    return obs_space, spaces.Box(low, high, (env.num_assets,), np.float32)


class GymnasiumTradingEnv(gymnasium.Env):
    metadata = {"render_modes": []}

    def __init__(self, env: TradingEnv, params: EnvParams) -> None:
        self.env = env
        self.params = params
        self.observation_space, self.action_space = _spaces(env, params)
        self._reset = jax.jit(env.reset_env)

        def step(key, state, action, params):
            key, step_key = jax.random.split(key)
            obs, state, reward, terminated, info = env.step_env(step_key, state, action, params)
            return key, state, (obs, reward, terminated, env.is_truncated(state, params), info)

        self._step = jax.jit(step)
        self._state = None
        self._key = jax.random.PRNGKey(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        key = jax.random.PRNGKey(int(self.np_random.integers(2**31 - 1)))
        self._key, reset_key = jax.random.split(key)
        obs, self._state = self._reset(reset_key, self.params)
        return np.asarray(obs), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        self._key, self._state, out = self._step(self._key, self._state, action, self.params)
        # One transfer for everything the caller sees.
        obs, reward, terminated, truncated, info = jax.device_get(out)
        return obs, float(reward), bool(terminated), bool(truncated), info


class GymnasiumVectorTradingEnv(gymnasium.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: TradingEnv, params: EnvParams, num_envs: int) -> None:
        self.env = env
        self.params = params
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(env, params)
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space,
                                                               num_envs)
        self._reset = jax.jit(jax.vmap(env.reset_env, in_axes=(0, None)))

        def step(keys, state, actions, params):
            final_obs, stepped, reward, terminated, info = jax.vmap(
                env.step_env, in_axes=(0, 0, 0, None))(keys, state, actions, params)
            truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(stepped, params)
            done = terminated | truncated
            reset_obs, reset_state = jax.vmap(env.reset_env, in_axes=(0, None))(keys, params)
            pick = lambda r, s: jnp.where(done.reshape((-1,) + (1,) * (s.ndim - 1)), r, s)
            state = jax.tree_util.tree_map(pick, reset_state, stepped)
            obs = pick(reset_obs, final_obs)
            return obs, state, reward, terminated, truncated, {**info, "final_obs": final_obs}

        self._step = jax.jit(step)
        self._state = None
        self._key = jax.random.PRNGKey(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._key, sub = jax.random.split(self._key)
        obs, self._state = self._reset(jax.random.split(sub, self.num_envs), self.params)
        return np.asarray(obs), {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        self._key, sub = jax.random.split(self._key)
        obs, self._state, reward, terminated, truncated, info = self._step(
            jax.random.split(sub, self.num_envs), self._state, jnp.asarray(actions), self.params
        )
        return jax.device_get((obs, reward, terminated, truncated, info))
