"""Every (agent, network) pair exports: the numpy runner's positions equal the backtest's on
every bar of the test split.

One parametrized test over the pairs (issue 22): discrete and continuous PPO and CVaR-PPO,
DQN (plain and dueling), QR-DQN (acting on the mean, and on the lower CVaR with a dueling
head), SAC, discrete SAC, TD3 and DDPG, each with the MLP, CNN and attention torsos, and the
two PPO agents also with the GRU and LSTM torsos (recurrent state carried bar to bar): 44
pairs. The replay agents refuse recurrent torsos when they are built (checked below), so
those pairs do not exist. PPO bundles also carry the critic: the decision lines report its
state value (a recurrent critic with its own torso steps its own cell, its state carried
beside the actor's; tests/test_onnx_export.py checks it against flax bar by bar). SAC,
discrete SAC, TD3 and DDPG bundles carry their Q critics: the decision lines report
`q_value`, the minimum over the critics of Q(s, pi(s)), checked against the agent's own flax
critic on the first bars.

Each pair's policy is the agent's own network (`agent.network`, the module its `init`
builds and its `act` calls) with random parameters of the tree and shapes that init makes,
large enough that the greedy decisions change from bar to bar: parity is a property of the
network's structure, not of how well it trades, and training steps (or a compiled init) would
only add compile time to the backtest's, which already costs about two seconds of CPU per
pair (runs trained end to end go through the same export in tests/test_export.py,
tests/test_export_multi.py, tests/test_onnx_export.py and tests/test_formats_roundtrip.py).
The reference is `backtest(env, env_params, agent_policy(agent, params))`, the agent's own
`act` in the env, which is what `jaxtrade backtest` runs; the runner
is fed every bar of the market from the first one (features warm up as in training) and trades
from the first bar of the test split.

Other files cover what this matrix keeps fixed: observation layouts, fills at the close, stops,
regime caps, the runner.py command line, and Yahoo-style and Binance klines files
(tests/test_export_parity.py), two assets and 4h features (tests/test_export_multi.py), the
ONNX graph of every torso and head (tests/test_onnx_export.py), the mcts search
(tests/test_export_mcts.py), ensembles (tests/test_export_ensemble.py).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from live_helpers import (
    ON_POLICY,
    REPLAY_ACTOR_CRITICS,
    build_market,
    make_pair,
    random_critic_params,
    random_policy_params,
    real_frame,
)

from jaxtrade.errors import ConfigError
from jaxtrade.evaluate.backtest import agent_policy, backtest
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner

# (test id, agent section, env action mode)
AGENT_CASES = [
    ("ppo", {"name": "ppo"}, "discrete"),
    ("ppo-continuous", {"name": "ppo"}, "continuous"),
    ("cvar_ppo", {"name": "cvar_ppo"}, "discrete"),
    ("cvar_ppo-continuous", {"name": "cvar_ppo"}, "continuous"),
    ("dqn", {"name": "dqn"}, "discrete"),
    ("dqn-dueling", {"name": "dqn", "head": "dueling"}, "discrete"),
    ("qrdqn-mean", {"name": "qrdqn", "num_quantiles": 8}, "discrete"),
    ("qrdqn-cvar", {"name": "qrdqn", "num_quantiles": 8, "act_on": "cvar",
                    "act_cvar_alpha": 0.25, "head": "dueling"}, "discrete"),
    ("sac", {"name": "sac"}, "continuous"),
    ("sac_discrete", {"name": "sac_discrete"}, "discrete"),
    ("td3", {"name": "td3"}, "continuous"),
    ("ddpg", {"name": "ddpg"}, "continuous"),
]
FEED_FORWARD = ("mlp", "cnn", "attention")
RECURRENT = ("gru", "lstm")
PAIRS = [
    pytest.param(section, mode, torso, id=f"{name}-{torso}")
    for name, section, mode in AGENT_CASES
    for torso in FEED_FORWARD + (RECURRENT if section["name"] in ON_POLICY else ())
]


@pytest.fixture(scope="module")
def market_case():
    """Bars, the training pipeline's market of them, and the bar stream the runner reads."""
    frame = real_frame("eurusd_1h", 600)
    market = build_market(frame)
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    columns = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    bars = [Bar(t, *values) for t, *values in zip(stamps, *columns)]
    return market, bars


