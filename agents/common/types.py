"""The agent protocol shared by every algorithm, and the metrics contract.

An agent is a bundle of pure functions over its own state pytree (`PPOState`, `DQNState`,
...; each algorithm owns its state type):

    agent = make_agent(config, env, env_params)
    state = agent.init(key, hparams=None, env_params)      # the algorithm's state
    state, metrics = agent.run_chunk(state, env_params)    # `updates_per_chunk` updates, one scan
    action = agent.act(params, obs, key, deterministic)    # one unbatched observation
    action, carry = agent.act(params, obs, key, deterministic, carry)   # recurrent networks
    params = agent.policy_params(state)                    # what `act` needs
    steps = agent.env_steps(state)                         # env steps done (int32 array)
    flags = agent.env_axis(state)                          # which leaves lead with the env axis

`env_axis(state)` is a pytree of bools shaped like the state's structure: True for each
leaf whose leading axis (after any point axis a caller adds) is the env axis (env states,
observations, per-env episode accumulators, replay rows). The training loop shards those
leaves over devices when a run has fewer points than devices (jaxtrade.sharding); None means
the agent does not say, and only points are sharded.

The experiment layer (training loop, evaluation, checkpoints, export) reaches a state only
through these functions, never through one algorithm's field names. `env_params` is passed
explicitly so a caller that jits `init` / `run_chunk` gives the (large) market arrays as a
jit argument instead of baking them into the program as constants.

Everything in a state is a pytree of arrays (hyperparameters, RNG keys, replay buffers
included), so orbax saves it, resuming continues bit-identically, and `jax.vmap` over keys and
hyperparameters batches runs.

Metrics contract: `run_chunk` returns a dict of float32 arrays [updates_per_chunk], one value
per update, with at least
  episode_return  mean undiscounted return of the episodes that finished in the update (the
                  previous value when none finished; 0 before the first)
  episode_length  their mean length in env steps
  env_steps       env steps done after the update (the common clock of every algorithm)
  loss            the total loss minimized in the update (0 before learning starts)
Names in `LAST_VALUE_METRICS` are states of the run: a chunk reports its last value; every
other metric is a per-update quantity and a chunk reports its mean. A metric named `loss` or
ending in `_loss` that is NaN/inf stops training (experiments/loop.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import struct

Metrics = dict[str, jax.Array]

REQUIRED_METRICS = ("episode_return", "episode_length", "env_steps", "loss")
LAST_VALUE_METRICS = frozenset({"episode_return", "episode_length", "env_steps", "epsilon"})


def is_loss_metric(name: str) -> bool:
    return name == "loss" or name.endswith("_loss")


@struct.dataclass
class TrainOutput:
    state: Any  # the algorithm's final state
    metrics: Metrics  # each [num_updates] float32


class Agent(NamedTuple):
    """Pure functions plus the static sizes of a run. See the module docstring."""

    init: Callable[..., Any]
    run_chunk: Callable[..., tuple[Any, Metrics]]
    act: Callable[..., Any]
    init_carry: Callable[[], Any]
    num_updates: int
    updates_per_chunk: int
    steps_per_update: int  # env steps per update, over all envs
    network: Any
    config: Any
    policy_params: Callable[[Any], Any]
    env_steps: Callable[[Any], jax.Array]
    env_axis: Callable[[Any], Any] | None = None
