"""The mcts agent exports to the numpy runner: its search (jaxtrade/live/mcts.py) gives the
backtest's target positions bar for bar.

The network gets non-trivial weights (one noisy copy per leaf, as tests/test_mcts.py does) so
the search changes its mind from bar to bar; the backtest runs the agent's own deterministic
search (mctx gumbel MuZero, gumbel scale 0), the runner the exported bundle's numpy search,
started flat at the first bar of the test split.
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


def noisy_params(agent, env_params, seed: int = 3, scale: float = 0.3):
    state = agent.init(jax.random.key(0), None, env_params)
    params = agent.policy_params(state)
    leaves, tree = jax.tree.flatten(params.network)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return params.replace(network=jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))


def runner_targets(bundle, frame, start_us):
    runner = Runner(load_bundle(bundle))
    targets = []
    for t, *values in zip(frame["timestamp"].dt.epoch("us").to_list(),
                          *[frame[c].to_list() for c in ("open", "high", "low", "close",
                                                         "volume")]):
        decision = runner.process(Bar(t, *values), trade=t >= start_us)
        if decision is not None:
            targets.append(decision["target_position"])
    return np.asarray(targets)


@pytest.mark.parametrize("agent_cfg", [
    {"num_simulations": 8},
    {"num_simulations": 12, "max_depth": 2},
])
def test_runner_searches_like_the_backtest(tmp_path, agent_cfg):
    frame = real_frame("eurusd_1h", 500)
    market = build_market(frame)
    env, env_params = envs.make("trading", market, window_bars=8,
                                discrete_levels=(-1.0, -0.5, 0.0, 0.5, 1.0))
    config = agents.config_from_dict({"name": "mcts", "num_envs": 2,
                                      "network": {"hidden_sizes": [32, 32]}, **agent_cfg})
    agent = agents.make_agent(config, env, env_params)
    params = noisy_params(agent, env_params)
    result = backtest(env, env_params, agent_policy(agent, params), split="test")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params)
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    targets = runner_targets(bundle, frame, start)
    reference = result.target_positions[:, 0]
    assert len(set(reference.tolist())) >= 3  # the search really changes its mind
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