@pytest.mark.parametrize("section, mode, torso", PAIRS)
def test_runner_positions_equal_the_backtest_on_every_bar(market_case, tmp_path, section, mode,
                                                          torso):
    market, bars = market_case
    env, env_params, agent, config = make_pair(market, section, mode, torso)
    obs = env.reset(jax.random.key(0), env_params)[0]
    params = random_policy_params(agent, config, obs, discrete=mode == "discrete")
    result = backtest(env, env_params, agent_policy(agent, params), split="test")
    critic = critic_params = None
    if section["name"] in REPLAY_ACTOR_CRITICS:
        critic, critic_params = random_critic_params(config, env, env_params, obs,
                                                     discrete=mode == "discrete")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params,
                          critic_params=critic_params)
    manifest = load_bundle(bundle).manifest
    assert manifest["network"]["config"]["torso"] == torso
    assert manifest["action"]["mode"] == mode

    runner = Runner(load_bundle(bundle))
    observations = []  # what the runner's policy saw, for the critic check below
    forward_with_value = runner.network.forward_with_value
    runner.network.forward_with_value = lambda obs, carry: (
        observations.append(np.array(obs)), forward_with_value(obs, carry))[1]
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    decisions = [d for bar in bars
                 if (d := runner.process(bar, trade=bar.timestamp_us >= start)) is not None]
    assert len(decisions) == len(result.timestamps)
    targets = np.array([d["target_position"] for d in decisions])
    reference = result.target_positions[:, 0]
    # The last row is the policy's target before the env's risk rules (no next bar to fill).
    if mode == "discrete":
        assert len(set(reference.tolist())) >= 3  # the policy really changes its mind
        np.testing.assert_array_equal(targets[:-1], reference[:-1])
    else:
        assert np.ptp(reference) > 0.5  # decisions that really move
        assert np.mean(np.abs(reference) < 0.99) > 0.05  # not only the bounds of the range
        np.testing.assert_allclose(targets[:-1], reference[:-1], atol=2e-4)
    np.testing.assert_allclose([d["position"] for d in decisions], result.positions[:, 0],
                               atol=1e-4)
    # PPO's critic travels with the bundle (a recurrent one with its own torso too): the
    # decision line says what the critic believes the state is worth.
    values = [d.get("value") for d in decisions]
    if section["name"] in ON_POLICY:
        assert all(np.isfinite(values)) and len(set(values)) > 1
    else:
        assert values == [None] * len(decisions)
    q_values = [d.get("q_value") for d in decisions]
    if critic is None:
        assert q_values == [None] * len(decisions)
    else:  # min over the flax critics of Q(s, pi(s)), pi the agent's own greedy action
        assert all(np.isfinite(q_values)) and len(set(q_values)) > 1
        obs = jax.numpy.asarray(np.stack(observations[:5]))
        head = agent.network.apply(params, obs)
        head = head[0] if isinstance(head, tuple) else head  # SAC: (mean, log_std)
        if mode == "discrete":
            q = critic.apply(critic_params, obs).min(axis=0)  # [B, A]
            expected = np.take_along_axis(np.asarray(q), np.argmax(head, -1)[:, None], 1)[:, 0]
        else:
            expected = critic.apply(critic_params, obs, jax.numpy.tanh(head)).min(axis=0)[:, 0]
        np.testing.assert_allclose(q_values[:5], np.asarray(expected), rtol=1e-5, atol=2e-6)
    assert runner.summary()["total_return"] == pytest.approx(result.metrics["total_return"],
                                                             abs=1e-4)


@pytest.mark.parametrize("name", ["dqn", "qrdqn", "sac", "sac_discrete", "td3", "ddpg"])
def test_replay_agents_refuse_recurrent_torsos(market_case, name):
    """The pairs missing from the matrix: the replay agents sample single transitions, so a
    recurrent torso is refused when the agent is built, before any training or export."""
    market, _ = market_case
    mode = "discrete" if name in ("dqn", "qrdqn", "sac_discrete") else "continuous"
    with pytest.raises(ConfigError, match="recurrent"):
        make_pair(market, {"name": name}, mode, "gru")
