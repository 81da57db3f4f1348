"""Train/serve parity: the exported numpy runner equals the training pipeline bar for bar.

On real embedded data: incremental features equal `jaxtrade.features.compute`; the runner
started at the first bar of the test split (flat, same equity and costs) prints the backtest's
target positions bar for bar, and its paper-trading summary equals the backtest's metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from live_helpers import backtest_and_bundle, build_market, real_frame, shared_case

from jaxtrade import features as features_lib
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.features import FeatureEngine


def run_bundle(bundle, *args, python=sys.executable, timeout=120):
    proc = subprocess.run(
        [python, str(bundle / "runner.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    decisions = [x for x in lines if "target_position" in x]
    summary = next((x["summary"] for x in lines if "summary" in x), None)
    return proc, decisions, summary


@pytest.fixture(scope="module")
def mlp_case():
    return shared_case()


@pytest.mark.parametrize("name", ["sp500_daily", "eurusd_1h"])
def test_incremental_features_equal_the_training_engine(name):
    frame = real_frame(name, 2500)
    spec = features_lib.default_spec()
    reference = features_lib.compute(frame, spec).drop("timestamp").to_numpy()
    engine = FeatureEngine(spec.to_dict()["features"])
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    columns = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    ours = np.stack([engine.update(Bar(t, *values)) for t, *values in zip(stamps, *columns)])
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))  # same warm-up rows
    both = ~np.isnan(reference)
    # 1e-6 relative; the absolute floor covers values that are zero up to rounding
    # (a close equal to its window mean gives a z-score of +-1e-13 in either engine).
    np.testing.assert_allclose(ours[both], reference[both], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "inputs",
    [("log_return", "log_realized_vol_10"), ("abs_return", "realized_vol_5", "momentum_20")],
)
def test_regime_forward_filter_equals_the_training_model_bar_for_bar(inputs):
    from jaxtrade.features.regimes import REGIME_COLUMNS, fit_regimes
    from jaxtrade.live.regimes import RegimeFilter

    frame = real_frame("sp500_daily", 1500)
    model = fit_regimes(frame.head(900), features=inputs, n_init=1, n_iter=50)
    reference = model.transform(frame).select(REGIME_COLUMNS).to_numpy()
    live = RegimeFilter(json.loads(json.dumps(model.to_dict())))  # through JSON, as bundled
    close = frame["close"].to_numpy()
    ours = np.stack(
        [live.update(np.log(close[t] / close[t - 1]) if t else np.nan) for t in range(len(close))]
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9)
    assert ours.argmax(axis=1).min() != ours.argmax(axis=1).max()  # regimes really switch


def test_runner_observation_rows_equal_the_market_tensor_bar_for_bar(mlp_case):
    _, bundle, _, frame = mlp_case
    market = build_market(frame, regimes=True)  # the same pipeline that made the bundle
    expected = np.asarray(market.features)[:, 0, :]
    # No jump rule: the first bar of a stream would otherwise wait for the second.
    runner = Runner(load_bundle(bundle), max_jump_seconds=0)
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    columns = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    rows = []
    for t, *values in zip(stamps, *columns):
        runner.process(Bar(t, *values), trade=False)
        rows.append(runner.latest_row().copy())
    # Normalized float32 features: what the env and the runner both feed the policy.
    np.testing.assert_allclose(np.stack(rows), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(runner.market_state.atr, np.asarray(market.atr)[-1, 0], rtol=1e-6)
    np.testing.assert_allclose(
        runner.market_state.volatility, np.asarray(market.volatility)[-1, 0], rtol=1e-5
    )
    np.testing.assert_allclose(runner.last_regime, np.asarray(market.regime)[-1], atol=1e-6)


def test_runner_positions_equal_the_backtest_bar_for_bar(mlp_case):
    result, bundle, csv, _ = mlp_case
    proc, decisions, summary = run_bundle(
        bundle, "--bars", csv, "--start", str(result.timestamps[0]) + "Z"
    )
    assert proc.returncode == 0, proc.stderr
    assert [d["timestamp"][:10] for d in decisions] == [
        str(t)[:10] for t in result.timestamps.astype("datetime64[D]")
    ]
    targets = np.array([d["target_position"] for d in decisions])
    reference = result.target_positions[:, 0]
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
    # The backtest's last row is the policy's target before the risk manager (it has no
    # next bar to fill on); the runner applies the regime leverage cap there too.
    assert np.sign(targets[-1]) == np.sign(reference[-1])
    assert abs(targets[-1]) <= abs(reference[-1])
    assert len(set(targets.tolist())) >= 3  # the policy really trades: long, flat and short
    assert 0 < np.mean(np.abs(targets) == 1.0) < 1  # the regime caps bind on some bars
    # The held weight after each fill is the backtest's position at that bar.
    np.testing.assert_allclose(
        [d["position"] for d in decisions], result.positions[:, 0], atol=1e-5
    )
    # Paper-trading summary equals the backtest's metrics of the same period.
    for key in ("total_return", "sharpe", "sortino", "max_drawdown", "annual_volatility"):
        assert summary[key] == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(summary["final_equity"], result.equity[-1], rtol=1e-6)
    assert summary["costs_paid"] == pytest.approx(result.costs.sum(), rel=1e-4)


@pytest.mark.parametrize(
    "torso, overrides",
    [
        ("attention", {"obs_layout": "window", "action_mode": "continuous", "max_leverage": 1.5}),
        ("cnn", {"obs_layout": "flat", "fill_at_close": True, "stop_loss_atr": 2.0}),
    ],
)
def test_other_torsos_layouts_and_rules_match_the_backtest(tmp_path, torso, overrides):
    frame = real_frame("eurusd_1h", 700)
    result, bundle, _ = backtest_and_bundle(
        tmp_path, frame, torso=torso, window_bars=8, **overrides
    )
    runner = Runner(load_bundle(bundle))
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    targets = []
    for t, *values in zip(
        frame["timestamp"].dt.epoch("us").to_list(),
        *[frame[c].to_list() for c in ("open", "high", "low", "close", "volume")],
    ):
        decision = runner.process(Bar(t, *values), trade=t >= start)
        if decision is not None:
            targets.append(decision["target_position"])
    ref = result.target_positions[:, 0]
    assert np.ptp(ref) > 0.5  # decisions that really move
    if overrides.get("stop_loss_atr"):
        assert runner.ledger.num_stops > 0  # the stop rule really fired
    np.testing.assert_allclose(targets[:-1], ref[:-1], atol=2e-4)
    assert runner.summary()["total_return"] == pytest.approx(
        result.metrics["total_return"], abs=1e-4
    )


def test_recurrent_policy_carries_its_state_bar_to_bar_like_an_env_rollout(tmp_path):
    """A GRU actor run on the env with its carry threaded through every step (as in training
    rollouts) gives the runner's targets bar for bar; the runner keeps the carry between bars."""
    import jax
    import jax.numpy as jnp
    from live_helpers import make_policy

    import envs
    from agents.common.networks import network_carry
    from jaxtrade.evaluate.backtest import eval_bounds
    from jaxtrade.export import write_bundle

    frame = real_frame("eurusd_1h", 500)
    market = build_market(frame)
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, policy = make_policy(env, env_params, "gru")
    net = policy.network
    first, last = eval_bounds(env, env_params, "test")
    eval_params = env_params.replace(split=jnp.asarray(2, jnp.int32), eval_mode=jnp.asarray(True))
    resets = jnp.zeros((1, 1), bool)
    act = jax.jit(lambda c, o: net.apply(params, c, o[None, None], resets)[:2])
    step = jax.jit(env.step_env)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, eval_params)
    carry, expected = network_carry(cfg, (1,)), []
    for _ in range(last - first):
        carry, dist = act(carry, obs)
        obs, state, _, _, info = step(key, state, jnp.argmax(dist.logits[0, 0]), eval_params)
        expected.append(float(info["target_weights"][0]))

    bundle = write_bundle(
        tmp_path / "gru", params=params, network_config=cfg, env=env, env_params=env_params
    )
    runner = Runner(load_bundle(bundle))
    start = int(market.meta.timestamps[first].astype("datetime64[us]").astype(np.int64))
    targets = []
    for t, *values in zip(
        frame["timestamp"].dt.epoch("us").to_list(),
        *[frame[c].to_list() for c in ("open", "high", "low", "close", "volume")],
    ):
        decision = runner.process(Bar(t, *values), trade=t >= start)
        if decision is not None:
            targets.append(decision["target_position"])
    assert len(set(expected)) == 3
    np.testing.assert_array_equal(targets[:-1], expected)

    # The backtest of the same recurrent policy (carry reset at the split start, threaded bar
    # to bar) prints what the runner started at the split start prints, bar for bar.
    from jaxtrade.evaluate.backtest import backtest

    def recurrent_policy(key, obs, state, p, carry):
        batched = jax.tree.map(lambda c: c[None], carry)
        batched, dist = net.apply(params, batched, obs[None, None], resets)[:2]
        return jnp.argmax(dist.logits[0, 0]), jax.tree.map(lambda c: c[0], batched)

    recurrent_policy.init_carry = lambda: network_carry(cfg, ())
    result = backtest(env, env_params, recurrent_policy, split="test")
    np.testing.assert_array_equal(result.target_positions[:-1, 0], expected)
    np.testing.assert_array_equal(targets[:-1], result.target_positions[:-1, 0])
    assert runner.summary()["total_return"] == pytest.approx(
        result.metrics["total_return"], abs=1e-5
    )


