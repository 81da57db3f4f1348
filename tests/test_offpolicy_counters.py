"""The replay agents' env-step clocks past 2**31 env steps, and unchanged below it.

They counted env steps as int32 `update_step * steps_per_update`, which wraps past 2**31 env
steps (32,768 updates of 65,536 envs): the learning gate switched off, SAC/TD3 went back to
random actions and DQN's epsilon jumped back to its start, silently (and DQN's epsilon
schedule could not even be built for a run of more than 2**31 env steps). The counts now
cannot wrap in a run the validator allows; every run that did not wrap computes the same
bits as before.
"""

from __future__ import annotations

import functools

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents.common.config import hparams_as_arrays
from agents.common.counters import INT32_MAX, env_steps_done, updates_to_reach
from agents.dqn import DQNHParams, epsilon_at

STEPS_PER_UPDATE = (1, 3, 7, 10, 64, 100, 1000, 4096, 65_536, 1_000_003)


def wrap_limit(steps_per_update: int) -> int:
    """The last update step whose env steps fit int32 (the old clock's range)."""
    return INT32_MAX // steps_per_update


def normal_update_steps(steps_per_update: int, seed: int = 0) -> np.ndarray:
    """Update steps of runs that never wrapped: the start, around 2**24 env steps and 2**24
    updates (where float32 starts to round), random ones, and the last one before the wrap."""
    limit = wrap_limit(steps_per_update)
    rng = np.random.default_rng(seed)
    around = [0, 2**24 // steps_per_update, 2**24, limit]
    steps = [np.arange(0, 2_000)] + [np.arange(c - 500, c + 500) for c in around]
    steps.append(rng.integers(0, limit + 1, 20_000))
    steps = np.concatenate(steps)
    return np.unique(steps[(steps >= 0) & (steps <= limit)]).astype(np.int32)


def old_epsilon(
    hp: DQNHParams, update_step: jax.Array, steps_per_update: int, total_steps: int
) -> jax.Array:
    """DQN's epsilon as it was computed before (int32 env steps)."""
    env_steps = update_step * steps_per_update
    decay_steps = jnp.maximum(hp.epsilon_decay_fraction * total_steps, 1.0)
    frac = jnp.clip(env_steps.astype(jnp.float32) / decay_steps, 0.0, 1.0)
    return hp.epsilon_start + frac * (hp.epsilon_end - hp.epsilon_start)


def new_epsilon(
    hp: DQNHParams, update_step: jax.Array, steps_per_update: int, total_steps: int
) -> jax.Array:
    """DQN's epsilon as agents/dqn.py computes it now."""
    return epsilon_at(hp, env_steps_done(update_step, steps_per_update), total_steps)


# As in the agents: hyperparameters traced, sizes Python constants of the program.
STATIC = ("steps_per_update", "total_steps")
old_epsilon_jit = jax.jit(old_epsilon, static_argnames=STATIC)
new_epsilon_jit = jax.jit(new_epsilon, static_argnames=STATIC)


@functools.partial(jax.jit, static_argnums=(1, 2))
def old_gate(update_step: jax.Array, steps_per_update: int, learning_starts: int) -> jax.Array:
    return update_step * steps_per_update + steps_per_update >= learning_starts


@functools.partial(jax.jit, static_argnums=(1,))
def new_gate(update_step: jax.Array, first_learning_update: int) -> jax.Array:
    return update_step + 1 >= first_learning_update


def bits(x: jax.Array) -> np.ndarray:
    return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize("steps_per_update", STEPS_PER_UPDATE)
def test_env_steps_and_epsilon_are_bit_identical_in_runs_that_did_not_wrap(
    steps_per_update: int,
) -> None:
    u = jnp.asarray(normal_update_steps(steps_per_update))
    old_steps = jax.jit(lambda u: (u * steps_per_update).astype(jnp.float32))(u)
    new_steps = jax.jit(lambda u: env_steps_done(u, steps_per_update))(u)
    np.testing.assert_array_equal(bits(new_steps), bits(old_steps))
    hps = [
        DQNHParams(),
        DQNHParams(epsilon_start=0.9, epsilon_end=0.03, epsilon_decay_fraction=0.37),
    ]
    # Run lengths as DQN computes them (num_updates * steps_per_update), including ones that
    # float32 cannot hold exactly; the old schedule only built up to int32's range.
    totals = {
        steps_per_update * n for n in (1, 50_000, 12_345_677) if steps_per_update * n <= INT32_MAX
    }
    totals.add(wrap_limit(steps_per_update) * steps_per_update)
    for hp in hps:
        hp = hparams_as_arrays(hp)
        for total in sorted(totals):
            old = old_epsilon_jit(hp, u, steps_per_update=steps_per_update, total_steps=total)
            new = new_epsilon_jit(hp, u, steps_per_update=steps_per_update, total_steps=total)
            np.testing.assert_array_equal(bits(new), bits(old), err_msg=f"total={total}")


@pytest.mark.parametrize("steps_per_update", STEPS_PER_UPDATE)
def test_learning_gate_and_random_phase_are_the_same_in_update_units(steps_per_update: int) -> None:
    u = normal_update_steps(steps_per_update).astype(np.int64)
    s = steps_per_update
    starts = {0, 1, s - 1, s, s + 1, 5_000, 10_000, 12_345, 2**24 + 3, INT32_MAX - 1}
    for learning_starts in sorted(starts):
        first = updates_to_reach(learning_starts, s)
        # Collect-then-learn gate (agents/common/offpolicy.py) and SAC/TD3's random phase.
        np.testing.assert_array_equal(u + 1 >= first, u * s + s >= learning_starts)
        np.testing.assert_array_equal(u < first, u * s < learning_starts)
    # The int32 forms the agents evaluate agree with the exact ones wherever they did not wrap.
    u32 = jnp.asarray(u[(u + 1) * s <= INT32_MAX], jnp.int32)
    for learning_starts in (0, s, 10_000, 2**24 + 3):
        first = updates_to_reach(learning_starts, s)
        old = old_gate(u32, s, learning_starts)
        new = new_gate(u32, first)
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


def test_counts_past_two_to_the_31_env_steps_do_not_wrap() -> None:
    s = 65_536
    u = jnp.asarray([32_767, 32_768, 40_000, 2**31 - 2], jnp.int32)
    np.testing.assert_allclose(
        np.asarray(env_steps_done(u, s)), np.asarray(u, np.float64) * s, rtol=1e-7
    )
    assert np.asarray(env_steps_done(u, s)).min() > 0
    # The old clock: negative past the wrap, so epsilon went back to its start.
    assert int(u[1] * s) < 0
    hp = hparams_as_arrays(DQNHParams(epsilon_decay_fraction=1.0))
    total = 40_000 * s
    eps = np.asarray(epsilon_at(hp, env_steps_done(u[:3], s), total))
    np.testing.assert_allclose(
        eps, 1.0 - np.array([32_767, 32_768, 40_000]) / 40_000 * 0.99, rtol=1e-6
    )
    assert updates_to_reach(10_000, s) == 1 and updates_to_reach(0, s) == 0
    assert updates_to_reach(10**20, s) == INT32_MAX  # never reached by an int32 counter


@pytest.mark.parametrize("name", ["dqn", "sac_discrete"])
def test_replay_agents_learn_and_decay_epsilon_past_two_to_the_31_env_steps(name: str) -> None:
    """One chunk of two updates of 65,536 CartPole envs, started at update 32,767: the env
    steps at their ends, 32,768 and 32,769 x 65,536, wrapped past 2**31 in int32."""
    env, env_params = gymnax.make("CartPole-v1")
    num_envs, num_updates = 65_536, 40_000
    data = {
        "name": name,
        "num_envs": num_envs,
        "rollout_len": 1,
        "total_steps": num_updates * num_envs,
        "updates_per_chunk": 2,
        "buffer_size": 4 * num_envs,
        "batch_size": 32,
        "learning_starts": 10_000,
    }
    if name == "dqn":  # one-step targets: the buffer holds too few steps per env for n-step
        data["n_step"] = 1
        data["hparams"] = {"epsilon_decay_fraction": 1.0}
    agent = agents.make_agent(agents.config_from_dict(data), env, env_params)
    assert agent.num_updates == num_updates
    state = agent.init(jax.random.key(0), None, env_params)
    state = state.replace(update_step=jnp.asarray(32_767, jnp.int32))
    state, metrics = jax.jit(agent.run_chunk)(state, env_params)
    metrics = {key.split("/", 1)[1]: value for key, value in metrics.items()}  # dqn/, sac/...
    assert int(state.update_step) == 32_769
    steps = np.asarray(metrics["env_steps"])
    np.testing.assert_array_equal(steps, np.array([32_768, 32_769], np.float64) * num_envs)
    # Both updates learned: the old gate, (update_step + 1) * 65,536 >= learning_starts, read
    # -2**31 for the first and -2**31 + 65,536 for the second.
    loss = np.asarray(metrics["loss"])
    assert np.all(loss != 0.0), loss
    if name == "dqn":
        np.testing.assert_allclose(
            np.asarray(metrics["epsilon"]),
            1.0 - np.array([32_767, 32_768]) / num_updates * 0.99,
            rtol=1e-6,
        )


@pytest.mark.parametrize("name", ["ppo", "dqn", "sac_discrete"])
def test_protocol_env_steps_are_exact_past_two_to_the_31(name: str) -> None:
    """`Agent.env_steps` was the int32 product `update_step * steps_per_update`: negative at
    update 32,768 of 65,536 envs. It is now exact int64 (no JAX 64-bit mode), for one state
    and for a batch of points, up to the largest update count int32 holds."""
    env, env_params = gymnax.make("CartPole-v1")
    num_envs = 65_536
    data = {"name": name, "num_envs": num_envs, "rollout_len": 1,
            "total_steps": 40_000 * num_envs}
    if name != "ppo":
        data.update(buffer_size=4 * num_envs, learning_starts=10_000)
    agent = agents.make_agent(agents.config_from_dict(data), env, env_params)
    assert agent.steps_per_update == num_envs
    assert not jax.config.jax_enable_x64
    state = agent.init(jax.random.key(0), None, env_params)
    for update in (0, 1, 32_767, 32_768, 40_000, INT32_MAX):
        steps = agent.env_steps(state.replace(update_step=jnp.asarray(update, jnp.int32)))
        assert steps.dtype == np.int64 and int(steps) == update * num_envs
    assert int(agent.env_steps(state.replace(update_step=jnp.asarray(32_768, jnp.int32)))) \
        == 2**31  # the old clock read -2**31 here
    batch = jnp.asarray([32_767, 32_768, INT32_MAX], jnp.int32)
    np.testing.assert_array_equal(
        agent.env_steps(state.replace(update_step=batch)),
        np.array([32_767, 32_768, INT32_MAX], np.int64) * num_envs,
    )
