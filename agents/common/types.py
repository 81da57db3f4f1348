"""The agent protocol shared by every algorithm, and the metrics contract.

An agent is a bundle of pure functions over its own state pytree (`PPOState`, `DQNState`,
...; each algorithm owns its state type):

    agent = make_agent(config, env, env_params)
    state = agent.init(key, hparams, env_params)          # the algorithm's state (hparams: None
                                                          # for the config's)
    state, metrics = agent.update(state, env_params)      # one update (collect + learn)
    state, metrics = agent.run_chunk(state, env_params)   # `updates_per_chunk` updates, one scan
    out = agent.policy(params, obs, env_states, env_params, key, carry, deterministic)
                                                          # batched: obs [B], env states [B]
    action, carry = agent.act(params, obs, env_state, env_params, key, carry, deterministic)
                                                          # `policy` for one unbatched input
    carry = agent.init_carry()                            # one env's recurrent state at an
                                                          # episode start (() feed-forward)
    params = agent.policy_params(state)                   # what `policy` / `act` need
    steps = agent.env_steps(state)                        # env steps done (exact int64 numpy,
                                                          # on the host)
    flags = agent.env_axis(state)                         # which leaves lead with the env axis
    state = agent.with_hparams_of(state, other)           # `other`'s hyperparameters in `state`

`update` is the unit composite agents interleave (an ensemble updates its members in turn);
`run_chunk` is `updates_per_chunk` of them in one `lax.scan` (agents/common/agent.py builds
both, and `act`, from an algorithm's own functions, so every agent scans the same way).

`policy` is the one call every consumer acts through (backtest, export checks, ensembles,
planners). It takes the env states beside the observations because an observation only
summarizes the portfolio an env state holds exactly. It returns a `PolicyOutput`: the
action, the target weights the env makes of it, and what the network believes (None where
an agent has no such belief). `deterministic` (a Python or traced bool) picks the greedy
action; otherwise the agent samples as its behaviour policy does outside of training
(PPO/SAC: a policy sample; DQN/QR-DQN: epsilon 0.05; TD3/DDPG: Gaussian noise of std 0.1 in
unit-action terms). A recurrent caller starts each episode from `init_carry()` (batched:
stacked per env) and passes the returned carry to the next call.

`env_axis(state)` is a pytree of bools shaped like the state's structure: True for each
leaf whose leading axis (after any point axis a caller adds) is the env axis (env states,
observations, per-env episode accumulators, replay rows). The training loop shards those
leaves over devices when a run has fewer points than devices (jaxtrade.sharding); None means
the agent does not say, and only points are sharded.

The experiment layer (training loop, evaluation, checkpoints, export) reaches a state only
through these functions, never through one algorithm's field names. `env_params` is a
required argument of every function that steps or reads the env, so a caller that jits them
gives the (large) market arrays as a jit argument instead of baking them into the program as
constants.

Everything in a state is a pytree of arrays (hyperparameters, RNG keys, replay buffers
included), so orbax saves it, resuming continues bit-identically, and `jax.vmap` over keys and
hyperparameters batches runs.

Metrics contract: `update` returns a dict of float32 scalars (`run_chunk`: arrays
[updates_per_chunk], one value per update) named `<family>/<name>`, the family being the
algorithm's file (`ppo/` for PPO and CVaR-PPO, `dqn/` for DQN and QR-DQN, `sac/`, `td3/` for
TD3 and DDPG), so a composite agent can namespace its members' metrics under its own prefix.
A metric's meaning is its last path component (`metric_name`); every agent reports at least
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

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import struct

Metrics = dict[str, jax.Array]

REQUIRED_METRICS = ("episode_return", "episode_length", "env_steps", "loss")
LAST_VALUE_METRICS = frozenset({"episode_return", "episode_length", "env_steps", "epsilon"})


def metric_name(key: str) -> str:
    """What a metric means, without its namespace: `sac/critic_loss` -> `critic_loss`."""
    return key.rsplit("/", 1)[-1]


def is_loss_metric(key: str) -> bool:
    name = metric_name(key)
    return name == "loss" or name.endswith("_loss")


def is_last_value_metric(key: str) -> bool:
    return metric_name(key) in LAST_VALUE_METRICS


def find_metric(metrics: Mapping[str, Any], name: str) -> Any:
    """The value of the metric meaning `name` (any namespace), or None. With several (a
    composite agent's own and its members'), the one with the fewest namespace parts (the
    composite's own: `ensemble/episode_return` before `ensemble/ppo/episode_return`), then
    the first in key order."""
    for key in sorted(metrics, key=lambda k: (k.count("/"), k)):
        if metric_name(key) == name:
            return metrics[key]
    return None


@struct.dataclass
class TrainOutput:
    state: Any  # the algorithm's final state
    metrics: Metrics  # each [num_updates] float32


class PolicyOutput(NamedTuple):
    """What `Agent.policy` gives for a batch of B observations.

    action          [B, ...] what `env.step` receives
    target_weights  [B, num_assets] the target portfolio weights the env makes of `action`
                    before its risk manager (`env.action_to_weights`); None for an env
                    without portfolio weights (gymnax's classic control)
    logits          [B, num_actions] logits of a categorical policy (PPO and SAC over
                    discrete actions); None otherwise
    value           [B] the state value V(s) (PPO's critic); None otherwise
    q_values        [B, num_actions] what greedy acting maximizes (DQN: Q values; QR-DQN:
                    the mean, or with act_on=cvar the lower-tail mean, of the quantiles)
    quantiles       [B, num_actions, num_quantiles] the return quantiles (QR-DQN)
    carry           the network's recurrent state after these observations, leaves [B, ...]
                    (an empty tuple for feed-forward networks)
    ensemble        a composite agent's combination: agents/ensemble.py `EnsembleBeliefs`
                    (member weights, member target weights, trade probability, each
                    member's own PolicyOutput); None for single agents
    """

    action: jax.Array
    target_weights: jax.Array | None
    logits: jax.Array | None
    value: jax.Array | None
    q_values: jax.Array | None
    quantiles: jax.Array | None
    carry: Any
    ensemble: Any = None


class Agent(NamedTuple):
    """Pure functions plus the static sizes of a run. See the module docstring."""

    init: Callable[..., Any]
    update: Callable[[Any, Any], tuple[Any, Metrics]]
    run_chunk: Callable[[Any, Any], tuple[Any, Metrics]]
    policy: Callable[..., PolicyOutput]
    act: Callable[..., tuple[jax.Array, Any]]
    init_carry: Callable[[], Any]
    num_updates: int
    updates_per_chunk: int
    steps_per_update: int  # env steps per update, over all envs
    network: Any
    config: Any
    policy_params: Callable[[Any], Any]
    env_steps: Callable[[Any], np.ndarray]  # exact int64, host side (agents/common/counters.py)
    family: str  # the metrics' namespace
    env_axis: Callable[[Any], Any] | None = None
    # (state, other) -> `state` with `other`'s hyperparameters (a fork of a run that changes
    # them); None: the agent cannot swap them.
    with_hparams_of: Callable[[Any, Any], Any] | None = None
    members: Mapping[str, Agent] | None = None  # a composite agent's members, by name
