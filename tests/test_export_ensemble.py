"""An ensemble run exports to the numpy runner: every member and the combination state in one
bundle, and the runner (jaxtrade/live/ensemble.py) gives the backtest's target positions,
member weights and trade probabilities bar for bar on the test split.

One small `jaxtrade train agent=ensemble` run (the settings of tests/test_ensemble_cli.py:
ppo + sac, regimes on) is shared by the tests. The runner starts flat at the first test bar
with a fresh combination, as the backtest's walk does; the vote then updates online from each
member's paper returns. Float32 rounding is the only allowed difference: measured at about
1.5e-6 for weights and targets and 5e-7 for the trade probability, so 2e-5 fails on any
real discrepancy (a paper return taken one bar off, a cost left out, another prior) while
staying clear of rounding.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from live_helpers import tiny_frame, write_tiny_bars  # noqa: E402
from shared_runs import shared_run  # noqa: E402
from test_ensemble_cli import RUN  # noqa: E402  (the same small run: ppo + sac)

TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, Path]:
    """tests/test_ensemble_cli.py's run, trained once per session (tests/shared_runs.py)."""
    run_dir, folder = shared_run(tmp_path_factory, "ensemble", RUN, write_tiny_bars)
    return run_dir, tiny_frame(), folder / "bars.csv"


@pytest.fixture(scope="module")
def restored(trained) -> tuple:
    """The run's best checkpoint restored once (one agent: one compiled backtest for every
    rule below) and its router and winner fitted as the report fits them."""
    from experiments.train import restore_run
    from jaxtrade.evaluate import ensemble as ensemble_eval

    prep, point, _ = restore_run(trained[0], "best", None, command="export")
    fitted = ensemble_eval.fit(prep.agent, point.params, prep.env, prep.env_params)
    return prep, point.params, fitted


def test_cli_export_runner_prints_the_reports_positions_weights_and_probability(
        trained, tmp_path) -> None:
    """`jaxtrade export` of the run (rule vote), then B/runner.py over its bars from the
    first test bar: per bar, the report's positions.csv target, member weights and trade
    probability."""
    run_dir, _, bars = trained
    bundle = tmp_path / "bundle"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    network = manifest["network"]
    assert network["family"] == "ensemble"
    assert [m["name"] for m in network["members"]] == ["ppo", "sac"]
    assert network["members"][0]["action"]["mode"] == "discrete"
    assert network["members"][1]["action"]["squash"] == "tanh"
    combine = network["combine"]
    assert combine["rule"] == "vote" and combine["vote_window_bars"] == 64
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert combine["router"] == metrics["ensemble"]["router_table"]  # fitted as the report did
    with open(run_dir / "report" / "positions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                           "--start", rows[0]["timestamp"], "--no-monitor"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()
                 if "target_position" in line]
    assert len(decisions) == len(rows)
    column = lambda name: np.array([float(r[name]) for r in rows])
    printed = lambda get: np.array([get(d) for d in decisions])
    # The last row's target is the policy's before the risk manager (no bar to fill on).
    np.testing.assert_allclose(printed(lambda d: d["target_position"])[:-1],
                               column("target_position")[:-1], atol=TOLERANCE)
    for name in ("ppo", "sac"):
        weights = printed(lambda d, n=name: d["member_weights"][n])
        np.testing.assert_allclose(weights, column(f"weight_{name}"), atol=TOLERANCE)
        np.testing.assert_allclose(printed(lambda d, n=name: d["member_targets"][n]),
                                   column(f"position_{name}"), atol=TOLERANCE)
    assert np.ptp(weights) > 0.1  # the vote moved with the members' paper returns
    probability = printed(lambda d: d["trade_probability"])
    np.testing.assert_allclose(probability, column("trade_probability"), atol=TOLERANCE)
    assert np.ptp(probability) > 0.1
    assert {d["rule"] for d in decisions} == {"vote"}
    # Another rule and threshold of the same checkpoint: combine= / min_trade_probability=.
    other = tmp_path / "router"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", f"run_dir={run_dir}", f"out={other}", "combine=router",
                     "min_trade_probability=0.3"]) == 0
        assert main(["export", f"run_dir={run_dir}", f"out={tmp_path / 'x'}",
                     "combine=majority"]) != 0
    combine = json.loads((other / "manifest.json").read_text())["network"]["combine"]
    assert combine["rule"] == "router" and combine["min_trade_probability"] == pytest.approx(0.3)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("rule", "gate"), [("router", 0.0), ("winner", 0.0), ("vote", 0.3)])
