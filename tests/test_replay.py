"""Replay of compact trading transitions: rebuilt observations equal the collected ones bit for
bit; sampled sequences are consecutive steps of one env; prioritized replay weights."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents.common.replay import buffer_bytes, make_item, make_replay, obs_codec
from agents.common.rollout import collect, reset_runner
from jaxtrade.market import from_arrays


def _market(num_bars: int = 400, num_assets: int = 2, num_features: int = 3):
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((num_bars, num_assets)), axis=0))
    features = rng.standard_normal((num_bars, num_assets, num_features)).astype(np.float32)
    splits = np.array([[0, 300], [300, 350], [350, num_bars]])
    return from_arrays(close, features=features, splits=splits)


@pytest.mark.parametrize("layout,portfolio", [("flat", True), ("window", True),
                                              ("flat", False)])
def test_rebuilt_observations_equal_collected_ones_bit_for_bit(layout: str,
                                                               portfolio: bool) -> None:
    env, env_params = envs.make("trading", _market(), window_bars=8, obs_layout=layout,
                                episode_bars=20, final_observation=True,
                                action_mode="continuous", include_portfolio=portfolio)
    codec = obs_codec(env)
    assert codec.compact
    num_envs, steps = 4, 60  # several episode ends (truncation) per env
    runner = reset_runner(env, env_params, jax.random.key(0), num_envs)

    def policy(carry, obs, env_state, start, key):
        return carry, jax.random.uniform(key, (num_envs, 2), minval=-1.0, maxval=1.0), None

    def record(step, aux, carry):
        return {"item": make_item(codec, step), "obs": step.obs, "final": step.final_obs,
                "done": step.terminated | step.truncated}

    _, _, _, out = jax.jit(lambda r: collect(env, env_params, r, jax.random.key(1), policy, (),
                                             record, steps))(runner)
    assert bool(out["done"].any())
    rebuilt = codec.decode(out["item"]["obs"], env_params)
    rebuilt_next = codec.decode(out["item"]["next_obs"], env_params)
    np.testing.assert_array_equal(np.asarray(rebuilt), np.asarray(out["obs"]))
    np.testing.assert_array_equal(np.asarray(rebuilt_next), np.asarray(out["final"]))
    # What is stored per observation: one bar index and the 3 A + 2 portfolio values.
    stored = jax.tree.map(lambda x: x[0, 0], out["item"]["obs"])
    assert stored["bar"].dtype == jnp.int32
    assert stored["portfolio"].shape == ((3 * 2 + 2,) if portfolio else (0,))


def test_other_envs_and_wrapped_trading_envs_store_observations_as_they_are() -> None:
    cartpole, _ = gymnax.make("CartPole-v1")
    assert not obs_codec(cartpole).compact
    env, _ = envs.make("trading", _market())
    assert not obs_codec(envs.wrappers.NormalizeObservation(env)).compact


def test_sampled_sequences_are_consecutive_steps_of_one_env() -> None:
    num_envs, steps, n = 3, 40, 4
    replay = make_replay(buffer_size=num_envs * 16, num_envs=num_envs, batch_size=32, n_step=n)
    t = jnp.arange(steps)[:, None] * 10 + jnp.arange(num_envs)[None, :]  # time * 10 + env
    records = {"obs": t, "action": t, "reward": t.astype(jnp.float32),
               "terminated": jnp.zeros_like(t, bool), "truncated": jnp.zeros_like(t, bool),
               "next_obs": t + 10}
    state = replay.init(jax.tree.map(lambda x: x[0, 0], records))
    for start in range(0, steps, 4):  # added in rollouts of 4 steps, wrapping the ring
        state = replay.add(state, jax.tree.map(lambda x, s=start: x[s:s + 4], records))
    items, _, _ = replay.sample(state, jax.random.key(0))
    obs = np.asarray(items["obs"])  # [B, n]
    assert obs.shape == (32, n)
    np.testing.assert_array_equal(np.diff(obs, axis=1), 10)  # consecutive steps, same env
    np.testing.assert_array_equal(np.asarray(items["next_obs"])[:, :-1], obs[:, 1:])
    assert obs.min() >= (steps - 16) * 10  # only what the ring still holds
    assert buffer_bytes(state) >= 16 * num_envs * (4 * 2 + 4 + 4 + 2)


def test_prioritized_replay_samples_by_priority_and_weights_by_it() -> None:
    num_envs = 2
    replay = make_replay(buffer_size=num_envs * 8, num_envs=num_envs, batch_size=16, n_step=1,
                         prioritized=True, priority_exponent=1.0)
    t = jnp.arange(8)[:, None] * 10 + jnp.arange(num_envs)[None, :]
    records = {"obs": t, "reward": jnp.zeros(t.shape), "terminated": jnp.zeros(t.shape, bool),
               "truncated": jnp.zeros(t.shape, bool), "action": t, "next_obs": t}
    state = replay.add(replay.init(jax.tree.map(lambda x: x[0, 0], records)), records)
    items, indices, probs = replay.sample(state, jax.random.key(0))
    # Give one item 9x the priority of each other: it is drawn ~9/(9+15) of the time.
    favourite = int(indices[0])
    priorities = jnp.where(jnp.arange(16) == favourite, 9.0, 1.0)
    state = replay.set_priorities(state, jnp.arange(16), priorities)
    draws = [replay.sample(state, jax.random.key(k)) for k in range(1, 126)]
    indices = jnp.concatenate([d[1] for d in draws])
    probs = jnp.concatenate([d[2] for d in draws])
    share = float(np.mean(np.asarray(indices) == favourite))
    assert share == pytest.approx(9 / 24, abs=0.04)
    weights = replay.importance_weights(state, probs, 1.0)
    # (N P)^-1 normalized by the max: the favourite weighs 1/9 of the others.
    fav = np.asarray(weights)[np.asarray(indices) == favourite]
    other = np.asarray(weights)[np.asarray(indices) != favourite]
    np.testing.assert_allclose(fav, 1 / 9, rtol=1e-4)
    np.testing.assert_allclose(other, 1.0, rtol=1e-4)
