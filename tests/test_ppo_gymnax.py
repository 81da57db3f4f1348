"""PPO learns on gymnax's classic-control tasks, vmapped seeds/hyperparameters are exact."""

from __future__ import annotations

import gymnax
import jax
import numpy as np
import pytest

import agents
from agents import NetworkConfig, PPOConfig, PPOHParams
from jaxtrade.xla import jit_light


@pytest.mark.slow
def test_ppo_solves_cartpole_three_seeds_in_one_program():
    env, env_params = gymnax.make("CartPole-v1")
    config = PPOConfig(
        num_envs=4, rollout_len=128, total_steps=500_000, num_minibatches=4, update_epochs=4,
        updates_per_chunk=61,
    )
    train = agents.make_train(config, env, env_params)
    out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 3))
    returns = np.asarray(out.metrics["ppo/episode_return"])  # [3 seeds, num_updates]
    assert returns.shape == (3, config.run_sizes()[0])
    assert float(out.metrics["ppo/env_steps"][0, -1]) <= 500_000
    final = returns[:, -10:].mean(axis=1)
    assert np.all(final >= 475.0), final


@pytest.mark.slow
def test_continuous_ppo_solves_pendulum():
    # Pendulum needs bootstrapped truncation (every episode is cut at 200 steps), a short
    # horizon and scaled rewards; with these it is solved in ~150k steps.
    env, env_params = gymnax.make("Pendulum-v1")
    config = PPOConfig(
        num_envs=16, rollout_len=128, total_steps=204_800, num_minibatches=16, update_epochs=10,
        updates_per_chunk=10, network=NetworkConfig(log_std_init=-0.5),
        hparams=PPOHParams(learning_rate=1e-3, ent_coef=0.0, gamma=0.95, gae_lambda=0.95,
                           reward_scale=0.1),
    )
    train = agents.make_train(config, env, env_params)
    out = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(1), 2))
    final = np.asarray(out.metrics["ppo/episode_return"])[:, -5:].mean(axis=1)
    assert np.all(final >= -250.0), final
    # The learned deterministic policy also swings up and balances on fresh episodes.
    agent = agents.make_agent(config, env, env_params)
    params = jax.tree.map(lambda x: x[0], out.state.params)

    def episode(key):
        obs, state = env.reset(key, env_params)

        def step(carry, key):
            obs, state = carry
            action, _ = agent.act(params, obs, state, env_params, key, (), True)
            obs, state, reward, _, _, _ = env.step(key, state, action, env_params)
            return (obs, state), reward

        _, rewards = jax.lax.scan(step, (obs, state), jax.random.split(key, 200))
        return rewards.sum()

    returns = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(7), 16))
    assert float(returns.mean()) >= -250.0, returns


def test_vmapped_learning_rates_and_seeds_equal_single_runs():
    env, env_params = gymnax.make("CartPole-v1")
    config = PPOConfig(num_envs=4, rollout_len=32, total_steps=4 * 32 * 4, num_minibatches=2,
                       update_epochs=2, updates_per_chunk=2)
    train = agents.make_train(config, env, env_params)
    learning_rates = [1e-4, 3e-4, 1e-3, 3e-3]
    runs = [(lr, seed) for lr in learning_rates for seed in (0, 1)]
    hparams = agents.stack_hparams([config.hparams.replace(learning_rate=lr) for lr, _ in runs])
    keys = jax.numpy.stack([jax.random.key(seed) for _, seed in runs])
    batched = jax.jit(jax.vmap(train))(keys, hparams)
    for i, (lr, seed) in enumerate(runs):
        single = train(jax.random.key(seed), config.hparams.replace(learning_rate=lr))
        for name in ("loss", "episode_return", "approx_kl", "grad_norm"):
            np.testing.assert_allclose(
                batched.metrics[f"ppo/{name}"][i], single.metrics[f"ppo/{name}"], rtol=2e-4,
                atol=1e-5, err_msg=name
            )
        for got, want in zip(jax.tree.leaves(batched.state.params), jax.tree.leaves(
                single.state.params)):
            np.testing.assert_allclose(got[i], want, rtol=2e-4, atol=2e-5)
    # Different learning rates really produced different runs (the sweep is not a no-op).
    assert not np.allclose(batched.metrics["ppo/loss"][0], batched.metrics["ppo/loss"][2])


def test_chunked_progress_run_matches_single_program():
    env, env_params = gymnax.make("CartPole-v1")
    config = PPOConfig(num_envs=4, rollout_len=16, total_steps=4 * 16 * 6, num_minibatches=2,
                       update_epochs=1, updates_per_chunk=2)
    whole = agents.make_train(config, env, env_params)(jax.random.key(3))
    # Host-driven chunks, as experiments/loop.run_loop calls them between logs/checkpoints.
    agent = agents.make_agent(config, env, env_params)
    run_chunk = jax.jit(agent.run_chunk)
    state = jit_light(agent.init)(jax.random.key(3), None, env_params)
    seen, history = [], []
    for _ in range(3):
        state, metrics = run_chunk(state, env_params)
        seen.append(int(agent.env_steps(state)))
        history.append(jax.device_get(metrics))
    chunked_metrics = {k: np.concatenate([h[k] for h in history]) for k in history[0]}
    assert seen == [128, 256, 384]
    for name, values in whole.metrics.items():
        assert values.shape == (6,)
        assert np.all(np.isfinite(values)), name
        np.testing.assert_allclose(chunked_metrics[name], values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(whole.metrics["ppo/env_steps"], 64.0 * np.arange(1, 7))


def test_resume_from_state_continues_identically():
    env, env_params = gymnax.make("CartPole-v1")
    config = PPOConfig(num_envs=4, rollout_len=16, total_steps=4 * 16 * 4, num_minibatches=2,
                       update_epochs=1, updates_per_chunk=2)
    agent = agents.make_agent(config, env, env_params)
    run_chunk = jax.jit(agent.run_chunk)
    state = jit_light(agent.init)(jax.random.key(5), None, env_params)
    state, _ = run_chunk(state, env_params)
    # A host round trip (what a checkpoint does) must not change the continuation.
    restored = jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)) if not
                            jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, state)
    a, metrics_a = run_chunk(state, env_params)
    b, metrics_b = run_chunk(restored, env_params)
    for got, want in zip(jax.tree.leaves(b), jax.tree.leaves(a)):
        if jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(metrics_a["ppo/loss"], metrics_b["ppo/loss"])
