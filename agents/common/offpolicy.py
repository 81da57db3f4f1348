"""What the replay-based agents (DQN, QR-DQN, SAC, TD3, DDPG) share: run sizes, replay wiring,
the sampled batch, the collect-then-learn step of one update, and the set-up and critic step
of the tanh-squashed actor-critics (SAC, TD3, DDPG).

One update = every env takes `rollout_len` steps under the behaviour policy (the transitions
go to the on-device replay buffer), then, once `learning_starts` env steps are done,
`gradient_steps` minibatch steps. Before `learning_starts` the behaviour policy acts
uniformly at random over the action box (as Stable-Baselines3 does), which fills the buffer
with diverse actions before the first gradient step.

Continuous actions are stored in the buffer as the unit action in [-1, 1]^D that the critic
sees; the env receives it mapped onto its box (`distributions.to_env_action`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.common.config import chunked_run_sizes, config_from_dict, config_to_dict
from agents.common.counters import env_steps_done, updates_to_reach
from agents.common.distributions import ActionSpec, action_spec_from_space, to_env_action
from agents.common.losses import n_step_returns, twin_critic_loss
from agents.common.networks import Actor, CriticEnsemble, check_offpolicy_network
from agents.common.optim import adam_step
from agents.common.replay import (
    ObsCodec,
    Replay,
    buffer_env_axis,
    make_item,
    make_replay,
    obs_codec,
)
from agents.common.rollout import EnvRunner, Step, collect, runner_env_axis
from agents.common.types import Metrics
from jaxtrade.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class OffPolicySizes:
    """Shape-setting sizes of a replay-based actor-critic (static: changing them recompiles).

    Subclasses add `name`, `network` and `hparams`."""

    num_envs: int = 4
    rollout_len: int = 2  # env steps per env per update
    total_steps: int = 100_000  # env steps over all envs; rounded down to whole chunks
    gradient_steps: int = 1  # minibatch steps per update
    batch_size: int = 256
    buffer_size: int = 100_000  # transitions over all envs
    learning_starts: int = 5_000  # env steps (random actions) before the first gradient step
    updates_per_chunk: int = 1_000  # updates per host call (progress granularity)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Any:
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def run_sizes(self) -> tuple[int, int, int]:
        """(num_updates, updates_per_chunk, steps_per_update) after rounding to whole chunks."""
        return chunked_run_sizes(self.num_envs, self.rollout_len, self.total_steps,
                                 self.updates_per_chunk)

    def check(self) -> None:
        """One clear ConfigError for sizes that cannot train."""
        for key in ("num_envs", "rollout_len", "gradient_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"agent.{key}={getattr(self, key)} is not allowed: must be >= 1")
        num_updates, _, steps_per_update = self.run_sizes()
        last_step = num_updates * steps_per_update
        if self.learning_starts >= last_step:
            raise ConfigError(
                f"agent.learning_starts={self.learning_starts} is not allowed: the run ends at "
                f"env step {last_step} (total_steps rounded to whole chunks), so it would never "
                "learn; lower learning_starts or raise train.total_steps")

    def check_num_envs(self, num_envs: int) -> None:
        if self.buffer_size // max(num_envs, 1) < 2:
            raise ConfigError(f"agent.buffer_size={self.buffer_size} is not allowed: with "
                              f"env.num_envs={num_envs} each env keeps fewer than 2 steps")

    def export_head(self) -> dict[str, Any]:
        """The actor exports as PPO's does (`actor_torso` + `policy_head`): the runner squashes
        the head output as the manifest's action section says (tanh), or takes its argmax."""
        return {"family": "actor_critic"}

    def auto_sizing(self, env: Any, env_params: Any) -> dict[str, Any]:
        """What `env.num_envs=auto` needs (jaxtrade/config/auto.py): per-env collection
        memory, the replay buffer as fixed memory, and few envs per CPU core (more envs only
        lower the gradient steps per env step)."""
        obs = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0))
        obs_bytes = int(np.prod(obs.shape)) * 4
        return {"rollout_len": self.rollout_len,
                "per_env_bytes": self.rollout_len * (2 * obs_bytes + 16) * 4,
                "fixed_bytes": replay_bytes(self.buffer_size, env, env_params),
                "cpu_envs_per_core": 4, "accel_max": 1024}


def replay_bytes(buffer_size: int, env: Any, env_params: Any) -> int:
    """Device bytes of a replay buffer of `buffer_size` transitions on `env` (items as stored:
    compact trading observations, float32 unit actions)."""
    codec = obs_codec(env)
    obs = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0))
    bar = jax.ShapeDtypeStruct((), jnp.int32)
    stored = jax.eval_shape(lambda o, b: codec.encode(o, b if codec.compact else None), obs, bar)
    obs_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(stored))
    space = env.action_space(env_params)
    action_bytes = 4 * int(np.prod(getattr(space, "shape", ()) or (1,)))
    return int(buffer_size * (2 * obs_bytes + action_bytes + 4 + 1 + 1))


