"""Soft Actor-Critic, continuous (Haarnoja et al. 2018) and discrete (Christodoulou 2019).

One update = every env takes `rollout_len` steps (uniformly random actions until
`learning_starts` env steps, then the stochastic policy), the transitions go to the on-device
replay buffer, then `gradient_steps` minibatch steps (agents/common/offpolicy.py). Each
minibatch step, in this order:

  critic   twin Q networks regress on y = r + gamma (1 - terminated) V_target(s'), with the
           soft value V(s) = E_{a~pi(s)}[min_i Q_i(s, a) - alpha log pi(a|s)] under the current
           policy and the target critics; a truncated step bootstraps from the final
           observation the env reported, never the reset one
  actor    maximizes V(s) under the updated critics (reparameterized sample: the gradient
           flows through the action into min_i Q_i)
  alpha    log alpha follows d/dlog(alpha) = entropy - target_entropy, so the temperature
           rises while the policy's entropy is below the target (automatic entropy tuning)
  targets  Polyak averaging, target <- tau online + (1 - tau) target

Continuous policy: a tanh-squashed Gaussian with a state-dependent log-std head; its
log-probability includes the tanh Jacobian (agents/common/distributions.py), without which
the entropy term would reward pushing u to +-inf. target_entropy = -scale * action dims. The
unit action tanh(u) in [-1, 1]^D is what the critics and the replay see; the env receives it
mapped onto its action box as PPO's actions are (the trading env: target weights per asset).
The deterministic action is tanh(mean), which is what the exported actor gives in the numpy
runner (`network.continuous_squash` is tanh for SAC, so the manifest says so).

Discrete policy (`sac_discrete`): a categorical over the env's actions, the expectations over
actions taken exactly (sum over pi(a|s)) instead of sampled; the critics output Q(s, .) for
every action. target_entropy = scale * log(num_actions); the deterministic action is argmax.

Hyperparameters are float32 leaves of the state: seeds x learning rates x tau x entropy
targets vmap in one program. Shape-setting sizes (envs, buffer, batch, network) stay static.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from agents.common.agent import build_agent, policy_output
from agents.common.config import hparams_as_arrays
from agents.common.counters import updates_to_reach
from agents.common.distributions import bounded_log_std, tanh_gaussian_sample
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


@struct.dataclass
class SACHParams:
    """Numeric hyperparameters: pytree leaves, so `jax.vmap` can sweep them in one program."""

    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005  # Polyak step of the target critics per gradient step
    init_alpha: float = 1.0  # starting entropy temperature
    # continuous: target entropy = -scale * action dims; discrete: scale * log(num actions)
    target_entropy_scale: float = 1.0
    max_grad_norm: float = 10.0
    reward_scale: float = 1.0  # rewards are multiplied by this in the targets (not in logs)


def _sac_network() -> NetworkConfig:
    return NetworkConfig(hidden_sizes=(64, 64), activation="relu", continuous_squash="tanh")


@dataclasses.dataclass(frozen=True)
class SACConfig(TanhActorSizes):
    name: str = "sac"
    network: NetworkConfig = dataclasses.field(default_factory=_sac_network)
    hparams: SACHParams = dataclasses.field(default_factory=SACHParams)

    discrete: ClassVar[bool] = False
    env_action_mode: ClassVar[str] = "continuous"  # what an ensemble member of it trades


@struct.dataclass
class SACDiscreteHParams(SACHParams):
    # Slower learning rates, fast targets (few gradient steps per run) and a low entropy
    # target than the continuous defaults; why, measured: BENCHMARKS.md, "Why the SAC / TD3
    # defaults are what they are".
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    tau: float = 0.1
    target_entropy_scale: float = 0.3


@dataclasses.dataclass(frozen=True)
class SACDiscreteConfig(SACConfig):
    name: str = "sac_discrete"
    num_envs: int = 8
    rollout_len: int = 4  # 32 env steps per gradient step: discrete runs are longer
    total_steps: int = 500_000
    hparams: SACDiscreteHParams = dataclasses.field(default_factory=SACDiscreteHParams)

    discrete: ClassVar[bool] = True
    env_action_mode: ClassVar[str] = "discrete"


@struct.dataclass
class SACState:
    actor_params: Any
    critic_params: Any  # twin critics, stacked on a leading axis of 2
    target_critic_params: Any
    log_alpha: jax.Array  # float32 scalar
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    buffer: Any  # flashbax buffer state
    runner: EnvRunner
    rng: jax.Array
    hparams: Any
    update_step: jax.Array  # int32 scalar


def make_agent(config: SACConfig, env: Any, env_params: Any) -> Agent:
    discrete = type(config).discrete
    parts = actor_critic_parts(config, env, env_params, discrete=discrete, log_std=not discrete,
                               num_critics=2, other_agents="sac" if discrete else "sac_discrete")
    spec, actor, critic, codec, replay = (parts.spec, parts.actor, parts.critic, parts.codec,
                                          parts.replay)
    steps_per_update = parts.steps_per_update

    def target_entropy(hp: SACHParams) -> jax.Array:
        if discrete:
            return hp.target_entropy_scale * np.log(spec.num_actions)
        return -hp.target_entropy_scale * spec.dim

    # ---------------------------------------------------------------- policy
    def sample(actor_params, obs, key):
        """Continuous: (unit action tanh(u) [B, D], log pi [B]) of a reparameterized sample."""
        mean, log_std = actor.apply(actor_params, obs)
        u, log_prob = tanh_gaussian_sample(key, mean, bounded_log_std(log_std))
        return jnp.tanh(u), log_prob

    def soft_value(actor_params, critic_params, obs, key, alpha):
        """(V(s) = E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] [B], policy entropy [B])."""
        if discrete:
            logits = actor.apply(actor_params, obs)
            log_probs = jax.nn.log_softmax(logits)
            probs = jnp.exp(log_probs)
            q = jnp.min(critic.apply(critic_params, obs), axis=0)  # [B, A]
            return (jnp.sum(probs * (q - alpha * log_probs), axis=-1),
                    -jnp.sum(probs * log_probs, axis=-1))
        action, log_prob = sample(actor_params, obs, key)
        q = jnp.min(critic.apply(critic_params, obs, action)[..., 0], axis=0)  # [B]
        return q - alpha * log_prob, -log_prob

    def q_taken(critic_params, obs, action):
        """Each critic's Q(s, a) at the stored actions: [2, B]."""
        if discrete:
            q = critic.apply(critic_params, obs)
            return jnp.take_along_axis(q, action.astype(jnp.int32)[None, :, None], axis=2)[..., 0]
        return critic.apply(critic_params, obs, action)[..., 0]

    def behaviour(actor_params, obs, key, deterministic, explore):
        """(stored action, env action) for a batch: random while `explore`, else pi."""
        sample_key, random_key = jax.random.split(key)
        if discrete:
            logits = actor.apply(actor_params, obs)
            drawn = jax.random.categorical(sample_key, logits).astype(jnp.int32)
            action = jnp.where(deterministic, jnp.argmax(logits, axis=-1).astype(jnp.int32),
                               drawn)
            action = jnp.where(explore, random_unit_action(random_key, spec, obs.shape[0]),
                               action)
            return action, action
        mean, log_std = actor.apply(actor_params, obs)
        u, _ = tanh_gaussian_sample(sample_key, mean, bounded_log_std(log_std))
        unit = jnp.tanh(jnp.where(deterministic, mean, u))
        unit = jnp.where(explore, random_unit_action(random_key, spec, obs.shape[0]), unit)
        return unit, parts.to_env(unit)

    # ---------------------------------------------------------------- state
    def init(key: jax.Array, hparams: Any, env_params: Any) -> SACState:
        hp = hparams_as_arrays(config.hparams if hparams is None else hparams)
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        runner = reset_runner(env, env_params, env_key, config.num_envs)
        actor_params = actor.init(actor_key, runner.obs)
        stored, _ = behaviour(actor_params, runner.obs, key, True, True)
        if discrete:
            critic_params = critic.init(critic_key, runner.obs)
        else:
            critic_params = critic.init(critic_key, runner.obs, stored)
        log_alpha = jnp.log(hp.init_alpha)
        return SACState(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            log_alpha=log_alpha,
            actor_opt=adam_init(actor_params),
            critic_opt=adam_init(critic_params),
            alpha_opt=adam_init(log_alpha),
            buffer=replay.init(example_item(codec, runner, stored)),
            runner=runner,
            rng=key,
            hparams=hp,
            update_step=jnp.zeros((), jnp.int32),
        )

    # ---------------------------------------------------------------- one minibatch step
    def learn(state: SACState, key: jax.Array, env_params: Any) -> tuple[SACState, Metrics]:
        hp = state.hparams
        sample_key, target_key, actor_key = jax.random.split(key, 3)
        batch = sample_batch(replay, codec, state.buffer, sample_key, env_params, hp.gamma,
                             hp.reward_scale)
        obs = batch.obs
        alpha = jnp.exp(state.log_alpha)

        next_value, _ = soft_value(state.actor_params, state.target_critic_params,
                                   batch.next_obs, target_key, alpha)
        target = jax.lax.stop_gradient(batch.returns + batch.discount * next_value)
        critic_params, critic_opt, critic_loss, q, critic_grads = critic_step(
            lambda params: q_taken(params, obs, batch.action), state.critic_params,
            state.critic_opt, target, hp.critic_lr, hp.max_grad_norm)

        def actor_loss_fn(actor_params):
            value, entropy = soft_value(actor_params, critic_params, obs, actor_key, alpha)
            return -jnp.mean(value), jnp.mean(entropy)

        (actor_loss, entropy), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            state.actor_params)
        actor_params, actor_opt = adam_step(state.actor_params, actor_grads, state.actor_opt,
                                            hp.actor_lr, hp.max_grad_norm)

        entropy_gap = jax.lax.stop_gradient(entropy - target_entropy(hp))
        alpha_loss, alpha_grad = jax.value_and_grad(lambda la: la * entropy_gap)(state.log_alpha)
        log_alpha, alpha_opt = adam_step(state.log_alpha, alpha_grad, state.alpha_opt,
                                         hp.alpha_lr, hp.max_grad_norm)

        state = state.replace(
            actor_params=actor_params, critic_params=critic_params, log_alpha=log_alpha,
            actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
            target_critic_params=polyak_update(critic_params, state.target_critic_params,
                                               hp.tau))
        metrics = {"loss": critic_loss + actor_loss + alpha_loss, "critic_loss": critic_loss,
                   "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": alpha,
                   "entropy": entropy, "q_mean": jnp.mean(q),
                   "critic_grad_norm": optax.global_norm(critic_grads)}
        return state, metrics

    # ---------------------------------------------------------------- one update
    def update(state: SACState, env_params: Any) -> tuple[SACState, Metrics]:
        explore = state.update_step < updates_to_reach(config.learning_starts, steps_per_update)

        def explore_then_sample(obs, env_state, key):
            return behaviour(state.actor_params, obs, key, False, explore)

        state, metrics = collect_and_learn(state, env, env_params, replay, codec,
                                           explore_then_sample,
                                           lambda s, k: learn(s, k, env_params), config,
                                           steps_per_update)
        return state, metrics

    def policy(params, obs, env_state, env_params, key, carry, deterministic) -> PolicyOutput:
        """Batched policy call (agents/common/types.py): tanh(mean) / argmax when
        `deterministic` (may be traced), else a policy sample; a discrete policy's logits as
        its belief (the critics are not policy parameters)."""
        _, action = behaviour(params, obs, key, deterministic, False)
        logits = actor.apply(params, obs) if discrete else None
        return policy_output(env, env_params, action, carry, logits=logits)

    return build_agent(
        family="sac",
        config=config,
        network=actor,
        init=init,
        update=update,
        policy=policy,
        policy_params=lambda state: state.actor_params,
        env_axis=env_axis,
    )
