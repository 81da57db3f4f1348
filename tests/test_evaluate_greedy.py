"""agents.common.evaluate.greedy_returns against a plain Python loop over the same env steps."""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

import agents
from agents.common.evaluate import greedy_returns


def test_greedy_returns_match_a_python_episode_loop() -> None:
    """A policy that pushes right whenever the pole leans right: each evaluation episode's
    return equals the number of steps a step-by-step loop with the same keys survives, and
    steps after the episode ends (gymnax resets inside step) are not counted."""
    env, env_params = gymnax.make("CartPole-v1")
    agent = agents.make_agent(agents.config_from_dict({"name": "dqn", "total_steps": 20_000,
                                                       "learning_starts": 1_000}),
                              env, env_params)

    def act(params, obs, env_state, env_params, key, carry=None, deterministic=False):
        action = (obs[2] + params * obs[3] > 0).astype(jnp.int32)  # angle + w * angular velocity
        return action, carry

    agent = agent._replace(act=act)
    key = jax.random.key(3)
    for weight in (0.0, 0.5):
        got = np.asarray(jax.jit(lambda k, w=weight: greedy_returns(
            agent, w, env, env_params, k, 4, max_steps=200))(key))
        expected = []
        for episode_key in jax.random.split(key, 4):
            reset_key, steps_key = jax.random.split(episode_key)
            obs, state = env.reset(reset_key, env_params)
            total = 0.0
            for step_key in jax.random.split(steps_key, 200):
                _, env_key = jax.random.split(step_key)
                action, _ = act(weight, obs, state, env_params, None)
                obs, state, reward, terminated, truncated, _ = env.step(
                    env_key, state, action, env_params)
                total += float(reward)
                if bool(terminated) or bool(truncated):
                    break
            expected.append(total)
        np.testing.assert_allclose(got, expected)
    assert got.max() > 100 and got.min() >= 1  # the leaning-aware policy balances a while


def test_selection_keeps_the_best_validated_network_and_tests_it_on_fresh_episodes() -> None:
    """make_train_select_and_evaluate: checkpoints every 4 of 20 chunks and after the last;
    the kept network is the latest with the best validation mean, replaying its validation
    episodes gives that mean again, and its test returns are its own on the test episodes
    (those of the final network, which is make_train_and_evaluate's)."""
    from agents.common.evaluate import make_train_and_evaluate, make_train_select_and_evaluate

    env, env_params = gymnax.make("CartPole-v1")
    config = agents.config_from_dict({"name": "dqn", "total_steps": 10_000,
                                      "learning_starts": 1_000, "updates_per_chunk": 50})
    agent = agents.make_agent(config, env, env_params)
    keys = jax.random.split(jax.random.key(5), 2)
    out = jax.jit(jax.vmap(make_train_select_and_evaluate(config, env, env_params, 6, 4, 6)))(
        keys)
    _, final = jax.jit(jax.vmap(make_train_and_evaluate(config, env, env_params, 6)))(keys)
    np.testing.assert_allclose(out.final, final)
    validation = np.asarray(out.validation)
    assert validation.shape == (2, 5)  # after chunks 4, 8, 12, 16, 20
    assert len(np.unique(validation)) > 3  # the checkpoints are different networks
    play = jax.jit(lambda params, key: greedy_returns(agent, params, env, env_params, key, 6))
    for seed, key in enumerate(keys):
        scores = validation[seed]
        latest_best = len(scores) - 1 - int(np.argmax(scores[::-1]))
        chunk = 4 * (latest_best + 1)
        assert int(out.selected_chunk[seed]) == chunk
        params = jax.tree.map(lambda leaf, s=seed: leaf[s], out.selected_params)
        _, test_key = jax.random.split(key)
        replay = play(params, jax.random.fold_in(jax.random.fold_in(test_key, 1), chunk - 1))
        np.testing.assert_allclose(float(np.mean(replay)), scores[latest_best], rtol=1e-6)
        np.testing.assert_allclose(play(params, test_key), out.selected[seed])
        if chunk == 20:
            np.testing.assert_allclose(out.selected[seed], out.final[seed])