def _yahoo_csv(frame, path):
    """Yahoo-style daily CSV: Date,Open,High,Low,Close,Adj Close,Volume."""
    import polars as pl

    pl.DataFrame({"Date": frame["timestamp"].dt.strftime("%Y-%m-%d"), "Open": frame["open"],
                  "High": frame["high"], "Low": frame["low"], "Close": frame["close"],
                  "Adj Close": frame["close"], "Volume": frame["volume"]}).write_csv(path)
    return path


def _binance_klines(frame, path):
    """A klines file as the exchange publishes it: no header, open time in epoch ms, OHLCV,
    close time, quote volume, trades, taker volumes, an ignored column."""
    import polars as pl

    opened = frame["timestamp"].dt.epoch("ms")
    pl.DataFrame({"a": opened, "o": frame["open"], "h": frame["high"], "l": frame["low"],
                  "c": frame["close"], "v": frame["volume"], "ct": opened + 3_600_000 - 1,
                  "q": frame["volume"] * frame["close"], "n": pl.Series(range(frame.height)),
                  "tb": frame["volume"] / 2, "tq": frame["volume"] * frame["close"] / 2,
                  "i": pl.Series([0] * frame.height)}).write_csv(path, include_header=False)
    return path


@pytest.mark.parametrize(
    "layout, dataset, section, mode",
    [
        ("yahoo", "sp500_daily", {"name": "qrdqn", "num_quantiles": 8, "act_on": "cvar",
                                  "act_cvar_alpha": 0.25}, "discrete"),
        ("binance", "eurusd_1h", {"name": "sac"}, "continuous"),
    ],
)
def test_runner_py_on_a_vendor_file_gives_the_backtests_positions(tmp_path, layout, dataset,
                                                                 section, mode):
    """The training pipeline reads a Yahoo-style CSV (QR-DQN, CVaR acting) or a Binance klines
    file (SAC) with `load_ohlcv`; the bundle records how (`describe_source`), and runner.py
    reads the same file that way and prints the backtest's positions bar for bar."""
    import jax
    from live_helpers import make_pair, random_policy_params

    from jaxtrade.data import load_ohlcv
    from jaxtrade.data.loaders import describe_source
    from jaxtrade.evaluate.backtest import agent_policy, backtest
    from jaxtrade.export import write_bundle

    frame = real_frame(dataset, 600)
    write = _yahoo_csv if layout == "yahoo" else _binance_klines
    path = write(frame, tmp_path / f"{layout}.csv")
    loaded = load_ohlcv(path)
    np.testing.assert_array_equal(loaded["close"].to_numpy(), frame["close"].to_numpy())
    market = build_market(loaded)
    env, env_params, agent, config = make_pair(market, section, mode, "mlp")
    obs = env.reset(jax.random.key(0), env_params)[0]
    params = random_policy_params(agent, config, obs, discrete=mode == "discrete")
    result = backtest(env, env_params, agent_policy(agent, params), split="test")
    bundle = write_bundle(tmp_path / "bundle", params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params,
                          bars=describe_source(path))
    assert load_bundle(bundle).manifest["bars"]["format"] == layout

    proc, decisions, summary = run_bundle(
        bundle, "--bars", path, "--start", str(result.timestamps[0]) + "Z")
    assert proc.returncode == 0, proc.stderr
    assert summary["accepted_bars"] == frame.height and summary["rejected_bars"] == 0
    targets = np.array([d["target_position"] for d in decisions])
    reference = result.target_positions[:, 0]
    assert len(targets) == len(reference)
    if mode == "discrete":
        assert len(set(reference.tolist())) >= 3  # the policy really changes its mind
        np.testing.assert_array_equal(targets[:-1], reference[:-1])
    else:
        assert np.ptp(reference) > 0.5
        np.testing.assert_allclose(targets[:-1], reference[:-1], atol=2e-4)
    np.testing.assert_allclose([d["position"] for d in decisions], result.positions[:, 0],
                               atol=1e-4)
    assert summary["total_return"] == pytest.approx(result.metrics["total_return"], abs=1e-4)
