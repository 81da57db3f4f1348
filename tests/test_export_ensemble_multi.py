"""An ensemble trained on two symbols exports and trades like its backtest, for every rule:
`jaxtrade train agent=ensemble data.regimes=true` on a two-symbol CSV, then per timestamp of
the test split the runner (MultiAssetRunner with the numpy combination of jaxtrade/live/
ensemble.py) gives the backtest's target weight per symbol, each member's weight, each
member's target per symbol and the trade probability.

The vote's inputs are per symbol: each member's target is a weight vector, its paper return
that of its portfolio over both symbols after each symbol's costs, the book's volatility
sum_a |w_a| vol_a. The router reads the regime probabilities of the market: one HMM over
the equal-weight mean log return of the symbols (jaxtrade.features.regimes), which the runner
filters bar by bar from the same mean (jaxtrade/live/regimes.py). The winner is one member's
target vector; equal weighs them alike.

One small run (train.report=false: the report's evaluation of every rule on every split
would double the file's time) and one restore of its best checkpoint serve every test: the
CLI path (`jaxtrade export combine=router min_trade_probability=P`, then the bundle's
runner.py) and, per rule, a bundle written from the same params (write_bundle) traded by
MultiAssetRunner in process. Float32 rounding is the only allowed difference (tests/
test_export_ensemble.py's 2e-5; measured here at most 2.2e-6, the vote's weights, and under
1e-6 for the trade probability, targets and the other rules' weights).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main
from jaxtrade.data.synthetic import synthetic_frame

TOLERANCE = 2e-5
MEMBERS = ("ppo", "sac")
RUN = ["train", "agent=ensemble", "agent.members=[ppo,sac]", "data=csv", "logger=none",
       "train.fast_compile=true",
       "data.regimes=true", "train.report=false",
       "env.num_envs=4", "env.window_bars=16", "env.episode_bars=64",
       "agent.updates_per_chunk=2", "train.total_steps=512", "agent.ppo.rollout_len=32",
       "agent.ppo.network.hidden_sizes=[16]", "agent.sac.network.hidden_sizes=[16]",
       "agent.sac.learning_starts=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("ensemble-two-symbols")
    frame = synthetic_frame(seed=1, num_bars=500, num_assets=2, freq="1h")
    bars = folder / "two.csv"
    frame.write_csv(bars)
    run_dir = folder / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*RUN, f"data.path={bars}", f"run_dir={run_dir}"]) == 0
    return run_dir, frame, bars


@pytest.fixture(scope="module")
def restored(trained) -> tuple[Any, Any]:
    """The run's best checkpoint restored once: one compiled test-split backtest serves
    every rule (the rule, tables and threshold are traced params)."""
    from experiments.train import restore_run

    prep, point, _ = restore_run(trained[0], "best", None, command="export")
    return prep, point.params


def backtest_with(restored, rule: str, fitted: dict, gate: float) -> tuple[Any, Any]:
    """(the ensemble's params with `rule`, `fitted` and threshold `gate`, their backtest on
    the test split)."""
    from jaxtrade.evaluate import ensemble as ensemble_eval
    from jaxtrade.evaluate.backtest import agent_policy, backtest

    prep, run_params = restored
    params = ensemble_eval.with_rule(run_params, rule, fitted, gate)
    return params, backtest(prep.env, prep.env_params, agent_policy(prep.agent, params),
                            split="test")


def assert_decisions_equal_the_backtest(decisions: list[dict], result: Any,
                                        symbols: list[str], rule: str) -> dict[str, np.ndarray]:
    """Per test bar: target weight per symbol, member weights, member targets per symbol and
    trade probability as the backtest's; returns the printed arrays."""
    assert len(decisions) == result.num_bars
    assert {d["rule"] for d in decisions} == {rule}
    printed: Callable[[Callable[[dict], Any]], np.ndarray] = \
        lambda get: np.array([get(d) for d in decisions])
    targets = printed(lambda d: [d["target_positions"][s] for s in symbols])
    weights = printed(lambda d: [d["member_weights"][n] for n in MEMBERS])
    member_targets = printed(lambda d: [[d["member_targets"][n][s] for s in symbols]
                                        for n in MEMBERS])
    probability = printed(lambda d: d["trade_probability"])
    report = result.report
    # The last bar's target is the policy's before the risk rules (no next bar to fill on).
    np.testing.assert_allclose(targets[:-1], result.target_positions[:-1], atol=TOLERANCE)
    np.testing.assert_allclose(weights, report["weights"], atol=TOLERANCE)
    np.testing.assert_allclose(member_targets, report["member_targets"], atol=TOLERANCE)
    np.testing.assert_allclose(probability, report["trade_probability"], atol=TOLERANCE)
    # What the comparison rests on moves: the probability and both symbols' targets.
    assert np.ptp(probability) > 0.05
    assert (np.ptp(member_targets[:, 1], axis=0) > 1e-3).all()  # sac: a weight per symbol
    assert not np.allclose(member_targets[:, 1, 0], member_targets[:, 1, 1])
    return {"targets": targets, "weights": weights, "probability": probability}