def test_runner_combines_like_the_backtest(trained, restored, tmp_path, rule, gate) -> None:
    """Each rule (and the trade-probability gate) exported through write_bundle: the runner
    equals the backtest of the same policy params on the test split."""
    from jaxtrade.evaluate import ensemble as ensemble_eval
    from jaxtrade.evaluate.backtest import agent_policy, backtest
    from jaxtrade.export import write_bundle
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    frame = trained[1]
    prep, run_params, fitted = restored
    params = ensemble_eval.with_rule(run_params, rule, fitted, gate)
    result = backtest(prep.env, prep.env_params, agent_policy(prep.agent, params), split="test")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=prep.agent_config,
                          head={"family": "ensemble"}, env=prep.env,
                          env_params=prep.env_params)
    runner = Runner(load_bundle(bundle))
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    decisions = []
    for t, *values in zip(frame["timestamp"].dt.epoch("us").to_list(),
                          *[frame[c].to_list() for c in ("open", "high", "low", "close",
                                                         "volume")]):
        decision = runner.process(Bar(t, *values), trade=t >= start)
        if decision is not None:
            decisions.append(decision)
    assert len(decisions) == result.num_bars
    weights = np.array([[d["member_weights"][n] for n in ("ppo", "sac")] for d in decisions])
    probability = np.array([d["trade_probability"] for d in decisions])
    targets = np.array([d["target_position"] for d in decisions])
    np.testing.assert_allclose(weights, result.report["weights"], atol=TOLERANCE)
    np.testing.assert_allclose(probability, result.report["trade_probability"], atol=TOLERANCE)
    np.testing.assert_allclose(targets[:-1], result.target_positions[:-1, 0], atol=TOLERANCE)
    if rule == "router":  # regime probabilities move the weights bar by bar
        assert np.ptp(weights[:, 0]) > 0.1
    if rule == "winner":
        assert set(weights.ravel().tolist()) == {0.0, 1.0}
    if gate:  # the gate holds the book flat on some bars and not on others
        flat = probability < gate
        assert flat.any() and (~flat).any()
        np.testing.assert_array_equal(targets[:-1][flat[:-1]], 0.0)


def test_numpy_combination_equals_combine_py_function_by_function() -> None:
    """The port against agents/common/combine.py on random windows (partly filled, members
    far apart and close together), without training: vote weights, trade probability and the
    Student-t CDF on both of its paths (the series for whole degrees of freedom, the continued
    fraction otherwise). A change to combine.py's formulas fails here first."""
    import jax.numpy as jnp

    from agents.common import combine as comb
    from jaxtrade.live import ensemble as port

    rng = np.random.default_rng(0)
    for trial in range(6):
        window, members = 64, 2 + trial % 3
        spread = 10.0 ** -(2 + trial % 3)  # members' mean returns apart by this
        returns = (rng.normal(0.0, 0.01, (window, members))
                   + spread * rng.normal(size=members)).astype(np.float32)
        mask = np.arange(window) < rng.integers(0, window + 1)
        floor = np.float32(rng.uniform(0.0, 1e-4))
        expected = comb.vote_weights(jnp.asarray(returns), jnp.asarray(mask), 20.0, floor)
        got = port.vote_weights(returns.astype(np.float64), mask, 20.0, float(floor))
        np.testing.assert_allclose(got, np.asarray(expected), atol=2e-5)
        own = returns[:, 0]
        cost, exposure = np.float32(rng.uniform(0.0, 1e-3)), np.float32(rng.uniform(0.1, 1.0))
        expected = comb.trade_probability(jnp.asarray(own), jnp.asarray(mask), 20.0, cost,
                                          exposure, floor * exposure ** 2)
        got = port.trade_probability(own.astype(np.float64), mask, 20.0, float(cost),
                                     float(exposure), float(floor * exposure ** 2))
        np.testing.assert_allclose(got, float(expected), atol=2e-5)
    x = np.linspace(-30.0, 30.0, 241)
    for df in (1.0, 2.0, 7.0, 66.0, 2.5, 13.3):
        expected = comb.student_t_cdf(jnp.asarray(x, jnp.float32), jnp.float32(df))
        # JAX's float32 betainc is off by up to 2.8e-6 at df = 66 (measured; 6e-7 below).
        np.testing.assert_allclose(port.student_t_cdf(x, np.float64(df)), np.asarray(expected),
                                   atol=5e-6)
