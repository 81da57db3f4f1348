"""`jaxtrade export` of the mcts runs beyond a plain one: the ensembles it exports and what
it still refuses.

Exported: an ensemble with an mcts member (`agent.members=[ppo,mcts]`), gumbel or stochastic
search. The bundle holds the member's three heads and evaluation search settings as an mcts
bundle does; the runner's member (jaxtrade/live/ensemble.py `SearchMember`) runs the numpy
search from the root the ensemble's backtest gives it (the ensemble's own book at bar t's
close). Parity with the backtest on every test bar: target position, member weights, member
targets and trade probability (float32 rounding only, the tolerance of
tests/test_export_ensemble.py).

Refused in one line, before anything is restored, fitted or written
(jaxtrade/export.py `check_ensemble_members`): an ensemble member whose config has no bundle
(its export_head raises). Every registered agent exports now, `agent.search=stochastic`
included (the numpy runner ports both searches), so the check is shown on a stand-in member.

Each CLI run is trained for real through `jaxtrade train` at the smallest sizes (a few
updates, no validation pass), so the export reads a real run. The ensemble run is trained once
per session (tests/shared_runs.py): tests/test_mcts.py reads its training metrics. An mcts
run's own export and its parity with the backtest, either search: tests/test_export_mcts.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_helpers import build_market, real_frame, write_tiny_bars
from shared_runs import shared_run

import agents
from jaxtrade.cli import main
from jaxtrade.errors import ExportError
from jaxtrade.export import check_ensemble_members
from jaxtrade.live.bundle import load_bundle

TOLERANCE = 2e-5  # float32 rounding (tests/test_export_ensemble.py)

TINY = ["data=csv", "logger=none",
        "train.fast_compile=true", "env.num_envs=2", "env.window_bars=8",
        "env.episode_bars=64", "train.report=false", "train.eval_every_updates=1000"]
MCTS_TINY = {"num_simulations": "2", "learning_starts": "8", "batch_size": "8",
             "buffer_size": "128", "n_step": "2"}


ENSEMBLE = ["agent=ensemble", "agent.members=[ppo,mcts]", *TINY, "agent.updates_per_chunk=1",
            "train.total_steps=64", "agent.ppo.rollout_len=16",
            "agent.ppo.network.hidden_sizes=[8]", "agent.mcts.network.hidden_sizes=[8]",
            *[f"agent.mcts.{k}={v}" for k, v in MCTS_TINY.items()]]


def ensemble_run(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run_dir, bars) of `jaxtrade train` with ENSEMBLE, trained once per session (read-only:
    tests/test_mcts.py reads its metrics too)."""
    run_dir, folder = shared_run(factory, "ensemble-mcts", ["train", *ENSEMBLE], write_tiny_bars)
    return run_dir, folder / "bars.csv"


def runner_decisions(bundle: Path, frame, start_us: int) -> list[dict]:
    """The runner's decision per bar from `start_us` (the bars before only warm it up)."""
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    runner = Runner(load_bundle(bundle))
    decisions = []
    for t, *values in zip(frame["timestamp"].dt.epoch("us").to_list(),
                          *[frame[c].to_list() for c in ("open", "high", "low", "close",
                                                         "volume")]):
        decision = runner.process(Bar(t, *values), trade=t >= start_us)
        if decision is not None:
            decisions.append(decision)
    return decisions


def assert_runner_equals_backtest(decisions: list[dict], result, names: list[str]) -> None:
    """Target position, member weights, member targets and trade probability, every bar."""
    assert len(decisions) == result.num_bars
    pick = lambda get: np.array([get(d) for d in decisions])
    np.testing.assert_allclose(pick(lambda d: [d["member_weights"][n] for n in names]),
                               result.report["weights"], atol=TOLERANCE)
    np.testing.assert_allclose(pick(lambda d: [d["member_targets"][n] for n in names]),
                               np.asarray(result.report["member_targets"])[:, :, 0],
                               atol=TOLERANCE)
    np.testing.assert_allclose(pick(lambda d: d["trade_probability"]),
                               result.report["trade_probability"], atol=TOLERANCE)
    # The last row's target is the policy's before the risk manager (no bar to fill on).
    np.testing.assert_allclose(pick(lambda d: d["target_position"])[:-1],
                               result.target_positions[:-1, 0], atol=TOLERANCE)


