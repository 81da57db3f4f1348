"""Greedy-policy evaluation on a gymnax-style env: whole episodes, jittable and vmappable.

Training metrics report the sampled episodes of the behaviour policy (epsilon-greedy,
stochastic SAC), which mix what an agent learned with its exploration. `greedy_returns` plays
`num_episodes` fresh episodes with `agent.act(..., deterministic=True)` and returns their
undiscounted returns: what the learned policy earns, the figure learning proofs assert.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from agents.common.rollout import env_step
from agents.common.types import Agent


def greedy_returns(agent: Agent, params: Any, env: Any, env_params: Any, key: jax.Array,
                   num_episodes: int, max_steps: int | None = None) -> jax.Array:
    """Returns [num_episodes] of the deterministic policy, each episode from its own reset.

    An episode runs until the env reports done or `max_steps` steps (default: the env's
    `max_steps_in_episode`); steps after the first done are not counted (gymnax resets
    inside `step`)."""
    if max_steps is None:
        max_steps = int(env_params.max_steps_in_episode)

    def episode(key: jax.Array) -> jax.Array:
        reset_key, key = jax.random.split(key)
        obs, env_state = env.reset(reset_key, env_params)

        def step(carry, step_key):
            obs, env_state, policy_carry, total, alive = carry
            act_key, env_key = jax.random.split(step_key)
            action, policy_carry = agent.act(params, obs, env_state, env_params, act_key,
                                             policy_carry, True)
            obs, env_state, reward, terminated, truncated, _ = env_step(
                env, env_key, env_state, action, env_params)
            done = jnp.logical_or(terminated, truncated)
            total = total + jnp.where(alive, reward, 0.0)
            alive = jnp.logical_and(alive, jnp.logical_not(done))
            return (obs, env_state, policy_carry, total, alive), None

        init = (obs, env_state, agent.init_carry(), jnp.zeros((), jnp.float32),
                jnp.ones((), bool))
        (_, _, _, total, _), _ = jax.lax.scan(step, init, jax.random.split(key, max_steps))
        return total

    return jax.vmap(episode)(jax.random.split(key, num_episodes))


def make_train_and_evaluate(config: Any, env: Any, env_params: Any, num_episodes: int):
    """`fn(key) -> (training metrics [num_updates], greedy returns [num_episodes])`: a whole
    training run of `config` followed by `greedy_returns` of its final policy, one pure
    function, so `jax.jit(jax.vmap(fn))(keys)` trains and evaluates many seeds in one program
    (the learning proofs and scripts/bench_learning.py)."""
    import agents  # the registry imports this package's modules

    agent = agents.make_agent(config, env, env_params)
    train = agents.make_train(config, env, env_params)

    def train_and_evaluate(key: jax.Array) -> tuple[Any, jax.Array]:
        train_key, eval_key = jax.random.split(key)
        out = train(train_key)
        params = agent.policy_params(out.state)
        return out.metrics, greedy_returns(agent, params, env, env_params, eval_key,
                                           num_episodes)

    return train_and_evaluate