def test_cli_export_of_the_router_with_a_gate_trades_like_the_backtest(
        trained, restored, tmp_path) -> None:
    """`jaxtrade export combine=router min_trade_probability=P`, then B/runner.py over the
    CSV from the first test bar: the backtest of the bundle's combination (rule, fitted
    router and winner, trade prior, threshold) on the run's params, bar for bar."""
    run_dir, _, bars = trained
    # The threshold is read from this run, so the gate bites wherever training lands: halfway
    # between the ungated router's first test-bar probability and its lowest. Bars before the
    # first one below it trade as ungated (gating changes nothing until the book goes flat),
    # so the first bar trades and a later one is flat.
    ungated = tmp_path / "ungated"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", f"run_dir={run_dir}", f"out={ungated}", "combine=router"]) == 0
    first = json.loads((ungated / "manifest.json").read_text())["network"]["combine"]
    _, plain = backtest_with(restored, "router", {
        "router": np.asarray(first["router"]), "winner": np.asarray(first["winner"]),
        "trade_prior_mean": {"router": first["trade_prior_mean"]}}, 0.0)
    probability = np.asarray(plain.report["trade_probability"])
    assert probability[0] > probability.min() + 1e-3, probability[:10]
    gate = float(probability[0] + probability.min()) / 2
    bundle = tmp_path / "bundle"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", f"run_dir={run_dir}", f"out={bundle}", "combine=router",
                     f"min_trade_probability={gate}"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    network = manifest["network"]
    assert network["family"] == "ensemble"
    assert [m["name"] for m in network["members"]] == list(MEMBERS)
    symbols = manifest["symbols"]
    assert len(symbols) == 2
    assert manifest["features"]["regimes"]["kind"] == "gaussian_hmm_forward_filter"
    combine = network["combine"]
    assert combine["rule"] == "router"
    assert combine["min_trade_probability"] == pytest.approx(gate)
    fitted = {"router": np.asarray(combine["router"]), "winner": np.asarray(combine["winner"]),
              "trade_prior_mean": {"router": combine["trade_prior_mean"]}}
    assert fitted["router"].shape == (3, len(MEMBERS))
    _, result = backtest_with(restored, "router", fitted, gate)
    start = str(result.timestamps[0].astype("datetime64[s]"))
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                           "--start", start, "--no-monitor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(x) for x in proc.stdout.splitlines() if "target_positions" in x]
    printed = assert_decisions_equal_the_backtest(decisions, result, symbols, "router")
    # The fitted router follows the filtered regimes: both members lead on some bars.
    assert np.ptp(printed["weights"][:, 0]) > 0.5
    # The gate holds the book flat on some bars and not on others.
    flat = printed["probability"] < gate
    assert flat[:-1].any() and (~flat[:-1]).any()
    np.testing.assert_array_equal(printed["targets"][:-1][flat[:-1]], 0.0)
    assert (np.abs(printed["targets"][:-1][~flat[:-1]]).sum(axis=1) > 0).any()


# A router table and a winner that make every rule's weights differ from the others'.
FITTED = {"router": np.array([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]]),
          "winner": np.array([0.0, 1.0])}


@pytest.mark.parametrize("rule", ["vote", "router", "winner", "equal"])
def test_runner_combines_every_rule_like_the_backtest(trained, restored, tmp_path,
                                                      rule) -> None:
    """Each rule of the same params written to a bundle (write_bundle, as `jaxtrade export`
    writes it) and traded by MultiAssetRunner, bar by bar from the first test bar."""
    from jaxtrade.export import write_bundle
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.multi import MultiAssetRunner

    _, frame, _ = trained
    prep = restored[0]
    # A trade prior away from 0: the bundle must carry it as the backtest reads it.
    params, result = backtest_with(restored, rule, {**FITTED, "trade_prior_mean": {rule: 0.05}},
                                   0.0)
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=prep.agent_config,
                          head={"family": "ensemble"}, env=prep.env,
                          env_params=prep.env_params, run_config=prep.cfg)
    loaded = load_bundle(bundle)
    symbols = list(loaded.manifest["symbols"])
    runner = MultiAssetRunner(loaded)
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    decisions = []
    for symbol, t, *values in zip(frame["symbol"].to_list(),
                                  frame["timestamp"].dt.epoch("us").to_list(),
                                  *[frame[c].to_list() for c in ("open", "high", "low",
                                                                 "close", "volume")]):
        decisions += runner.process(symbol, Bar(t, *values), trade=t >= start)
    decisions += runner.flush()
    printed = assert_decisions_equal_the_backtest(decisions, result, symbols, rule)
    weights = printed["weights"]
    if rule in ("vote", "router"):  # paper returns / regime probabilities move the weights
        assert np.ptp(weights[:, 0]) > 0.1
    elif rule == "winner":
        np.testing.assert_array_equal(weights, np.broadcast_to(FITTED["winner"], weights.shape))
    else:
        np.testing.assert_array_equal(weights, 0.5)
