"""Gymnasium adapters (env_checker), wrappers (log, adversarial frequency, normalization),
the registry's overrides and errors."""


import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import wrappers
from envs.gymnasium_adapter import GymnasiumTradingEnv, GymnasiumVectorTradingEnv
from jaxtrade.errors import ConfigError
from jaxtrade.market import from_arrays

T = 300
RNG = np.random.default_rng(11)
CLOSE = 100 * np.exp(np.cumsum(RNG.normal(0, 0.01, (T, 2)), axis=0))
MARKET = from_arrays(CLOSE, splits=np.array([[0, 200], [200, 250], [250, T]]))


@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_gymnasium_adapter_passes_env_checker(mode):
    env, params = envs.make("trading", MARKET, window_bars=8, episode_bars=20,
                            action_mode=mode)
    gym_env = GymnasiumTradingEnv(env, params)
    check_env(gym_env, skip_render_check=True)
    obs, _ = gym_env.reset(seed=1)
    assert obs.shape == env.observation_shape and obs.dtype == np.float32
    steps, done = 0, False
    while not done:
        obs, reward, term, trunc, info = gym_env.step(gym_env.action_space.sample())
        done, steps = term or trunc, steps + 1
    assert steps == 20 and info["equity"] > 0


def test_vector_adapter_matches_vmapped_env():
    env, params = envs.make("trading", MARKET, window_bars=8, episode_bars=5)
    vec = GymnasiumVectorTradingEnv(env, params, num_envs=4)
    assert isinstance(vec, gymnasium.vector.VectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, *env.observation_shape)
    assert vec.observation_space.contains(obs)
    dones = []
    for _ in range(5):
        obs, reward, term, trunc, info = vec.step(np.array([0, 2, 0, 2]))
        dones.append(term | trunc)
    assert np.all(dones[4]) and not np.any(dones[:4])
    assert info["final_obs"].shape == obs.shape and reward.shape == (4,)
    # After the auto-reset the returned obs is a fresh episode's (flat book), final_obs is not.
    weight = env.window_bars * env.num_assets * env.num_features  # first portfolio value
    assert np.all(obs[:, weight] == 0) and np.all(info["final_obs"][:, weight] != 0)


def test_log_wrapper_reports_finished_episodes():
    env, params = envs.make("trading", MARKET, window_bars=8, episode_bars=7)
    logged = wrappers.LogWrapper(env)
    obs, state = logged.reset(jax.random.PRNGKey(0), params)
    total, equity = 0.0, None
    for i in range(7):
        obs, state, r, te, tr, info = logged.step(jax.random.PRNGKey(i), state, 2, params)
        total += float(r)
        equity = float(info["equity"])
    assert bool(info["returned_episode"]) and int(info["returned_episode_length"]) == 7
    np.testing.assert_allclose(float(info["returned_episode_return"]), total, rtol=1e-5)
    np.testing.assert_allclose(float(info["returned_episode_equity"]), equity, rtol=1e-6)
    # With the log-return reward the episode return is log(final equity).
    np.testing.assert_allclose(total, np.log(equity), atol=1e-5)


def test_adversarial_events_change_outcomes_with_probability_p():
    n = 4000
    probs = {"gap": 0.2, "slippage": 0.1, "obs_noise": 0.3}
    env, params = envs.make("trading", MARKET, window_bars=8, action_mode="continuous")
    adv = wrappers.AdversarialWrapper(env, gap_prob=probs["gap"],
                                      slippage_prob=probs["slippage"],
                                      obs_noise_prob=probs["obs_noise"])
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    _, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    action = jnp.ones((n, 2)) * 0.5  # from flat: every env trades at the next open

    plain = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, action, params)
    shocked = jax.jit(jax.vmap(adv.step, in_axes=(0, 0, 0, None)))(keys, states, action, params)
    flags = {k: np.asarray(shocked[5][f"adversarial_{k}"]) for k in probs}
    for name, p in probs.items():
        assert abs(flags[name].mean() - p) < 4 * np.sqrt(p * (1 - p) / n), name
    # Outcomes change exactly where an event hit: rewards by gaps and slippage shocks, the
    # observed market window only by noise (the portfolio part also sees gaps and costs).
    reward_changed = np.asarray(plain[2]) != np.asarray(shocked[2])
    np.testing.assert_array_equal(reward_changed, flags["gap"] | flags["slippage"])
    window = env.window_bars * env.num_assets * env.num_features
    window_changed = np.any(np.asarray(plain[0])[:, :window] != np.asarray(shocked[0])[:, :window],
                            axis=1)
    np.testing.assert_array_equal(window_changed, flags["obs_noise"])
    slip_only = flags["slippage"] & ~flags["gap"]
    assert np.all(np.asarray(shocked[5]["costs"])[slip_only]
                  > np.asarray(plain[5]["costs"])[slip_only])


