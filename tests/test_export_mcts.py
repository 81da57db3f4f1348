"""The mcts agent exports to the numpy runner: its search (jaxtrade/live/mcts.py) gives the
backtest's target positions bar for bar, with either search (`agent.search`).

The network gets non-trivial weights (one noisy copy per leaf, as tests/test_mcts.py does) so
the search changes its mind from bar to bar; the backtest runs the agent's own deterministic
search (mctx gumbel MuZero at gumbel scale 0, or stochastic MuZero at Dirichlet fraction 0 and
the argmax of the root's visits), the runner the exported bundle's numpy search, started flat
at the first bar of the test split.

The CLI runs (`jaxtrade train agent=mcts`, a few updates, either search) are trained once per
session (tests/shared_runs.py): tests/test_mcts.py resumes a copy of the gumbel run's config
and compares it with the straight run.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from live_helpers import build_market, real_frame, write_tiny_bars
from shared_runs import shared_run

import agents
import envs
from jaxtrade.evaluate.backtest import agent_policy, backtest
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner

# `jaxtrade train agent=mcts` at the smallest sizes (32 updates, a validation pass and a
# checkpoint every 16), with its report; `search_args` picks the search.
MCTS_RUN = ["agent=mcts", "data=csv", "logger=none",
            "train.fast_compile=true", "env.num_envs=2", "env.window_bars=8",
            "env.episode_bars=64", "agent.updates_per_chunk=4", "agent.num_simulations=4",
            "agent.learning_starts=8", "agent.batch_size=8", "agent.buffer_size=128",
            "agent.n_step=2", "train.total_steps=64", "train.checkpoint_every_updates=16",
            "train.eval_every_updates=16", "network.hidden_sizes=[16,16]"]


def search_args(search: str) -> list[str]:
    """The stochastic run trains with pb_c_init=2.0: the bundle carries the checkpoint's."""
    extra = ["agent.hparams.pb_c_init=2.0"] if search == "stochastic" else []
    return [f"agent.search={search}", *extra]


def mcts_run(factory: pytest.TempPathFactory, search: str) -> tuple[Path, Path]:
    """(run_dir, bars) of `jaxtrade train *MCTS_RUN *search_args(search)`, trained once per
    session; read-only for its users."""
    run_dir, folder = shared_run(factory, f"mcts-{search}",
                                 ["train", *MCTS_RUN, *search_args(search)], write_tiny_bars)
    return run_dir, folder / "bars.csv"


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
    {"search": "stochastic", "num_simulations": 8},
    {"search": "stochastic", "num_simulations": 12, "max_depth": 3},
], ids=["gumbel", "gumbel-depth2", "stochastic", "stochastic-depth3"])
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
    assert load_bundle(bundle).manifest["network"]["search"] == config.search
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    targets = runner_targets(bundle, frame, start)
    reference = result.target_positions[:, 0]
    assert len(set(reference.tolist())) >= 3  # the search really changes its mind
    np.testing.assert_array_equal(targets[:-1], reference[:-1])


@pytest.mark.parametrize("search", ["gumbel", "stochastic"])
def test_cli_export_of_a_trained_run_trades_its_report_positions(tmp_path, tmp_path_factory,
                                                                  search):
    """`jaxtrade train agent=mcts` (a few updates), `jaxtrade export`, then B/runner.py over
    the run's bars from the first test bar: its targets equal the report's positions.csv.
    The stochastic run trains with pb_c_init=2.0: the bundle carries the checkpoint's."""
    import csv
    import json
    import subprocess
    import sys

    from jaxtrade.cli import main

    run_dir, bars = mcts_run(tmp_path_factory, search)
    bundle = tmp_path / "bundle"
    assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["network"]["family"] == "mcts"
    assert manifest["network"]["num_simulations"] == 4
    assert manifest["network"]["search"] == search
    if search == "gumbel":
        assert manifest["network"]["gumbel_scale"] == 0.0
    else:
        assert manifest["network"]["dirichlet_fraction"] == 0.0
        assert manifest["network"]["pb_c_init"] == 2.0
    with open(run_dir / "report" / "positions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                           "--start", rows[0]["timestamp"], "--no-monitor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()
                 if "target_position" in line]
    assert [d["target_position"] for d in decisions] == [float(r["target_position"])
                                                         for r in rows]


@pytest.mark.parametrize("search", ["gumbel", "stochastic"])
def test_numpy_search_values_equal_the_agents_tree(tmp_path, search):
    """Beyond the action: from four env states with different books, the numpy search's
    policy (gumbel: the improved policy; stochastic: the root's visit distribution) and root
    value equal the agent's deterministic search (float32 rounding only), so the tree below
    the root (gumbel: the most probable outcome's child, its exact book and the model's
    expectation; stochastic: the chance nodes' afterstate values and the outcome picked at
    each) is the same tree."""
    import jax.numpy as jnp

    from jaxtrade.live.mcts import MCTSPlanner, Portfolio

    frame = real_frame("eurusd_1h", 300)
    market = build_market(frame)
    env, env_params = envs.make("trading", market, window_bars=8,
                                discrete_levels=(-1.0, -0.5, 0.0, 0.5, 1.0))
    config = agents.config_from_dict({"name": "mcts", "num_envs": 2, "num_simulations": 12,
                                      "search": search, "network": {"hidden_sizes": [32, 32]}})
    agent = agents.make_agent(config, env, env_params)
    params = noisy_params(agent, env_params)
    eval_params = env_params.replace(eval_mode=jnp.asarray(True))
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), 4), eval_params)
    actions = np.array([[4, 4, 4, 4, 4], [0, 0, 1, 0, 0], [3, 1, 3, 1, 3], [2, 0, 4, 0, 2]])
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    for i in range(actions.shape[1]):
        obs, state, *_ = step(jax.random.split(jax.random.key(2), 4), state,
                              jnp.asarray(actions[:, i]), eval_params)
    out = jax.jit(agent.policy, static_argnums=6)(params, obs, state, eval_params,
                                                  jax.random.key(7), (), True)
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params)
    loaded = load_bundle(bundle)
    planner = MCTSPlanner(loaded.manifest, loaded.weights)
    m = jax.tree.map(np.asarray, env_params.market)
    s = jax.tree.map(np.asarray, state)
    assert len(np.unique(s.units)) > 1  # the books differ
    for i in range(4):
        t = int(s.t[i])
        root = Portfolio(s.cash[i], s.units[i, 0], s.entry_price[i, 0], s.best_price[i, 0],
                         s.bars_in_position[i, 0], s.equity[i], s.peak_equity[i],
                         s.breaker_peak[i], s.pause_left[i], m.close[t, 0])
        window = np.asarray(obs[i, :-5]).reshape(8, -1)
        action, probs, value = planner.search(window, root, m.atr[t, 0], m.volatility[t, 0],
                                              m.regime[t])
        assert action == int(out.action[i])
        # Measured (gumbel): within 2e-6 relative (float32 rounding of exp/log and sums taken
        # in another order); the same tree with sampled children instead of the most
        # probable one differs by 3e-4, which these bounds reject. Stochastic: the visit
        # distribution is counts / 12, so one visit elsewhere moves it by 1/12.
        np.testing.assert_allclose(probs, np.exp(np.asarray(out.logits[i])), rtol=1e-5,
                                   atol=1e-8)
        np.testing.assert_allclose(value, float(out.value[i]), rtol=1e-5, atol=1e-8)
