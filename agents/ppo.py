"""Proximal Policy Optimization, discrete and continuous, feed-forward and recurrent.

One update = roll out `num_envs` vmapped envs for `rollout_len` steps, compute GAE, then
`update_epochs` passes of `num_minibatches` clipped-objective gradient steps. `update` is one
of them; the shared core scans `updates_per_chunk` updates per chunk and `agents.make_train`
scans chunks, so a whole run is one program.

Hyperparameters live in `PPOState.hparams` as float32 arrays (not Python constants), so one
compiled program can be vmapped over seeds *and* over learning rate, entropy coefficient, clip,
gamma, GAE lambda, ... Shape-changing settings (num_envs, rollout_len, network) stay static.

Episode ends: `done = terminated or truncated` cuts GAE. When the env reports a truncation
together with `info["final_observation"]` (gymnax >= 1.0 does), the truncated step is bootstrapped
with the value of that final observation instead of being treated as a terminal state.

Recurrent torsos: minibatches split the batch along envs (each minibatch keeps whole sequences),
and the network is re-run from the carry it had at the start of the rollout, resetting at the
stored episode-start flags. Feed-forward torsos shuffle individual transitions.

`make_agent(..., extension=...)` lets a variant (CVaR-PPO) keep extra state and reshape the
advantages before the policy update without copying this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from agents.common.agent import build_agent, policy_output
from agents.common.config import (
    chunked_run_sizes,
    config_from_dict,
    config_to_dict,
    hparams_as_arrays,
)
from agents.common.distributions import action_spec_from_space, to_env_action
from agents.common.losses import clipped_value_loss, gae, ppo_clip_loss
from agents.common.networks import ActorCritic, NetworkConfig, network_carry
from agents.common.optim import adam_init, adam_step
from agents.common.rollout import (
    EnvRunner,
    EpisodeStats,
    collect,
    env_axis_flags,
    reset_runner,
    runner_env_axis,
)
from agents.common.types import Agent, Metrics, PolicyOutput
from jaxtrade.errors import ConfigError


@struct.dataclass
class PPOHParams:
    """Numeric hyperparameters: pytree leaves, so `jax.vmap` can sweep them in one program."""

    learning_rate: float = 2.5e-4
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    clip_eps: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0  # rewards are multiplied by this before GAE (logged returns are not)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    name: str = "ppo"
    num_envs: int = 8
    rollout_len: int = 128  # env steps per env per update
    total_steps: int = 500_000  # env steps over all envs; rounded down to whole chunks
    num_minibatches: int = 4
    update_epochs: int = 4
    updates_per_chunk: int = 10  # updates per host call (progress granularity)
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    hparams: PPOHParams = dataclasses.field(default_factory=PPOHParams)
    anneal_lr: bool = True  # linear decay of the learning rate to 0 over the run
    clip_value_loss: bool = True
    normalize_advantages: bool = True
    bootstrap_truncated: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PPOConfig:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def run_sizes(self) -> tuple[int, int, int]:
        """(num_updates, updates_per_chunk, steps_per_update) after rounding to whole chunks."""
        return chunked_run_sizes(self.num_envs, self.rollout_len, self.total_steps,
                                 self.updates_per_chunk)

    def export_head(self) -> dict[str, Any]:
        """How the numpy runner turns the exported network into an action."""
        return {"family": "actor_critic"}

    def auto_sizing(self, env: Any, env_params: Any) -> dict[str, Any]:
        """What `env.num_envs=auto` needs (jaxtrade/config/auto.py): the rollout memory."""
        return {"rollout_len": self.rollout_len, "num_minibatches": self.num_minibatches}

    def check_num_envs(self, num_envs: int) -> None:
        batch = num_envs * self.rollout_len
        if batch % self.num_minibatches:
            raise ConfigError(
                f"agent.num_minibatches={self.num_minibatches} is not allowed: env.num_envs * "
                f"agent.rollout_len = {num_envs}*{self.rollout_len} = {batch} must be divisible "
                "by it")


class Transition(NamedTuple):
    obs: jax.Array
    reset: jax.Array  # obs starts an episode (recurrent carry is zeroed before it)
    action: jax.Array  # raw policy sample
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array  # scaled, truncation-bootstrapped reward used by GAE
    raw_reward: jax.Array  # the env's reward, for logging and risk estimates
    done: jax.Array


@struct.dataclass
class PPOState:
    """Everything a PPO run needs to continue; a pytree of arrays only.

    `carry` is the recurrent state of the policy network per env (an empty tuple for
    feed-forward networks); `last_done` marks envs whose `last_obs` starts a new episode (the
    recurrent carry is reset there). `extra` holds a variant's state (CVaR-PPO's multiplier).
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