def test_normalize_observation_standardizes_over_time():
    scaled = from_arrays(CLOSE, features=np.log(CLOSE)[:, :, None] * 50 + 7)
    env, params = envs.make("trading", scaled, window_bars=4, include_portfolio=False)
    norm = wrappers.NormalizeObservation(env)
    obs, state = norm.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(norm.step)
    seen = []
    for i in range(200):
        obs, state, *_ = step(jax.random.PRNGKey(i), state, 1, params)
        seen.append(np.asarray(obs))
    seen = np.array(seen[50:])
    assert np.all(np.abs(seen.mean(0)) < 2.0) and np.all(np.abs(seen) <= 10.0)
    assert np.all(np.abs(np.asarray(state.mean)) > 100)  # the raw scale was far from 0


def test_registry_overrides_and_errors():
    env, nested = envs.make("trading", MARKET, costs={"fee_bps": 3.0}, risk={"pause_bars": 5})
    _, dotted = envs.make("trading", MARKET, **{"costs.fee_bps": 3.0, "risk.pause_bars": 5})
    _, flat = envs.make("trading", MARKET, fee_bps=3.0, pause_bars=5, split="validation")
    for p in (nested, dotted, flat):
        assert float(p.costs.fee_bps) == 3.0 and int(p.risk.pause_bars) == 5
    assert int(flat.split) == 1 and flat.split.dtype == jnp.int32
    with pytest.raises(ConfigError, match="'fee_bp'.*'fee_bps'"):
        envs.make("trading", MARKET, fee_bp=1.0)
    with pytest.raises(ConfigError, match="costs.slipage_cap_bps.*costs.slippage_cap_bps"):
        envs.make("trading", MARKET, costs={"slipage_cap_bps": 1.0})
    with pytest.raises(ConfigError, match="window_bar'.*'window_bars'"):
        envs.make("trading", MARKET, window_bar=3)
    with pytest.raises(ConfigError, match="action_mode"):
        envs.make("trading", MARKET, action_mode="box")
    with pytest.raises(ConfigError, match="'tradng'.*'trading'"):
        envs.make("tradng", MARKET)
    with pytest.raises(ConfigError, match="split 'test'.*too short"):
        envs.make("trading", from_arrays(CLOSE), split="test")  # default: test split empty
    window_env, p = envs.make("trading", MARKET, window_bars=6, obs_layout="window")
    assert window_env.observation_shape == (6, 2 * 1 + 3 * 2 + 2)
    obs, _ = window_env.reset(jax.random.PRNGKey(0), p)
    assert obs.shape == (6, 10)
    assert env.name == "trading" and env.num_actions == 3
    assert env.observation_space(p).shape == env.observation_shape


def test_normalize_observation_normalizes_the_final_observation_too():
    # A learner bootstraps V(final_observation): it must be in the same space as obs.
    scaled = from_arrays(CLOSE, features=np.log(CLOSE)[:, :, None] * 50 + 7)
    env, params = envs.make("trading", scaled, window_bars=4, include_portfolio=False,
                            final_observation=True, episode_bars=10)
    norm = wrappers.NormalizeObservation(env)
    _, state = norm.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(norm.step)
    ends = 0
    for i in range(40):
        raw_before = state
        obs, state, _, term, trunc, info = step(jax.random.PRNGKey(i), state, 1, params)
        final = np.asarray(info["final_observation"])
        _, _, _, _, _, raw_info = env.step(jax.random.PRNGKey(i), raw_before.env_state, 1, params)
        expected = np.clip((np.asarray(raw_info["final_observation"]) - np.asarray(state.mean))
                           / np.sqrt(np.asarray(state.var) + norm.eps), -norm.clip, norm.clip)
        np.testing.assert_allclose(final, expected, rtol=1e-5, atol=1e-5)
        if bool(term | trunc):
            ends += 1
            assert np.abs(final).max() < 50  # normalized, not the raw scale (~ 250)
        else:
            np.testing.assert_allclose(final, np.asarray(obs), rtol=1e-6, atol=1e-6)
    assert ends >= 3
