"""Value-based agents export to the numpy runner: its targets equal the backtest bar for bar.

Q networks (plain and dueling heads, and QR-DQN's quantile heads acting on the mean or on the
lower CVaR of the quantiles) are initialised with a strong head so decisions vary bar to bar;
the backtest acts with the agent's own `act`, the runner with the exported weights.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from live_helpers import build_market, real_frame

import agents
import envs
from jaxtrade.evaluate.backtest import agent_policy, backtest
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner

HEADS = ("q_head", "dueling_value", "dueling_advantage")


@pytest.fixture(scope="module")
def market_env():
    frame = real_frame("eurusd_1h", 600)
    market = build_market(frame)
    env, env_params = envs.make("trading", market, window_bars=8,
                                discrete_levels=(-1.0, -0.5, 0.0, 0.5, 1.0))
    return frame, market, env, env_params


@pytest.mark.parametrize("agent_cfg", [
    {"name": "dqn"},
    {"name": "dqn", "head": "dueling"},
    {"name": "qrdqn", "num_quantiles": 8},
    {"name": "qrdqn", "num_quantiles": 8, "act_on": "cvar", "act_cvar_alpha": 0.25,
     "head": "dueling"},
])
def test_runner_acts_like_the_backtest(tmp_path, market_env, agent_cfg):
    frame, market, env, env_params = market_env
    config = agents.config_from_dict({**agent_cfg, "num_envs": 2, "total_steps": 100_000,
                                      "buffer_size": 1000, "learning_starts": 100,
                                      "network": {"hidden_sizes": [32, 32]}})
    agent = agents.make_agent(config, env, env_params)
    obs = env.reset(jax.random.key(0), env_params)[0]
    params = agent.network.init(jax.random.key(1), obs[None])
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 300.0 if any(h in jax.tree_util.keystr(path) for h in HEADS) else x,
        params)
    result = backtest(env, env_params, agent_policy(agent, params), split="test")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params)
    runner = Runner(load_bundle(bundle))
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    targets = []
    for t, *values in zip(frame["timestamp"].dt.epoch("us").to_list(),
                          *[frame[c].to_list() for c in ("open", "high", "low", "close",
                                                         "volume")]):
        decision = runner.process(Bar(t, *values), trade=t >= start)
        if decision is not None:
            targets.append(decision["target_position"])
    reference = result.target_positions[:, 0]
    assert len(set(reference.tolist())) >= 3  # the greedy policy really changes its mind
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