class PPOExtension(NamedTuple):
    """Hooks for PPO variants.

    init_extra(hparams) -> dict stored in `PPOState.extra`.
    adjust_advantages(traj, advantages, extra, hparams) -> (advantages, extra, metrics): called
    once per update after GAE with the [rollout_len, num_envs] batch.
    """

    init_extra: Callable[[Any], dict[str, Any]]
    adjust_advantages: Callable[..., tuple[jax.Array, dict[str, Any], Metrics]]


def make_agent(
    config: PPOConfig, env: Any, env_params: Any, extension: PPOExtension | None = None
) -> Agent:
    num_updates, _, steps_per_update = config.run_sizes()
    num_envs, rollout_len = config.num_envs, config.rollout_len
    if config.network.recurrent:
        if num_envs % config.num_minibatches:
            raise ConfigError("recurrent PPO needs num_envs divisible by num_minibatches")
    elif steps_per_update % config.num_minibatches:
        raise ConfigError("num_envs * rollout_len must be divisible by num_minibatches")

    obs_shape = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0)).shape
    action_spec = action_spec_from_space(
        env.action_space(env_params), config.network.continuous_squash
    )
    network = ActorCritic(config.network, action_spec, obs_ndim=len(obs_shape))

    def init(key: jax.Array, hparams: Any, env_params: Any) -> PPOState:
        hp = hparams_as_arrays(config.hparams if hparams is None else hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        runner = reset_runner(env, env_params, env_key, num_envs)
        carry = network_carry(config.network, (num_envs,))
        params = network.init(net_key, carry, runner.obs[None], runner.done[None])
        # Adam's state lives on one flat vector of all parameters: `update` runs its
        # minibatch steps on that vector (one fused Adam update and one norm instead of one
        # per weight array, which matters for the many small minibatch steps on CPU).
        return PPOState(
            params=params,
            opt_state=adam_init(ravel_pytree(params)[0]),
            env_state=runner.env_state,
            last_obs=runner.obs,
            last_done=runner.done,
            carry=carry,
            rng=key,
            hparams=hp,
            update_step=jnp.zeros((), jnp.int32),
            episode_stats=runner.episode_stats,
            extra=extension.init_extra(hp) if extension else {},
        )

    def rollout(state: PPOState, env_params: Any) -> tuple[PPOState, Transition]:
        hp = state.hparams

        def behaviour(net_carry, obs, env_state, start, key):
            net_carry, dist, value = network.apply(state.params, net_carry, obs[None], start[None])
            raw = dist.sample(seed=key)
            aux = (raw[0], dist.log_prob(raw)[0], value[0])
            return net_carry, to_env_action(action_spec, raw[0]), aux

        def record(step, aux, net_carry) -> Transition:
            raw, log_prob, value = aux
            gae_reward = step.reward * hp.reward_scale
            if config.bootstrap_truncated and isinstance(step.info, dict) and (
                    "final_observation" in step.info):
                _, _, final_value = network.apply(
                    state.params, net_carry, step.final_obs[None], jnp.zeros((1, num_envs), bool)
                )
                cut = jnp.logical_and(step.truncated, jnp.logical_not(step.terminated))
                gae_reward = gae_reward + hp.gamma * final_value[0] * cut
            return Transition(
                obs=step.obs, reset=step.start, action=raw, log_prob=log_prob, value=value,
                reward=gae_reward, raw_reward=step.reward,
                done=jnp.logical_or(step.terminated, step.truncated),
            )

        runner = EnvRunner(state.env_state, state.last_obs, state.last_done, state.episode_stats)
        runner, rng, carry, traj = collect(
            env, env_params, runner, state.rng, behaviour, state.carry, record, rollout_len
        )
        state = state.replace(env_state=runner.env_state, last_obs=runner.obs,
                              last_done=runner.done, episode_stats=runner.episode_stats,
                              carry=carry, rng=rng)
        return state, traj

    def loss_fn(params, carry0, batch: Transition, advantages, targets, hp: PPOHParams):
        _, dist, value = network.apply(params, carry0, batch.obs, batch.reset)
        if config.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss, ratio, log_ratio = ppo_clip_loss(
            dist.log_prob(batch.action), batch.log_prob, advantages, hp.clip_eps
        )
        value_loss = clipped_value_loss(value, batch.value, targets, hp.clip_eps,
                                        config.clip_value_loss)
        entropy = dist.entropy().mean()
        loss = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
        approx_kl = jnp.mean(ratio - 1.0 - log_ratio)
        return loss, (policy_loss, value_loss, entropy, approx_kl)

    def optimize(state: PPOState, traj: Transition, carry0, advantages, targets):
        hp = state.hparams
        lr = hp.learning_rate
        if config.anneal_lr:
            lr = lr * (1.0 - state.update_step.astype(jnp.float32) / num_updates)
        # Minibatch steps work on one flat parameter vector (see `optimizer`); the loss sees
        # the usual pytree through `unravel` (slices that XLA folds into the layers).
        flat_params, unravel = ravel_pytree(state.params)
        flat_loss = lambda flat, *args: loss_fn(unravel(flat), *args)
        grad_fn = jax.value_and_grad(flat_loss, has_aux=True)

        def minibatch_step(carry, mb):
            params, opt_state, sums = carry
            mb_carry, mb_traj, mb_adv, mb_targets = mb
            (loss, aux), grads = grad_fn(params, mb_carry, mb_traj, mb_adv, mb_targets, hp)
            params, opt_state = adam_step(params, grads, opt_state, lr, hp.max_grad_norm)
            # Running sums of the logged losses (metrics are per update, not per step).
            sums = sums + jnp.stack([loss, *aux, optax.global_norm(grads)])
            return (params, opt_state, sums), None

        def epoch(carry, key):
            data = (traj, advantages, targets)
            if config.network.recurrent:
                # Keep whole sequences: shuffle and split along the env axis (axis 1).
                perm = jax.random.permutation(key, num_envs)
                shuffle = lambda x: jnp.take(x, perm, axis=1)
                split = lambda x: jnp.swapaxes(
                    x.reshape((x.shape[0], config.num_minibatches, -1) + x.shape[2:]), 0, 1
                )
                data = jax.tree.map(lambda x: split(shuffle(x)), data)
                carries = jax.tree.map(
                    lambda c: jnp.take(c, perm, axis=0).reshape(
                        (config.num_minibatches, -1) + c.shape[1:]
                    ),
                    carry0,
                )
            else:
                # Independent transitions: flatten time and envs, shuffle, feed as [1, mb] sequences
                perm = jax.random.permutation(key, steps_per_update)
                data = jax.tree.map(
                    lambda x: jnp.take(
                        x.reshape((steps_per_update,) + x.shape[2:]), perm, axis=0
                    ).reshape((config.num_minibatches, 1, -1) + x.shape[2:]),
                    data,
                )
                carries = ()  # feed-forward networks carry nothing
            return jax.lax.scan(minibatch_step, carry, (carries, *data))

        names = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm")
        rng, epoch_key = jax.random.split(state.rng)
        (flat_params, opt_state, sums), _ = jax.lax.scan(
            epoch,
            (flat_params, state.opt_state, jnp.zeros((len(names),), jnp.float32)),
            jax.random.split(epoch_key, config.update_epochs),
        )
        state = state.replace(params=unravel(flat_params), opt_state=opt_state, rng=rng)
        means = sums / (config.update_epochs * config.num_minibatches)
        return state, {name: means[i] for i, name in enumerate(names)}

    def update(state: PPOState, env_params: Any) -> tuple[PPOState, Metrics]:
        carry0 = state.carry
        state, traj = rollout(state, env_params)
        _, _, last_value = network.apply(
            state.params, state.carry, state.last_obs[None], state.last_done[None]
        )
        hp = state.hparams
        advantages, targets = gae(traj.reward, traj.value, traj.done, last_value[0], hp.gamma,
                                  hp.gae_lambda)
        metrics: Metrics = {}
        if extension is not None:
            advantages, extra, metrics = extension.adjust_advantages(
                traj, advantages, state.extra, state.hparams
            )
            state = state.replace(extra=extra)
        state, losses = optimize(state, traj, carry0, advantages, targets)
        state = state.replace(update_step=state.update_step + 1)
        metrics = {
            "episode_return": state.episode_stats.last_return,
            "episode_length": state.episode_stats.last_length,
            **losses,
            "env_steps": state.update_step.astype(jnp.float32) * steps_per_update,
            **metrics,
        }
        return state, metrics

    def init_carry() -> Any:
        return network_carry(config.network, ())

    def policy(params, obs, env_state, env_params, key, carry, deterministic) -> PolicyOutput:
        """Batched policy call (agents/common/types.py): the distribution's mode when
        `deterministic` (may be traced), else a sample; logits of a categorical policy and
        the critic's value as beliefs."""
        resets = jnp.zeros((1, obs.shape[0]), bool)
        carry, dist, value = network.apply(params, carry, obs[None], resets)
        raw = jnp.where(deterministic, dist.mode(), dist.sample(seed=key))[0]
        action = to_env_action(action_spec, raw)
        logits = dist.logits[0] if action_spec.kind == "discrete" else None
        return policy_output(env, env_params, action, carry, logits=logits, value=value[0])

    return build_agent(
        family="ppo",
        config=config,
        network=network,
        init=init,
        update=update,
        policy=policy,
        policy_params=lambda state: state.params,
        init_carry=init_carry,
        env_axis=env_axis,
    )


def env_axis(state: PPOState) -> PPOState:
    """`Agent.env_axis`: env states, last observations, episode accumulators and the
    recurrent carry lead with the env axis."""
    runner = runner_env_axis(EnvRunner(state.env_state, state.last_obs, state.last_done,
                                       state.episode_stats))
    return env_axis_flags(state, False).replace(
        env_state=runner.env_state, last_obs=runner.obs, last_done=runner.done,
        episode_stats=runner.episode_stats, carry=env_axis_flags(state.carry))
