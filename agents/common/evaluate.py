"""Greedy-policy evaluation on a gymnax-style env: whole episodes, jittable and vmappable.

Training metrics report the sampled episodes of the behaviour policy (epsilon-greedy,
stochastic SAC), which mix what an agent learned with its exploration. `greedy_returns` plays
`num_episodes` fresh episodes with `agent.act(..., deterministic=True)` and returns their
undiscounted returns: what the learned policy earns, the figure learning proofs assert.

`make_train_select_and_evaluate` also keeps the checkpoint a user would deploy: `jaxtrade
train` saves checkpoints as it trains and `jaxtrade export` takes the best by a validation
score, not the last one. Here the validation score is the greedy return on validation
episodes every few chunks, and the chosen network is then measured on fresh test episodes,
beside the final network on the same episodes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


class Selection(NamedTuple):
    """One seed's run of `make_train_select_and_evaluate` (add a leading axis under vmap)."""

    metrics: Any  # training metrics [num_updates]
    final: jax.Array  # [num_episodes] test returns of the last network
    selected: jax.Array  # [num_episodes] test returns of the best network by validation
    selected_chunk: jax.Array  # chunk after which the selected network was saved (1-based)
    validation: jax.Array  # [num_checkpoints] validation mean return of every checkpoint
    selected_params: Any  # the selected network's policy params (what a user would deploy)


def make_train_select_and_evaluate(config: Any, env: Any, env_params: Any, num_episodes: int,
                                   every_chunks: int, validation_episodes: int = 5):
    """`fn(key) -> Selection`: train `config`; after every `every_chunks` chunks (and after
    the last) score the greedy policy on `validation_episodes` validation episodes and keep
    the network with the best mean (the latest among equals; the checkpoint after chunk c,
    counted from 1, plays on `fold_in(fold_in(test_key, 1), c - 1)`); then play the same
    `num_episodes` fresh test episodes with the kept network and with the final one.

    Validation and test episodes come from different keys, so the test returns of the kept
    network are not the score it was chosen by. One pure function: `jax.jit(jax.vmap(fn))`
    trains, selects and tests many seeds in one program."""
    import agents  # the registry imports this package's modules

    if every_chunks < 1:
        raise ValueError(f"every_chunks={every_chunks} must be >= 1")
    agent = agents.make_agent(config, env, env_params)
    num_chunks = agent.num_updates // agent.updates_per_chunk
    chunks = np.arange(num_chunks)
    checkpoints = ((chunks + 1) % every_chunks == 0) | (chunks == num_chunks - 1)

    def validate(state: Any, key: jax.Array) -> jax.Array:
        params = agent.policy_params(state)
        return jnp.mean(greedy_returns(agent, params, env, env_params, key,
                                       validation_episodes))

    def train_select_and_evaluate(key: jax.Array) -> Selection:
        # The same training and test keys as make_train_and_evaluate: its final network is
        # this one's.
        train_key, test_key = jax.random.split(key)
        validation_key = jax.random.fold_in(test_key, 1)
        state = agent.init(train_key, None, env_params)
        best = agent.policy_params(state)

        def chunk(carry, index):
            state, best, best_score, best_chunk = carry
            state, metrics = agent.run_chunk(state, env_params)
            due = jnp.asarray(checkpoints)[index]
            score = jax.lax.cond(
                due, lambda s: validate(s, jax.random.fold_in(validation_key, index)),
                lambda s: jnp.full((), -jnp.inf, jnp.float32), state)
            better = due & (score >= best_score)
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                                agent.policy_params(state), best)
            return ((state, best, jnp.where(better, score, best_score),
                     jnp.where(better, index + 1, best_chunk)), (metrics, score))

        init = (state, best, jnp.full((), -jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))
        (state, best, _, best_chunk), (metrics, scores) = jax.lax.scan(
            chunk, init, jnp.arange(num_chunks))
        metrics = jax.tree.map(lambda m: m.reshape(-1), metrics)
        final = greedy_returns(agent, agent.policy_params(state), env, env_params, test_key,
                               num_episodes)
        selected = greedy_returns(agent, best, env, env_params, test_key, num_episodes)
        return Selection(metrics, final, selected, best_chunk, scores[checkpoints], best)

    return train_select_and_evaluate
