"""Torsos, heads, recurrent resets, action mapping and config round trips."""

from __future__ import annotations

import dataclasses

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import agents
from agents import CVaRPPOConfig, NetworkConfig, PPOConfig
from agents.common.distributions import action_spec_from_space, to_env_action
from agents.common.networks import ActorCritic, network_carry
from jaxtrade.errors import ConfigError
from jaxtrade.xla import jit_light

DISCRETE = action_spec_from_space(spaces.Discrete(3))


@pytest.mark.parametrize("torso", ["gru", "lstm"])
@pytest.mark.parametrize("shared", [True, False])
def test_recurrent_state_resets_exactly_at_episode_starts(torso, shared):
    config = NetworkConfig(torso=torso, hidden_sizes=(16,), recurrent_size=8, shared_torso=shared)
    net = ActorCritic(config, DISCRETE, obs_ndim=1)
    steps, batch, reset_at = 7, 2, 4
    obs = jax.random.normal(jax.random.key(0), (steps, batch, 5))
    resets = jnp.zeros((steps, batch), bool).at[reset_at, 0].set(True)
    carry0 = network_carry(config, (batch,))
    params = jit_light(net.init)(jax.random.key(1), carry0, obs, resets)
    apply = jax.jit(net.apply)
    # A non-zero starting carry, so "reset" is distinguishable from "started fresh".
    carry0 = jax.tree.map(lambda c: c + 0.5, carry0)

    _, dist, value = apply(params, carry0, obs, resets)
    _, fresh_dist, fresh_value = apply(
        params, network_carry(config, (batch,)), obs[reset_at:], jnp.zeros((steps - reset_at,
                                                                               batch), bool)
    )
    # Row 0 after its reset behaves exactly like a fresh episode started at that step...
    np.testing.assert_allclose(value[reset_at:, 0], fresh_value[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dist.logits[reset_at:, 0], fresh_dist.logits[:, 0], atol=1e-6)
    # ...while row 1 (no reset) still carries its history, and before the reset row 0 does too.
    assert not np.allclose(value[reset_at:, 1], fresh_value[:, 1], atol=1e-4)
    _, _, no_reset_value = apply(params, carry0, obs, jnp.zeros_like(resets))
    np.testing.assert_allclose(value[:reset_at], no_reset_value[:reset_at], atol=1e-6)
    assert not np.allclose(value[reset_at:, 0], no_reset_value[reset_at:, 0], atol=1e-4)


@pytest.mark.slow
def test_recurrent_ppo_replays_rollouts_with_the_same_resets():
    # With a zero learning rate the policy never changes, so the update's re-run of the GRU over
    # stored sequences must reproduce the rollout's log-probabilities exactly (KL = 0). CartPole
    # episodes under a random policy last ~20 steps, so every rollout crosses episode ends;
    # a carry that was not reset identically in both places would show up as KL > 0.
    env, env_params = gymnax.make("CartPole-v1")
    config = PPOConfig(
        num_envs=4, rollout_len=64, total_steps=4 * 64 * 3, num_minibatches=2, update_epochs=2,
        updates_per_chunk=3, network=NetworkConfig(torso="gru", hidden_sizes=(16,),
                                                   recurrent_size=16),
    )
    out = agents.make_train(config, env, env_params)(
        jax.random.key(0), config.hparams.replace(learning_rate=0.0)
    )
    assert float(out.metrics["ppo/episode_length"][-1]) < 64  # episodes did end inside rollouts
    np.testing.assert_allclose(out.metrics["ppo/approx_kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out.metrics["ppo/policy_loss"], 0.0, atol=1e-5)


@pytest.mark.parametrize("torso", ["mlp", "cnn", "attention"])
def test_window_torsos_read_flat_and_window_layouts(torso):
    bars, feats, state = 8, 3, 2
    config = NetworkConfig(torso=torso, hidden_sizes=(16,), window_shape=(bars, feats),
                           num_state_features=state, cnn_channels=(4,))
    net = ActorCritic(config, DISCRETE, obs_ndim=1)
    obs = jax.random.normal(jax.random.key(0), (1, 5, bars * feats + state))
    resets = jnp.zeros((1, 5), bool)
    params = jit_light(net.init)(jax.random.key(1), (), obs, resets)
    apply = jax.jit(net.apply)
    _, dist, value = apply(params, (), obs, resets)
    assert dist.logits.shape == (1, 5, 3) and value.shape == (1, 5)
    # The portfolio-state entries reach the output.
    moved = obs.at[..., -1].add(3.0)
    assert not np.allclose(apply(params, (), moved, resets)[2], value)
    if torso != "mlp":
        # The [W, F] layout is accepted directly.
        window = obs[..., : bars * feats].reshape(1, 5, bars, feats)
        net2 = ActorCritic(config, DISCRETE, obs_ndim=2)
        p2 = jit_light(net2.init)(jax.random.key(1), (), window, resets)
        assert jax.jit(net2.apply)(p2, (), window, resets)[2].shape == (1, 5)
        bad = ActorCritic(dataclasses.replace(config, window_shape=None), DISCRETE, obs_ndim=1)
        with pytest.raises(ConfigError, match="window_shape"):
            bad.init(jax.random.key(1), (), obs, resets)


def test_continuous_actions_are_scaled_into_the_box():
    box = spaces.Box(-2.0, 2.0, (1,), jnp.float32)
    for squash in ("clip", "tanh"):
        spec = action_spec_from_space(box, squash)
        raw = jnp.array([[-5.0], [0.0], [0.5], [5.0]])
        action = np.asarray(to_env_action(spec, raw))
        assert action.shape == (4, 1)
        assert np.all(action >= -2.0) and np.all(action <= 2.0)
        np.testing.assert_allclose(action[1], 0.0, atol=1e-6)
    clip = action_spec_from_space(box, "clip")
    np.testing.assert_allclose(to_env_action(clip, jnp.array([0.5])), [1.0])
    long_only = action_spec_from_space(spaces.Box(0.0, 1.0, (2,), jnp.float32))
    np.testing.assert_allclose(to_env_action(long_only, jnp.array([-1.0, 0.0])), [0.0, 0.5])


def test_act_on_gymnax_envs():
    for name in ("CartPole-v1", "Pendulum-v1"):
        env, env_params = gymnax.make(name)
        config = PPOConfig(num_envs=2, rollout_len=8, total_steps=16, num_minibatches=2)
        agent = agents.make_agent(config, env, env_params)
        state = jit_light(agent.init)(jax.random.key(0), None, env_params)
        obs = state.last_obs[0]
        env_state = jax.tree.map(lambda x: x[0], state.env_state)
        act = jax.jit(agent.act)
        a1, _ = act(state.params, obs, env_state, env_params, jax.random.key(1), (), True)
        a2, _ = act(state.params, obs, env_state, env_params, jax.random.key(2), (), True)
        np.testing.assert_array_equal(a1, a2)  # deterministic ignores the key
        if name == "CartPole-v1":
            assert a1.shape == () and int(a1) in (0, 1)
        else:
            assert a1.shape == (1,) and -2.0 <= float(a1[0]) <= 2.0
        action, carry = act(state.params, obs, env_state, env_params, jax.random.key(1),
                            agent.init_carry(), False)
        assert carry == ()
    recurrent = agents.make_agent(
        dataclasses.replace(config, network=NetworkConfig(torso="lstm", recurrent_size=4)),
        env, env_params,
    )
    state = jit_light(recurrent.init)(jax.random.key(0), None, env_params)
    action, carry = jax.jit(recurrent.act)(state.params, obs, env_state, env_params,
                                           jax.random.key(1), recurrent.init_carry(), True)
    assert jax.tree.map(jnp.shape, carry) == (((4,), (4,)), ((4,), (4,)))


def test_config_round_trip_and_errors():
    config = CVaRPPOConfig(num_envs=32, network=NetworkConfig(torso="cnn", window_shape=(30, 2)))
    data = config.to_dict()
    assert data["name"] == "cvar_ppo" and data["hparams"]["cvar_alpha"] == 0.05
    assert agents.config_from_dict(data) == config
    assert PPOConfig.from_dict({"hparams": {"gamma": 0.9}}).hparams.gamma == 0.9
    with pytest.raises(ConfigError, match="learning_rat"):
        PPOConfig.from_dict({"hparams": {"learning_rat": 1e-3}})
    with pytest.raises(ConfigError, match="torso"):
        NetworkConfig(torso="rnn")
    with pytest.raises(ConfigError, match="unknown agent"):
        agents.config_from_dict({"name": "a2c"})
    env, env_params = gymnax.make("CartPole-v1")
    with pytest.raises(ConfigError, match="total_steps"):
        agents.make_agent(PPOConfig(total_steps=10), env, env_params)
