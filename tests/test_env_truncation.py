"""Truncation bootstrapping: the env's `final_observation` option and PPO's use of it.

The pre-reset observation is checked against an independent replay with `step_env` (no
auto-reset) and `is_truncated`; PPO's stored GAE reward at a truncated step is checked to be the
raw reward plus gamma * V(that observation), with V evaluated here from the rollout's parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import ppo
from agents.common.distributions import to_env_action
from agents.common.networks import NetworkConfig
from experiments import common
from jaxtrade.errors import ConfigError
from jaxtrade.market import from_arrays
from jaxtrade.xla import jit_light

T = 160
RNG = np.random.default_rng(5)
CLOSE = 100 * np.exp(np.cumsum(RNG.normal(0, 0.01, (T, 2)), axis=0))
MARKET = from_arrays(CLOSE, splits=np.array([[0, 120], [120, 140], [140, T]]))
EPISODE_BARS = 6


def make(**kw):
    return envs.make("trading", MARKET, window_bars=4, episode_bars=EPISODE_BARS, **kw)


@pytest.mark.parametrize("layout", [{}, {"obs_layout": "window"}, {"include_portfolio": False}])
def test_final_observation_is_the_pre_reset_observation(layout):
    env, params = make(final_observation=True, **layout)
    step_env = jax.jit(env.step_env)
    is_truncated = jax.jit(env.is_truncated)
    obs, state = env.reset(jax.random.key(0), params)
    truncations = 0
    for i in range(3 * EPISODE_BARS + 2):
        key, action = jax.random.key(100 + i), i % 3
        ref_obs, ref_state, ref_reward, ref_term, _ = step_env(key, state, action, params)
        ref_trunc = bool(is_truncated(ref_state, params)) and not bool(ref_term)
        obs, state, reward, term, trunc, info = env.step(key, state, action, params)
        final = info["final_observation"]
        assert final.shape == obs.shape == env.observation_shape and final.dtype == obs.dtype
        assert bool(trunc) == ref_trunc and not bool(term)
        # Separately compiled programs may round differently in the last bits (equity ~ 1).
        np.testing.assert_allclose(float(reward), float(ref_reward), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final, ref_obs, rtol=1e-5, atol=1e-6)
        if ref_trunc:
            truncations += 1
            # The returned obs starts a new episode (flat book), the final one does not.
            assert int(state.time) == 0
            np.testing.assert_allclose(obs, env.get_obs(state, params), rtol=1e-5, atol=1e-6)
            assert not np.allclose(final, obs)
        else:
            assert int(state.time) == (i % EPISODE_BARS) + 1
            np.testing.assert_array_equal(final, obs)
    assert truncations == 3


def test_option_off_by_default_and_adds_nothing():
    env_off, params = make()
    env_on, _ = make(final_observation=True)
    assert not env_off.final_observation and env_on.final_observation
    assert env_off != env_on  # different static settings: separate compiled programs
    key = jax.random.key(3)
    obs_off, s_off = env_off.reset(key, params)
    obs_on, s_on = env_on.reset(key, params)
    ends = 0
    for i in range(EPISODE_BARS + 1):
        k = jax.random.key(i)
        obs_off, s_off, r_off, _, tr_off, info_off = env_off.step(k, s_off, 2, params)
        obs_on, s_on, r_on, _, tr_on, info_on = env_on.step(k, s_on, 2, params)
        assert "final_observation" not in info_off
        assert set(info_on) - set(info_off) == {"final_observation"}
        np.testing.assert_array_equal(obs_off, obs_on)
        assert float(r_off) == float(r_on) and bool(tr_off) == bool(tr_on)
        ends += int(tr_on)
    assert ends == 1  # the loop crossed an episode end
    with pytest.raises(ConfigError, match="final_observation must be true or false"):
        make(final_observation="false")


def test_training_config_turns_it_on():
    for argv in ([], ["agent=cvar_ppo"]):
        cfg = common.compose(argv)
        assert cfg["env"]["final_observation"] is True
        cfg["env"]["window_bars"] = 4
        env, _ = common.build_env(cfg, MARKET)
        assert env.final_observation
    cfg = common.compose(["env.final_observation=false", "env.window_bars=4"])
    assert not common.build_env(cfg, MARKET)[0].final_observation
    with pytest.raises(ConfigError, match="env.final_observation"):
        common.compose(["env.final_observation=sometimes"])


def test_ppo_bootstraps_truncated_steps_with_value_of_final_observation():
    # Eval-mode episodes start at a fixed bar (3) and truncate at the split's last bar (23),
    # so a replay of the agent's actions needs no knowledge of its random keys.
    market = from_arrays(CLOSE, splits=np.array([[0, 24], [24, 40], [40, T]]))
    env, env_params = envs.make("trading", market, window_bars=4, eval_mode=True,
                                final_observation=True)
    num_envs, rollout_len, gamma = 3, 45, 0.9
    config = ppo.PPOConfig(
        num_envs=num_envs, rollout_len=rollout_len, total_steps=num_envs * rollout_len,
        num_minibatches=1, update_epochs=1, updates_per_chunk=1,
        network=NetworkConfig(hidden_sizes=(16,)), hparams=ppo.PPOHParams(gamma=gamma),
    )
    fields = ("obs", "action", "value", "reward", "raw_reward", "done")

    def init_extra(hp):  # room for the one rollout the update sees
        obs_shape = (rollout_len, num_envs, *env.observation_shape)
        shape = (rollout_len, num_envs)
        return {"obs": jnp.zeros(obs_shape), "action": jnp.zeros(shape, jnp.int32),
                "value": jnp.zeros(shape), "reward": jnp.zeros(shape),
                "raw_reward": jnp.zeros(shape), "done": jnp.zeros(shape, bool)}

    def keep_rollout(traj, advantages, extra, hp):
        return advantages, {f: getattr(traj, f).astype(extra[f].dtype) for f in fields}, {}

    agent = ppo.make_agent(config, env, env_params, ppo.PPOExtension(init_extra, keep_rollout))
    start = jit_light(agent.init)(jax.random.key(7), None, env_params)
    after, _ = jax.jit(agent.run_chunk)(start, env_params)
    traj = jax.device_get(after.extra)

    @jax.jit
    def value(obs):  # the critic with the parameters the rollout used
        carry = jax.tree.map(lambda c: c[:1], start.carry)
        return agent.network.apply(start.params, carry, obs[None, None],
                                   jnp.zeros((1, 1), bool))[2][0, 0]

    # Independent replay: step_env (no reset), truncation from is_truncated, manual reset.
    step_env, is_truncated = jax.jit(env.step_env), jax.jit(env.is_truncated)
    reset_env = jax.jit(env.reset_env)
    action_spec = agent.network.action
    checked = 0
    for e in range(num_envs):
        state = jax.tree.map(lambda x, e=e: x[e], start.env_state)
        for t in range(rollout_len):
            action = to_env_action(action_spec, jnp.asarray(traj["action"][t, e]))
            final_obs, state, raw, term, _ = step_env(jax.random.key(0), state, action,
                                                      env_params)
            truncated = bool(is_truncated(state, env_params)) and not bool(term)
            assert float(raw) == pytest.approx(float(traj["raw_reward"][t, e]), rel=1e-5,
                                               abs=1e-6)
            assert bool(traj["done"][t, e]) == truncated
            extra = traj["reward"][t, e] - traj["raw_reward"][t, e]
            if truncated:
                checked += 1
                bootstrap = gamma * float(value(final_obs))
                assert extra == pytest.approx(bootstrap, rel=1e-4, abs=1e-6)
                # The returned (reset) obs would give a clearly different bootstrap.
                reset_bootstrap = gamma * float(value(jnp.asarray(traj["obs"][t + 1, e])))
                assert abs(reset_bootstrap - bootstrap) > 1e-3
                _, state = reset_env(jax.random.key(0), env_params)
            else:
                assert extra == 0.0
                assert float(value(jnp.asarray(traj["obs"][t, e]))) == pytest.approx(
                    float(traj["value"][t, e]), rel=1e-4, abs=1e-6)
    assert checked == 2 * num_envs  # truncations after 20 and 40 steps in every env