def env_axis(state: Any) -> Any:
    """`Agent.env_axis` of a replay agent's state (a `runner` and a `buffer` field): its env
    runner and the buffer's rows lead with the env axis; networks, optimizers, keys don't."""
    flags = jax.tree.map(lambda _: False, state)
    return flags.replace(runner=runner_env_axis(state.runner),
                         buffer=buffer_env_axis(state.buffer))


def example_item(codec: ObsCodec, runner: EnvRunner, action: jax.Array) -> dict[str, Any]:
    """One buffer item shaped like those `collect` records (what flashbax's init needs)."""
    num_envs = runner.done.shape[0]
    zeros = jnp.zeros((num_envs,), jnp.float32)
    false = jnp.zeros((num_envs,), bool)
    info = {"bar": codec.current_bar(runner.env_state)} if codec.compact else {}
    step = Step(runner.obs, runner.done, runner.env_state, action, zeros, false, false,
                runner.obs, runner.obs, info)
    return jax.tree.map(lambda x: x[0], make_item(codec, step))


def random_unit_action(key: jax.Array, spec: ActionSpec, num_envs: int) -> jax.Array:
    """Uniform random actions for `num_envs` envs: indices, or unit vectors in [-1, 1]^D."""
    if spec.kind == "discrete":
        return jax.random.randint(key, (num_envs,), 0, spec.num_actions, jnp.int32)
    return jax.random.uniform(key, (num_envs, spec.dim), jnp.float32, -1.0, 1.0)


# policy(obs [N, ...], env states [N], key) -> (stored action [N(, D)], env action [N, ...])
BehaviourPolicy = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, jax.Array]]


def collect_to_replay(env: Any, env_params: Any, runner: EnvRunner, rng: jax.Array,
                      buffer: Any, replay: Replay, codec: ObsCodec,
                      policy: BehaviourPolicy, num_steps: int
                      ) -> tuple[EnvRunner, jax.Array, Any]:
    """Roll `policy` for `num_steps` steps of every env and add the transitions to `buffer`,
    each with the stored action the policy returned (the unit action, not the env's)."""

    def act(carry, obs, env_state, start, key):
        stored, env_action = policy(obs, env_state, key)
        return carry, env_action, stored

    def record(step: Step, stored: jax.Array, carry: Any) -> dict[str, Any]:
        return {**make_item(codec, step), "action": stored}

    runner, rng, _, records = collect(env, env_params, runner, rng, act, (), record, num_steps)
    return runner, rng, replay.add(buffer, records)


def learn_when_ready(state: Any, ready: jax.Array, learn: Callable[[Any, jax.Array], Any],
                     rng: jax.Array, gradient_steps: int) -> tuple[Any, Metrics]:
    """`gradient_steps` scanned calls of learn(state, key) -> (state, metrics) when `ready`,
    else the state unchanged and zero metrics; metrics are means over the steps."""

    def train(state: Any) -> tuple[Any, Metrics]:
        state, metrics = jax.lax.scan(learn, state, jax.random.split(rng, gradient_steps))
        return state, jax.tree.map(jnp.mean, metrics)

    def skip(state: Any) -> tuple[Any, Metrics]:
        shapes = jax.eval_shape(train, state)[1]
        return state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(ready, train, skip, state)


def collect_and_learn(
    state: Any, env: Any, env_params: Any, replay: Replay, codec: ObsCodec,
    policy: BehaviourPolicy, learn: Callable[[Any, jax.Array], Any], sizes: OffPolicySizes,
    steps_per_update: int,
) -> tuple[Any, Metrics]:
    """One replay-agent update: collect `rollout_len` steps of every env into the buffer, then
    `gradient_steps` learn(state, key) calls once `learning_starts` env steps are done.

    `state` has `runner`, `rng`, `buffer` and `update_step` fields; the returned state has
    `update_step` + 1, the metrics the contract's episode statistics and env steps plus the
    means of learn's metrics (zeros before learning starts)."""
    runner, rng, buffer = collect_to_replay(env, env_params, state.runner, state.rng,
                                            state.buffer, replay, codec, policy,
                                            sizes.rollout_len)
    rng, learn_key = jax.random.split(rng)
    state = state.replace(runner=runner, rng=rng, buffer=buffer)
    # This update's collection ends at env step (update_step + 1) * steps_per_update.
    first_learning_update = updates_to_reach(sizes.learning_starts, steps_per_update)
    ready = jnp.logical_and(state.update_step + 1 >= first_learning_update,
                            replay.can_sample(buffer))
    state, losses = learn_when_ready(state, ready, learn, learn_key, sizes.gradient_steps)
    update_step = state.update_step + 1
    stats = state.runner.episode_stats
    metrics = {
        "episode_return": stats.last_return,
        "episode_length": stats.last_length,
        "env_steps": env_steps_done(update_step, steps_per_update),
        **losses,
    }
    return state.replace(update_step=update_step), metrics


