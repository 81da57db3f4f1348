"""TD3 (Fujimoto et al. 2018), and DDPG (Lillicrap et al. 2016) as its configuration without
TD3's three changes. Continuous actions only.

One update = every env takes `rollout_len` steps (uniformly random actions until
`learning_starts` env steps, then the deterministic actor plus Gaussian exploration noise),
the transitions go to the on-device replay buffer, then `gradient_steps` minibatch steps
(agents/common/offpolicy.py). Each minibatch step:

  critic   y = r + gamma (1 - terminated) min_i Q'_i(s', a'), a' = clip(mu'(s') + eps, -1, 1),
           eps = clip(N(0, policy_noise), -noise_clip, noise_clip) (target policy smoothing);
           with `twin_critic` the minimum over two critics (clipped double Q), else the one
           critic. A truncated step bootstraps from the final observation the env reported.
  actor    every `policy_delay` minibatch steps (delayed actor updates): maximize Q_1(s, mu(s))
  targets  on the same steps, Polyak averaging of the target actor and critics

DDPG (`ddpg`): one critic, no target smoothing (policy_noise 0), actor and targets every step.

The actor outputs a pre-tanh vector; the unit action tanh(.) in [-1, 1]^D is what the critics
and the replay see, and the env receives it mapped onto its action box as PPO's actions are
(the trading env: target weights per asset). The deterministic action tanh(mu(s)) is what the
exported actor gives in the numpy runner (`network.continuous_squash` is tanh here).

Hyperparameters are float32 leaves of the state: seeds x learning rates x tau x noise scales
vmap in one program. Shape-setting sizes (envs, buffer, batch, network, delay) stay static.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.common.agent import build_agent, policy_output
from agents.common.config import hparams_as_arrays
from agents.common.counters import updates_to_reach
from agents.common.losses import polyak_update
from agents.common.networks import NetworkConfig
from agents.common.offpolicy import (
    TanhActorSizes,
    actor_critic_parts,
    collect_and_learn,
    critic_step,
    env_axis,
    example_item,
    random_unit_action,
    sample_batch,
)
from agents.common.optim import adam_init, adam_step
from agents.common.rollout import EnvRunner, reset_runner
from agents.common.types import Agent, Metrics, PolicyOutput
from jaxtrade.errors import ConfigError


@struct.dataclass
class TD3HParams:
    """Numeric hyperparameters: pytree leaves, so `jax.vmap` can sweep them in one program.
    Noise scales are in unit-action terms (the action box mapped to [-1, 1])."""

    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    gamma: float = 0.98  # not 0.99: see BENCHMARKS.md, "Why the SAC / TD3 defaults ..."
    tau: float = 0.005  # Polyak step of the targets per actor update
    exploration_noise: float = 0.1  # std of the Gaussian added to the behaviour action
    policy_noise: float = 0.2  # std of the target policy smoothing noise (0: none)
    noise_clip: float = 0.5
    max_grad_norm: float = 10.0
    reward_scale: float = 1.0  # rewards are multiplied by this in the targets (not in logs)


def _td3_network() -> NetworkConfig:
    return NetworkConfig(hidden_sizes=(64, 64), activation="relu", continuous_squash="tanh")


@dataclasses.dataclass(frozen=True)
class TD3Config(TanhActorSizes):
    name: str = "td3"
    env_action_mode: ClassVar[str] = "continuous"  # what an ensemble member of it trades
    twin_critic: bool = True  # clipped double Q
    policy_delay: int = 2  # minibatch steps per actor and target update
    network: NetworkConfig = dataclasses.field(default_factory=_td3_network)
    hparams: TD3HParams = dataclasses.field(default_factory=TD3HParams)

    def check(self) -> None:
        super().check()
        if self.policy_delay < 1:
            raise ConfigError(f"agent.policy_delay={self.policy_delay} is not allowed: "
                              "must be >= 1")


@struct.dataclass
class DDPGHParams(TD3HParams):
    policy_noise: float = 0.0


@dataclasses.dataclass(frozen=True)
class DDPGConfig(TD3Config):
    name: str = "ddpg"
    twin_critic: bool = False
    policy_delay: int = 1
    hparams: DDPGHParams = dataclasses.field(default_factory=DDPGHParams)


@struct.dataclass
class TD3State:
    actor_params: Any
    critic_params: Any  # critics stacked on a leading axis (2 with twin_critic, else 1)
    target_actor_params: Any
    target_critic_params: Any
    actor_opt: Any
    critic_opt: Any
    buffer: Any  # flashbax buffer state
    runner: EnvRunner
    rng: jax.Array
    hparams: Any
    update_step: jax.Array  # int32 scalar
    gradient_step: jax.Array  # int32 scalar, minibatch steps done (the delay's clock)


def make_agent(config: TD3Config, env: Any, env_params: Any) -> Agent:
    parts = actor_critic_parts(config, env, env_params, discrete=False, log_std=False,
                               num_critics=2 if config.twin_critic else 1,
                               other_agents="sac_discrete, dqn or ppo")
    spec, actor, critic, codec, replay = (parts.spec, parts.actor, parts.critic, parts.codec,
                                          parts.replay)
    steps_per_update = parts.steps_per_update

    def mu(actor_params, obs):
        """The deterministic unit action tanh(actor(s)) [B, D]."""
        return jnp.tanh(actor.apply(actor_params, obs))

    def behaviour(actor_params, obs, key, noise_std, explore):
        """(unit action, env action) for a batch: random while `explore`, else mu + noise."""
        noise_key, random_key = jax.random.split(key)
        unit = mu(actor_params, obs)
        unit = jnp.clip(unit + noise_std * jax.random.normal(noise_key, unit.shape), -1.0, 1.0)
        unit = jnp.where(explore, random_unit_action(random_key, spec, obs.shape[0]), unit)
        return unit, parts.to_env(unit)

    def init(key: jax.Array, hparams: Any, env_params: Any) -> TD3State:
        hp = hparams_as_arrays(config.hparams if hparams is None else hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        runner = reset_runner(env, env_params, env_key, config.num_envs)
        actor_params = actor.init(actor_key, runner.obs)
        unit = mu(actor_params, runner.obs)
        critic_params = critic.init(critic_key, runner.obs, unit)
        return TD3State(
            actor_params=actor_params,
            critic_params=critic_params,
            target_actor_params=actor_params,
            target_critic_params=critic_params,
            actor_opt=adam_init(actor_params),
            critic_opt=adam_init(critic_params),
            buffer=replay.init(example_item(codec, runner, unit)),
            runner=runner,
            rng=key,
            hparams=hp,
            update_step=jnp.zeros((), jnp.int32),
            gradient_step=jnp.zeros((), jnp.int32),
        )

    def learn(state: TD3State, key: jax.Array, env_params: Any) -> tuple[TD3State, Metrics]:
        hp = state.hparams
        sample_key, noise_key = jax.random.split(key)
        batch = sample_batch(replay, codec, state.buffer, sample_key, env_params, hp.gamma,
                             hp.reward_scale)
        obs, next_obs = batch.obs, batch.next_obs

        # Target policy smoothing: a noisy target action regularizes Q over its neighbourhood.
        next_unit = mu(state.target_actor_params, next_obs)
        smoothing = jnp.clip(hp.policy_noise * jax.random.normal(noise_key, next_unit.shape),
                             -hp.noise_clip, hp.noise_clip)
        next_unit = jnp.clip(next_unit + smoothing, -1.0, 1.0)
        next_q = jnp.min(critic.apply(state.target_critic_params, next_obs, next_unit)[..., 0],
                         axis=0)
        target = jax.lax.stop_gradient(batch.returns + batch.discount * next_q)
        critic_params, critic_opt, critic_loss, q, critic_grads = critic_step(
            lambda params: critic.apply(params, obs, batch.action)[..., 0], state.critic_params,
            state.critic_opt, target, hp.critic_lr, hp.max_grad_norm)
        gradient_step = state.gradient_step + 1
        state = state.replace(critic_params=critic_params, critic_opt=critic_opt,
                              gradient_step=gradient_step)

        def actor_loss_fn(actor_params):
            return -jnp.mean(critic.apply(critic_params, obs, mu(actor_params, obs))[0, :, 0])

        def update_actor(state: TD3State) -> tuple[TD3State, jax.Array]:
            actor_loss, grads = jax.value_and_grad(actor_loss_fn)(state.actor_params)
            actor_params, actor_opt = adam_step(state.actor_params, grads, state.actor_opt,
                                                hp.actor_lr, hp.max_grad_norm)
            return state.replace(
                actor_params=actor_params, actor_opt=actor_opt,
                target_actor_params=polyak_update(actor_params, state.target_actor_params,
                                                  hp.tau),
                target_critic_params=polyak_update(state.critic_params,
                                                   state.target_critic_params, hp.tau),
            ), actor_loss

        def keep(state: TD3State) -> tuple[TD3State, jax.Array]:
            # The loss is reported on every step, so the logged value does not jump to 0.
            return state, actor_loss_fn(state.actor_params)

        if config.policy_delay == 1:
            state, actor_loss = update_actor(state)
        else:
            state, actor_loss = jax.lax.cond(gradient_step % config.policy_delay == 0,
                                             update_actor, keep, state)
        metrics = {"loss": critic_loss + actor_loss, "critic_loss": critic_loss,
                   "actor_loss": actor_loss, "q_mean": jnp.mean(q),
                   "critic_grad_norm": optax.global_norm(critic_grads)}
        return state, metrics

    def update(state: TD3State, env_params: Any) -> tuple[TD3State, Metrics]:
        hp = state.hparams
        explore = state.update_step < updates_to_reach(config.learning_starts, steps_per_update)

        def explore_then_noisy_mu(obs, env_state, key):
            return behaviour(state.actor_params, obs, key, hp.exploration_noise, explore)

        state, metrics = collect_and_learn(state, env, env_params, replay, codec,
                                           explore_then_noisy_mu,
                                           lambda s, k: learn(s, k, env_params), config,
                                           steps_per_update)
        return state, metrics

    def policy(params, obs, env_state, env_params, key, carry, deterministic) -> PolicyOutput:
        """Batched policy call (agents/common/types.py): tanh(mu(s)), plus exploration noise
        (std 0.1 in unit terms) when not `deterministic` (may be traced). No beliefs: the
        critics are not policy parameters."""
        noise = jnp.where(deterministic, 0.0, 0.1)
        _, action = behaviour(params, obs, key, noise, False)
        return policy_output(env, env_params, action, carry)

    return build_agent(
        family="td3",
        config=config,
        network=actor,
        init=init,
        update=update,
        policy=policy,
        policy_params=lambda state: state.actor_params,
        env_axis=env_axis,
    )
