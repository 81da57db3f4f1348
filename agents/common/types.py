"""The agent protocol shared by every algorithm (PPO, CVaR-PPO now; SAC, QR-DQN, MCTS next).

An agent is a bundle of pure functions over one `TrainState` pytree:

    agent = make_agent(config, env, env_params)
    state = agent.init(key, hparams=None)                  # TrainState
    state, metrics = agent.run_chunk(state)                # `updates_per_chunk` updates, one scan
    action = agent.act(params, obs, key, deterministic)    # one unbatched observation
    action, carry = agent.act(params, obs, key, deterministic, carry)   # recurrent networks

`run_chunk` and `init` also take an optional `env_params` so a caller that jits them can pass the
(large) market arrays as a jit argument instead of baking them into the program as constants.

Everything in `TrainState` is a pytree of arrays (hyperparameters included), so orbax can save it,
resuming from it continues bit-identically, and `jax.vmap` over keys and hyperparameters works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

Metrics = dict[str, jax.Array]


@struct.dataclass
class EpisodeStats:
    """Running per-env episode accumulators plus the last reported means.

    `last_return` / `last_length` hold the mean of the episodes finished in the most recent update
    that finished any, so a metric never turns NaN when an update finishes no episode.
    """

    running_return: jax.Array  # [num_envs] float32, undiscounted return of the open episode
    running_length: jax.Array  # [num_envs] float32, steps of the open episode
    last_return: jax.Array  # [] float32
    last_length: jax.Array  # [] float32

    @classmethod
    def zeros(cls, num_envs: int) -> EpisodeStats:
        z = jnp.zeros((num_envs,), jnp.float32)
        return cls(z, z, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


@struct.dataclass
class TrainState:
    """Everything a training run needs to continue; a pytree of arrays only.

    `carry` is the recurrent state of the policy network per env (an empty tuple for feed-forward
    networks); `last_done` marks envs whose `last_obs` starts a new episode (the recurrent carry is
    reset there). `extra` holds agent-specific state: the Lagrange multiplier of CVaR-PPO, a replay
    buffer for off-policy agents, search parameters for MCTS agents.
    """

    params: Any
    opt_state: Any
    env_state: Any
    last_obs: jax.Array
    last_done: jax.Array
    carry: Any
    rng: jax.Array
    hparams: Any
    update_step: jax.Array  # int32 scalar, updates done so far
    episode_stats: EpisodeStats
    extra: dict[str, Any]


@struct.dataclass
class TrainOutput:
    state: TrainState
    metrics: Metrics  # each [num_updates] float32


class Agent(NamedTuple):
    """Pure functions plus the static sizes of a run. See the module docstring."""

    init: Callable[..., TrainState]
    run_chunk: Callable[..., tuple[TrainState, Metrics]]
    act: Callable[..., Any]
    init_carry: Callable[[], Any]
    num_updates: int
    updates_per_chunk: int
    steps_per_update: int
    network: Any
    config: Any
