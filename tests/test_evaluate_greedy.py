"""agents.common.evaluate.greedy_returns against a plain Python loop over the same env steps."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

import agents
from agents.common.evaluate import greedy_returns


def test_greedy_returns_match_a_python_episode_loop() -> None:
    """A policy that pushes right whenever the pole leans right: each evaluation episode's
    return equals the number of steps a step-by-step loop with the same keys survives, and
    steps after the episode ends (gymnax resets inside step) are not counted."""
    env, env_params = gymnax.make("CartPole-v1")
    agent = agents.make_agent(agents.config_from_dict({"name": "dqn", "total_steps": 20_000,
                                                       "learning_starts": 1_000}),
                              env, env_params)

    def act(params, obs, env_state, env_params, key, carry=None, deterministic=False):
        action = (obs[2] + params * obs[3] > 0).astype(jnp.int32)  # angle + w * angular velocity
        return action, carry

    agent = agent._replace(act=act)
    key = jax.random.key(3)
    for weight in (0.0, 0.5):
        got = np.asarray(jax.jit(lambda k, w=weight: greedy_returns(
            agent, w, env, env_params, k, 4, max_steps=200))(key))
        expected = []
        for episode_key in jax.random.split(key, 4):
            reset_key, steps_key = jax.random.split(episode_key)
            obs, state = env.reset(reset_key, env_params)
            total = 0.0
            for step_key in jax.random.split(steps_key, 200):
                _, env_key = jax.random.split(step_key)
                action, _ = act(weight, obs, state, env_params, None)
                obs, state, reward, terminated, truncated, _ = env.step(
                    env_key, state, action, env_params)
                total += float(reward)
                if bool(terminated) or bool(truncated):
                    break
            expected.append(total)
        np.testing.assert_allclose(got, expected)
    assert got.max() > 100 and got.min() >= 1  # the leaning-aware policy balances a while
