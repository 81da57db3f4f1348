"""Deep Q-Networks with double, dueling, n-step and prioritized-replay options.

One update = every env takes `rollout_len` epsilon-greedy steps (the transitions go to the
on-device replay buffer), then, once `learning_starts` env steps are done, `gradient_steps`
minibatch steps on sampled n-step sequences; the target network follows the online one every
`target_update_every` updates (a copy at tau = 1, Polyak averaging below 1). `update` is one
of them; the shared core scans `updates_per_chunk` updates per chunk and `agents.make_train`
scans chunks, so a whole run is one program.

Targets: y = sum_{k<m} gamma^k r_k + gamma^m (1 - terminated) Q_target(s_m, a*), cut at the
first episode end inside the sequence; a* = argmax Q_target(s_m) or, with `double`, argmax of
the online network (van Hasselt et al. 2016). A truncated step bootstraps from the final
observation the env reported, never from the reset one. Loss: half the squared TD error
(`loss="mse"`, the default) or Huber (`loss="huber"`), weighted by prioritized replay's
importance weights (beta annealed from `priority_beta_start` to 1),
priorities |TD error| + eps (Schaul et al. 2016).

Hyperparameters are float32 leaves of the state: seeds x learning rates x gammas x ... vmap in
one program. Shape-setting sizes (envs, buffer, batch, n_step, network) stay static.

`make_agent(..., head=...)` lets a distributional variant (QR-DQN, agents/qrdqn.py) replace
the value head, its target and its loss without copying this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.common.agent import build_agent, policy_output
from agents.common.config import hparams_as_arrays
from agents.common.counters import env_steps_done
from agents.common.distributions import action_spec_from_space
from agents.common.losses import periodic_update, td_loss
from agents.common.networks import NetworkConfig, make_q_network
from agents.common.offpolicy import (
    OffPolicySizes,
    collect_and_learn,
    env_axis,
    example_item,
    sample_batch,
)
from agents.common.optim import adam_init, adam_step
from agents.common.replay import Replay, make_replay, obs_codec
from agents.common.rollout import EnvRunner, reset_runner
from agents.common.types import Agent, Metrics, PolicyOutput
from jaxtrade.errors import ConfigError


@struct.dataclass
class DQNHParams:
    """Numeric hyperparameters: pytree leaves, so `jax.vmap` can sweep them in one program."""

    learning_rate: float = 2.5e-4
    gamma: float = 0.99
    max_grad_norm: float = 10.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_fraction: float = 0.5  # of total_steps, linear from start to end
    tau: float = 1.0  # target update: 1 copies the online network, < 1 Polyak-averages
    huber_delta: float = 1.0  # with loss="huber"; QR-DQN's kappa
    priority_beta_start: float = 0.4  # importance-weight exponent, annealed to 1
    priority_eps: float = 1e-6
    # Adam's denominator floor. At 1e-5, once the TD error is near zero (CartPole: Q = 100
    # everywhere) Adam still takes full-size steps along gradient noise and the greedy policy
    # drifts until it collapses; 1e-2 damps steps on gradients that small. With n_step=3:
    # 70 of 70 seeds hold 494-500 greedy on CartPole-v1 (2 of 20 failed at 1e-5, n_step=1).
    # QR-DQN sets 1e-3 (agents/qrdqn.py): its quantile Huber loss at kappa 100 gives smaller
    # gradients, and a 1e-2 floor slowed its learning (BENCHMARKS.md, issue 19).
    adam_eps: float = 1e-2


def _q_network_default() -> NetworkConfig:
    return NetworkConfig(hidden_sizes=(120, 84), activation="relu")


@dataclasses.dataclass(frozen=True)
class DQNConfig(OffPolicySizes):
    name: str = "dqn"
    num_envs: int = 10
    rollout_len: int = 1  # env steps per env per update
    total_steps: int = 500_000
    batch_size: int = 128
    buffer_size: int = 10_000  # transitions over all envs
    learning_starts: int = 10_000  # env steps (epsilon-greedy) before the first gradient step
    target_update_every: int = 50  # updates between target updates
    n_step: int = 3  # with adam_eps=1e-2: no late collapse over 70 seeds (BENCHMARKS.md)
    double: bool = True
    head: str = "q"  # "q" | "dueling"
    # "mse" (0.5 squared TD error) or "huber" (hparams.huber_delta). With Adam, Huber's
    # constant pull on large errors let Q values run away on CartPole (to 1e6 in 200k steps
    # at the defaults), squared error did not.
    loss: str = "mse"
    prioritized: bool = False
    # alpha of prioritized replay (static in flashbax). Schaul et al.'s 0.6 left 2 of 10
    # seeds below 400 greedy on CartPole-v1 with n_step=3, adam_eps=1e-2; at 0.4 (nearer
    # uniform replay, which holds on 70 of 70 seeds) 30 of 30 held (BENCHMARKS.md, issue 19).
    priority_exponent: float = 0.4
    anneal_lr: bool = False  # linear decay of the learning rate to 0 over the run
    network: NetworkConfig = dataclasses.field(default_factory=_q_network_default)
    hparams: DQNHParams = dataclasses.field(default_factory=DQNHParams)

    def check(self, episode_steps: int | None = None) -> None:
        """One clear ConfigError for sizes that cannot train."""
        super().check()
        if self.loss not in ("mse", "huber"):
            raise ConfigError(f"agent.loss={self.loss!r} is not allowed: 'mse' or 'huber'")
        for key in ("n_step", "target_update_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"agent.{key}={getattr(self, key)} is not allowed: must be >= 1")
        if episode_steps is not None and self.n_step > episode_steps:
            raise ConfigError(f"agent.n_step={self.n_step} is not allowed: longer than an "
                              f"episode ({episode_steps} steps)")

    def check_num_envs(self, num_envs: int) -> None:
        if self.buffer_size // max(num_envs, 1) < self.n_step + 1:
            raise ConfigError(f"agent.buffer_size={self.buffer_size} is not allowed: with "
                              f"env.num_envs={num_envs} each env keeps fewer than "
                              f"agent.n_step + 1 = {self.n_step + 1} steps")

    def export_head(self) -> dict[str, Any]:
        """How the numpy runner turns the exported network into an action: argmax over Q."""
        return {"family": "q", "head": self.head, "num_quantiles": 0}

    def auto_sizing(self, env: Any, env_params: Any) -> dict[str, Any]:
        sizing = super().auto_sizing(env, env_params)
        if self.prioritized:  # the sum tree: two float32 levels' worth per transition
            sizing["fixed_bytes"] += 2 * 4 * self.buffer_size
        return sizing


class ValueHead(NamedTuple):
    """What a value-based variant changes: its outputs, target and loss.

    num_quantiles: 0 for scalar Q values, N for N quantiles per action.
    action_values(out, hp) -> [B, A]: what acting and argmax use.
    loss(chosen, target, weights, hp) -> (loss, per-item priority): chosen [B(, N)] is the
      online output at the taken action, target [B(, N)] is held fixed.
    metrics(out) -> extra metrics of a batch of online outputs.
    """

    num_quantiles: int
    action_values: Callable[[jax.Array, Any], jax.Array]
    loss: Callable[..., tuple[jax.Array, jax.Array]]
    metrics: Callable[[jax.Array], Metrics]


def q_value_head(huber: bool = False) -> ValueHead:
    def loss(chosen, target, weights, hp):
        value, errors = td_loss(chosen, target, weights, hp.huber_delta if huber else None)
        return value, jnp.abs(errors)

    return ValueHead(0, lambda out, hp: out, loss, lambda out: {})


@struct.dataclass
class DQNState:
    params: Any  # online network
    target_params: Any
    opt_state: Any
    buffer: Any  # flashbax buffer state (items, indices, sum tree when prioritized)
    runner: EnvRunner
    rng: jax.Array
    hparams: Any
    update_step: jax.Array  # int32 scalar


def epsilon_at(hp: DQNHParams, env_steps: jax.Array, total_steps: int) -> jax.Array:
    """Linear decay from epsilon_start to epsilon_end over epsilon_decay_fraction of the run."""
    # float(): a Python int past int32 would not convert (the same float32 below it).
    decay_steps = jnp.maximum(hp.epsilon_decay_fraction * float(total_steps), 1.0)
    frac = jnp.clip(env_steps.astype(jnp.float32) / decay_steps, 0.0, 1.0)
    return hp.epsilon_start + frac * (hp.epsilon_end - hp.epsilon_start)


def episode_steps_of(env: Any, env_params: Any) -> int | None:
    """Steps of one training episode where the env says (trading: episode_bars; gymnax:
    max_steps_in_episode), for the n-step check."""
    for name in ("episode_bars", "max_steps_in_episode"):
        value = getattr(env_params, name, None)
        if value is not None:
            try:
                return int(value)
            except (TypeError, jax.errors.ConcretizationTypeError):
                return None
    return None


def make_agent(config: DQNConfig, env: Any, env_params: Any,
               head: ValueHead | None = None) -> Agent:
    head = head or q_value_head(config.loss == "huber")
    config.check(episode_steps_of(env, env_params))
    num_updates, _, steps_per_update = config.run_sizes()
    num_envs, n_step = config.num_envs, config.n_step
    total_steps = num_updates * steps_per_update

    space = env.action_space(env_params)
    spec = action_spec_from_space(space)
    if spec.kind != "discrete":
        raise ConfigError(f"agent.name={config.name!r} needs discrete actions (the trading "
                          "env's env.action_mode=discrete); use sac or td3 for continuous ones")
    num_actions = spec.num_actions
    obs_shape = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0)).shape
    network = make_q_network(config.network, num_actions, len(obs_shape), config.head,
                             head.num_quantiles)
    codec = obs_codec(env)
    replay: Replay = make_replay(config.buffer_size, num_envs, config.batch_size, n_step,
                                 config.prioritized, config.priority_exponent)

    def greedy_values(params, obs, hp):
        return head.action_values(network.apply(params, obs), hp)

    def init(key: jax.Array, hparams: Any, env_params: Any) -> DQNState:
        hp = hparams_as_arrays(config.hparams if hparams is None else hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        runner = reset_runner(env, env_params, env_key, num_envs)
        params = network.init(net_key, runner.obs)
        one = example_item(codec, runner, jnp.zeros((num_envs,), jnp.int32))
        return DQNState(
            params=params,
            target_params=params,
            opt_state=adam_init(params),
            buffer=replay.init(one),
            runner=runner,
            rng=key,
            hparams=hp,
            update_step=jnp.zeros((), jnp.int32),
        )

    def epsilon_greedy(values, key, epsilon):
        """[B] actions: argmax of `values` [B, A], uniformly random with prob. `epsilon`."""
        greedy = jnp.argmax(values, axis=-1).astype(jnp.int32)
        explore_key, action_key = jax.random.split(key)
        random = jax.random.randint(action_key, greedy.shape, 0, num_actions, jnp.int32)
        explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
        return jnp.where(explore, random, greedy)

    def learn(state: DQNState, key: jax.Array, env_params: Any) -> tuple[DQNState, Metrics]:
        hp = state.hparams
        batch = sample_batch(replay, codec, state.buffer, key, env_params, hp.gamma)
        obs, action, next_obs = batch.obs, batch.action, batch.next_obs

        next_target = network.apply(state.target_params, next_obs)
        if config.double:
            next_action = jnp.argmax(greedy_values(state.params, next_obs, hp), axis=-1)
        else:
            next_action = jnp.argmax(head.action_values(next_target, hp), axis=-1)
        picked = _take_action(next_target, next_action)
        shape = (-1,) + (1,) * (picked.ndim - 1)
        target = batch.returns.reshape(shape) + batch.discount.reshape(shape) * picked

        progress = state.update_step.astype(jnp.float32) / max(num_updates, 1)
        beta = hp.priority_beta_start + progress * (1.0 - hp.priority_beta_start)
        weights = replay.importance_weights(state.buffer, batch.probabilities, beta)

        def loss_fn(params):
            out = network.apply(params, obs)
            loss, priority = head.loss(_take_action(out, action), target, weights, hp)
            return loss, (priority, out)

        (loss, (priority, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        lr = hp.learning_rate * (1.0 - progress) if config.anneal_lr else hp.learning_rate
        params, opt_state = adam_step(state.params, grads, state.opt_state, lr, hp.max_grad_norm,
                                      hp.adam_eps)
        buffer = replay.set_priorities(state.buffer, batch.indices, priority + hp.priority_eps)
        values = head.action_values(out, hp)
        metrics = {"loss": loss, "q_mean": jnp.mean(_take_action(values, action)),
                   "td_abs": jnp.mean(priority), "grad_norm": optax.global_norm(grads),
                   **head.metrics(out)}
        return state.replace(params=params, opt_state=opt_state, buffer=buffer), metrics

    def update(state: DQNState, env_params: Any) -> tuple[DQNState, Metrics]:
        hp = state.hparams
        epsilon = epsilon_at(hp, env_steps_done(state.update_step, steps_per_update), total_steps)

        def behaviour(obs, env_state, key):
            action = epsilon_greedy(greedy_values(state.params, obs, hp), key, epsilon)
            return action, action

        state, metrics = collect_and_learn(state, env, env_params, replay, codec, behaviour,
                                           lambda s, k: learn(s, k, env_params), config,
                                           steps_per_update)
        target_params = periodic_update(state.params, state.target_params, state.update_step,
                                        config.target_update_every, hp.tau)
        state = state.replace(target_params=target_params)
        metrics["epsilon"] = epsilon
        return state, metrics

    def policy(params, obs, env_state, env_params, key, carry, deterministic) -> PolicyOutput:
        """Batched policy call (agents/common/types.py): greedy when `deterministic` (may be
        traced), else epsilon-greedy at 0.05; the action values (and QR-DQN's quantiles)
        as beliefs."""
        out = network.apply(params, obs)
        values = head.action_values(out, hparams_as_arrays(config.hparams))
        action = epsilon_greedy(values, key, jnp.where(deterministic, 0.0, 0.05))
        return policy_output(env, env_params, action, carry, q_values=values,
                             quantiles=out if head.num_quantiles else None)

    return build_agent(
        family="dqn",
        config=config,
        network=network,
        init=init,
        update=update,
        policy=policy,
        policy_params=lambda state: state.params,
        env_axis=env_axis,
    )


def _take_action(out: jax.Array, action: jax.Array) -> jax.Array:
    """out[b, action[b]] for values [B, A] or quantiles [B, A, N], as a one-hot weighted sum
    over the few actions: its gradient is a product, where a gather's is a scatter (slow on
    CPU, and QR-DQN's [B, A, N] made it a good part of an update)."""
    one_hot = jax.nn.one_hot(action, out.shape[1], dtype=out.dtype)
    return jnp.sum(out * one_hot.reshape(one_hot.shape + (1,) * (out.ndim - 2)), axis=1)