def test_export_of_an_ensemble_with_an_mcts_member_trades_the_backtest(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`jaxtrade train` + `jaxtrade export` of agent.members=[ppo,mcts]: the manifest holds the
    mcts member as an mcts bundle would (family, gumbel settings, the checkpoint's gamma, three
    heads, the env's reward), and B/runner.py equals the backtest of the restored run with
    the combination the export wrote."""
    from experiments.train import restore_run
    from jaxtrade.evaluate import ensemble as ensemble_eval
    from jaxtrade.evaluate.backtest import agent_policy, backtest

    run_dir, bars = ensemble_run(tmp_path_factory)
    bundle = tmp_path / "bundle"
    assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    member = manifest["network"]["members"][1]
    assert member["name"] == "mcts" and member["family"] == "mcts"
    assert member["search"] == "gumbel" and member["gumbel_scale"] == 0.0
    assert member["num_simulations"] == 2 and member["gamma"] == pytest.approx(0.9)
    assert member["action"]["mode"] == "discrete"
    assert "reward" in manifest
    weights = load_bundle(bundle).weights
    for head in ("torso", "joint", "policy_head", "value_head", "model_head"):
        assert any(k.startswith(f"mcts/{head}/") for k in weights), head
    # The backtest of the checkpoint the export read, with the combination it wrote.
    prep, point, _ = restore_run(run_dir, "best", None, command="export")
    combine = manifest["network"]["combine"]
    assert combine["rule"] == "vote"
    fitted = {"router": combine["router"], "winner": combine["winner"],
              "trade_prior_mean": {"vote": combine["trade_prior_mean"]}}
    params = ensemble_eval.with_rule(point.params, "vote", fitted,
                                     combine["min_trade_probability"])
    result = backtest(prep.env, prep.env_params, agent_policy(prep.agent, params),
                      split="test")
    # B/runner.py (the bundle's own copy of the runner) from the first test bar.
    start = np.datetime_as_string(result.timestamps[0].astype("datetime64[us]"))
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                           "--start", start, "--no-monitor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()
                 if "target_position" in line]
    assert {d["rule"] for d in decisions} == {"vote"}
    assert len(set(np.asarray(result.report["member_targets"])[:, 1, 0].tolist())) >= 2
    assert_runner_equals_backtest(decisions, result, ["ppo", "mcts"])


@pytest.mark.parametrize("kind", ["gumbel", "stochastic"])
def test_runner_searches_from_the_ensembles_book(tmp_path, kind) -> None:
    """Without training: an ensemble of ppo and an mcts member (either search) with noisy
    weights (so the search changes its mind bar to bar, as in tests/test_export_mcts.py),
    written with write_bundle. The runner's mcts member searches from the ensemble's own
    book: its targets, the vote and the trade probability equal the backtest's on every test
    bar. A member searching from a flat book (or its own) instead of the ensemble's diverges
    here."""
    import jax

    import envs
    from jaxtrade.evaluate.backtest import agent_policy, backtest
    from jaxtrade.export import write_bundle

    frame = real_frame("eurusd_1h", 400)
    env, env_params = envs.make("trading", build_market(frame), window_bars=8,
                                action_mode="continuous",
                                discrete_levels=(-1.0, -0.5, 0.0, 0.5, 1.0))
    config = agents.config_from_dict({
        "name": "ensemble", "members": ["ppo", "mcts"], "num_envs": 2, "total_steps": 2048,
        "ppo": {"network": {"hidden_sizes": [16]}},
        "mcts": {"num_simulations": 8, "max_depth": 3, "search": kind,
                 "network": {"hidden_sizes": [32, 32]}}})
    agent = agents.make_agent(config, env, env_params)
    params = agent.policy_params(agent.init(jax.random.key(0), None, env_params))
    search = params["members"]["mcts"]
    leaves, tree = jax.tree.flatten(search.network)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params["members"]["mcts"] = search.replace(network=jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
    result = backtest(env, env_params, agent_policy(agent, params), split="test")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config,
                          head={"family": "ensemble"}, env=env, env_params=env_params)
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    assert load_bundle(bundle).manifest["network"]["members"][1]["search"] == kind
    decisions = runner_decisions(bundle, frame, start)
    member = np.asarray(result.report["member_targets"])[:, 1, 0]
    assert len(set(member.tolist())) >= 3  # the search really changes its mind
    assert np.ptp(np.abs(result.target_positions[:, 0])) > 0.1  # and the book moves
    assert_runner_equals_backtest(decisions, result, ["ppo", "mcts"])


def test_ensemble_member_check_passes_exportable_members_and_names_the_first_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check write_bundle runs too: actor, Q-network and mcts members (either search)
    pass; a member without a bundle (a stand-in: the mcts config with an export_head that
    raises, as a stochastic one did before the runner ported its search) is refused, and the
    line names the members that export."""
    check_ensemble_members(agents.config_from_dict(
        {"name": "ensemble", "members": ["ppo", "qrdqn", "sac", "mcts"]}))
    config = agents.config_from_dict({"name": "ensemble", "members": ["ppo", "mcts"],
                                      "mcts": {"search": "stochastic"}})
    check_ensemble_members(config)

    def no_bundle(self):
        raise ExportError("no bundle for this stand-in")

    monkeypatch.setattr(type(config.mcts), "export_head", no_bundle)
    with pytest.raises(ExportError, match=r"member 'mcts' \(no bundle\) cannot be exported") \
            as err:
        check_ensemble_members(config)
    assert "an mcts search (ppo, cvar_ppo, dqn, qrdqn, sac" in str(err.value)
    exporting = str(err.value).split("(", 2)[2].split(")")[0]
    assert "mcts" not in exporting.split(", ")  # the member without a bundle is not among them