class ReplayBatch(NamedTuple):
    """A sampled minibatch, ready for a target: y = returns + discount * V(next_obs)."""

    obs: Any  # [B, ...] the observations acted on (trading: rebuilt from the market)
    action: jax.Array  # [B(, D)] the stored actions
    returns: jax.Array  # [B] discounted n-step reward sum, cut at the first episode end
    discount: jax.Array  # [B] gamma^m of the bootstrap, 0 where the episode terminated
    next_obs: Any  # [B, ...] the observation to bootstrap from (a truncated end's final one)
    indices: Any  # what prioritized replay updates priorities at
    probabilities: jax.Array  # the sampling probabilities (importance weights)


def sample_batch(replay: Replay, codec: ObsCodec, buffer: Any, key: jax.Array, env_params: Any,
                 gamma: jax.Array, reward_scale: jax.Array | None = None) -> ReplayBatch:
    """Sample sequences [B, n, ...] and turn them into n-step targets' inputs; rewards are
    multiplied by `reward_scale` when given (targets only, never the logged returns)."""
    items, indices, probabilities = replay.sample(buffer, key)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    rewards = time_major(items["reward"])
    if reward_scale is not None:
        rewards = rewards * reward_scale
    returns, discount, last = n_step_returns(rewards, time_major(items["terminated"]),
                                             time_major(items["truncated"]), gamma)
    first = jax.tree.map(lambda x: x[:, 0], items["obs"])
    bootstrap = jax.tree.map(
        lambda x: jnp.take_along_axis(
            x, last.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0], items["next_obs"])
    return ReplayBatch(codec.decode(first, env_params), items["action"][:, 0], returns,
                       discount, codec.decode(bootstrap, env_params), indices, probabilities)


@dataclasses.dataclass(frozen=True)
class TanhActorSizes(OffPolicySizes):
    """Sizes of a tanh-squashed actor-critic (SAC, TD3, DDPG). Subclasses add `name`,
    `network` and `hparams`."""

    def __post_init__(self) -> None:
        # The actor is tanh-squashed by construction; export writes the network's squash
        # into the manifest, so it must say tanh for the runner to squash the same way.
        network = self.network  # type: ignore[attr-defined]
        if network.continuous_squash != "tanh":
            object.__setattr__(self, "network",
                               dataclasses.replace(network, continuous_squash="tanh"))


class ActorCriticParts(NamedTuple):
    """What a tanh-squashed actor-critic builds from its config and env."""

    spec: ActionSpec  # the env's action space (continuous: tanh-squashed onto its box)
    actor: Actor
    critic: CriticEnsemble  # critics stacked on a leading axis
    codec: ObsCodec
    replay: Replay  # one-step transitions
    steps_per_update: int
    to_env: Callable[[jax.Array], jax.Array]  # stored actions [B(, D)] -> env actions [B, ...]


def actor_critic_parts(config: Any, env: Any, env_params: Any, *, discrete: bool,
                       log_std: bool, num_critics: int, other_agents: str) -> ActorCriticParts:
    """Check `config` and the env's action space (`discrete` or continuous actions; the error
    names `other_agents` for the other kind) and build the actor, critics and replay.

    Continuous actors output the pre-tanh action (and a log-std head when `log_std`);
    the unit action tanh(.) in [-1, 1]^D is what the critics and the replay see, and the env
    receives it mapped onto its action box. Discrete actors output logits and the critics Q
    for every action."""
    config.check()
    check_offpolicy_network(config.network, config.name)
    steps_per_update = config.run_sizes()[2]
    spec = action_spec_from_space(env.action_space(env_params), "tanh")
    if discrete != (spec.kind == "discrete"):
        needs = "discrete" if discrete else "continuous"
        raise ConfigError(f"agent.name={config.name!r} needs {needs} actions (the trading "
                          f"env's env.action_mode={needs}); use {other_agents} for "
                          f"{spec.kind} ones")
    obs_shape = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0)).shape
    actor = Actor(config.network, spec.dim, len(obs_shape), log_std=log_std)
    critic = CriticEnsemble(config.network, len(obs_shape),
                            num_outputs=spec.num_actions if discrete else 1,
                            num_critics=num_critics)
    unit_spec = dataclasses.replace(spec, squash="clip")  # unit actions are already in [-1, 1]

    def to_env(stored: jax.Array) -> jax.Array:
        if discrete:
            return stored
        return jax.vmap(lambda a: to_env_action(unit_spec, a))(stored)

    replay = make_replay(config.buffer_size, config.num_envs, config.batch_size, 1)
    return ActorCriticParts(spec, actor, critic, obs_codec(env), replay, steps_per_update,
                            to_env)


def critic_step(q_taken: Callable[[Any], jax.Array], params: Any, opt_state: Any,
                target: jax.Array, learning_rate: jax.Array, max_grad_norm: jax.Array
                ) -> tuple[Any, Any, jax.Array, jax.Array, Any]:
    """One Adam step of the critics on `twin_critic_loss(q_taken(params), target)`:
    (params, opt_state, loss, Q [C, B] before the step, gradients)."""

    def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
        q = q_taken(params)
        return twin_critic_loss(q, target), q

    (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params, opt_state = adam_step(params, grads, opt_state, learning_rate, max_grad_norm)
    return params, opt_state, loss, q, grads
