"""Stepping vmapped envs: the one env-step adapter, episode statistics and `collect`.

Every algorithm gathers experience the same way: `collect` scans `num_steps` steps of
`num_envs` vmapped envs under a policy function and returns what each step produced, plus the
episode statistics of the episodes that finished. What an algorithm keeps of a step (PPO: the
log-probability and value; DQN: a compact transition for the replay buffer) is decided by its
`record` function, so nothing here knows which algorithm it serves.

Truncated episodes: gymnax >= 1.0 and jaxtrade's trading env (with `final_observation`) put the
observation reached before the auto-reset in `info["final_observation"]`. `record` receives
it as `final_obs` (the returned `obs` where the key is absent), which is what a learner
bootstraps a truncated step from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


def env_step(env: Any, key: jax.Array, state: Any, action: jax.Array, params: Any):
    """gymnax step outputs as (obs, state, reward, terminated, truncated, info).

    Envs following gymnax < 1.0 return (obs, state, reward, done, info); their `done` counts
    as terminated.
    """
    out = env.step(key, state, action, params)
    if len(out) == 6:
        return out
    obs, state, reward, done, info = out
    return obs, state, reward, done, jnp.zeros_like(done), info


@struct.dataclass
class EpisodeStats:
    """Running per-env episode accumulators plus the last reported means.

    `last_return` / `last_length` hold the mean of the episodes finished in the most recent
    `collect` that finished any, so a metric never turns NaN when a collect finishes none.
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
class EnvRunner:
    """The env side of a training state: vmapped env states and the latest observations."""

    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    done: jax.Array  # [num_envs] bool: `obs` starts an episode
    episode_stats: EpisodeStats


def env_axis_flags(tree: Any, flag: bool = True) -> Any:
    """`flag` for every leaf of `tree` (the building block of an agent's `env_axis`)."""
    return jax.tree.map(lambda _: flag, tree)


def runner_env_axis(runner: EnvRunner) -> EnvRunner:
    """Which leaves of a runner lead with the env axis: all but the reported means."""
    return EnvRunner(env_axis_flags(runner.env_state), True, True,
                     EpisodeStats(True, True, False, False))


def reset_runner(env: Any, env_params: Any, key: jax.Array, num_envs: int) -> EnvRunner:
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(key, num_envs), env_params
    )
    return EnvRunner(env_state, obs, jnp.ones((num_envs,), bool), EpisodeStats.zeros(num_envs))


class Step(NamedTuple):
    """What one vmapped env step gave, as `record` sees it (arrays with a leading env axis)."""

    obs: jax.Array  # the observation acted on
    start: jax.Array  # `obs` starts an episode
    env_state: Any  # the env state `obs` was read from
    action: jax.Array  # what the env received
    reward: jax.Array  # float32
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array  # the returned observation (after an auto-reset where done)
    final_obs: jax.Array  # the observation before the auto-reset (== next_obs where not done)
    info: Any


# policy(policy_carry, obs, env_state, start, key) -> (policy_carry, env_action, aux): obs
# [num_envs, ...] with the env states they were read from (the exact portfolio) and the flags
# of those that start an episode.
Policy = Callable[[Any, jax.Array, Any, jax.Array, jax.Array], tuple[Any, jax.Array, Any]]
# record(step, aux, policy_carry_after) -> the pytree kept for this step
Record = Callable[[Step, Any, Any], Any]


def collect(
    env: Any,
    env_params: Any,
    runner: EnvRunner,
    rng: jax.Array,
    policy: Policy,
    policy_carry: Any,
    record: Record,
    num_steps: int,
) -> tuple[EnvRunner, jax.Array, Any, Any]:
    """Scan `num_steps` steps of the vmapped env; returns (runner, rng, policy_carry, records).

    `records` is `record`'s pytree stacked over steps ([num_steps, num_envs, ...]). The
    runner's `episode_stats.last_*` become the means of the episodes finished in these steps
    (unchanged when none finished).
    """
    num_envs = runner.done.shape[0]

    def one_step(carry, _):
        runner, rng, policy_carry, ep_sum, ep_len_sum, ep_count = carry
        rng, act_key, step_key = jax.random.split(rng, 3)
        policy_carry, action, aux = policy(policy_carry, runner.obs, runner.env_state,
                                           runner.done, act_key)
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
            env_step, in_axes=(None, 0, 0, 0, None)
        )(env, jax.random.split(step_key, num_envs), runner.env_state, action, env_params)
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        final_obs = info["final_observation"] if (
            isinstance(info, dict) and "final_observation" in info) else obs
        step = Step(runner.obs, runner.done, runner.env_state, action, reward, terminated,
                    truncated, obs, final_obs, info)
        kept = record(step, aux, policy_carry)

        stats = runner.episode_stats
        ret = stats.running_return + reward
        length = stats.running_length + 1.0
        ep_sum = ep_sum + jnp.sum(jnp.where(done, ret, 0.0))
        ep_len_sum = ep_len_sum + jnp.sum(jnp.where(done, length, 0.0))
        ep_count = ep_count + jnp.sum(done)
        stats = stats.replace(
            running_return=jnp.where(done, 0.0, ret),
            running_length=jnp.where(done, 0.0, length),
        )
        runner = EnvRunner(env_state, obs, done, stats)
        return (runner, rng, policy_carry, ep_sum, ep_len_sum, ep_count), kept

    zero = jnp.zeros((), jnp.float32)
    init = (runner, rng, policy_carry, zero, zero, jnp.zeros((), jnp.int32))
    (runner, rng, policy_carry, ep_sum, ep_len_sum, ep_count), records = jax.lax.scan(
        one_step, init, None, num_steps
    )
    stats = runner.episode_stats
    finished = ep_count > 0
    denom = jnp.maximum(ep_count, 1).astype(jnp.float32)
    stats = stats.replace(
        last_return=jnp.where(finished, ep_sum / denom, stats.last_return),
        last_length=jnp.where(finished, ep_len_sum / denom, stats.last_length),
    )
    return runner.replace(episode_stats=stats), rng, policy_carry, records
