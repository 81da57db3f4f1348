"""Backtests, baselines, walk-forward, Monte Carlo and the deploy gate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import baselines as env_baselines
from jaxtrade import market as market_lib
from jaxtrade.data.splits import Splits
from jaxtrade.data.splits import walk_forward as make_folds
from jaxtrade.evaluate import backtest as bt
from jaxtrade.evaluate import baselines as sup
from jaxtrade.evaluate import compare, gate, montecarlo
from jaxtrade.evaluate import walk_forward as wf

NUM_BARS = 400
SPLITS = np.array([[0, 200], [200, 300], [300, 400]])


def planted_market(seed: int = 0, strength: float = 0.004):
    """Close path whose next-bar return follows the sign of feature 0 (known at t)."""
    rng = np.random.default_rng(seed)
    signal = rng.choice([-1.0, 1.0], size=NUM_BARS)
    returns = np.zeros(NUM_BARS)
    returns[1:] = strength * signal[:-1] + rng.normal(0.0, 0.006, NUM_BARS - 1)
    close = 100.0 * np.exp(np.cumsum(returns))
    features = np.stack([signal, rng.normal(size=NUM_BARS)], axis=-1)
    return market_lib.from_arrays(close, features=features, splits=SPLITS), close


@pytest.fixture(scope="module")
def setup():
    market, close = planted_market()
    env, params = envs.make("trading", market, window_bars=8)
    return env, params, close


@pytest.fixture(scope="module")
def buy_and_hold(setup):
    return env_baselines.buy_and_hold(setup[0])


def test_buy_and_hold_equals_price_path_minus_costs(setup, buy_and_hold) -> None:
    env, params, close = setup
    result = bt.backtest(env, params, buy_and_hold, split="test")
    first, last = bt.eval_bounds(env, params, "test")
    assert (first, last) == (300, 399)
    # Decided at the close of `first`, filled at the next open (= that close here) with
    # fee + half-spread + volatility slippage, then held without rebalancing.
    vol = float(params.market.volatility[first, 0])
    rate = (1.0 + 1.0 + min(0.05 * vol * 1e4, 25.0)) * 1e-4
    expected = close[first : last + 1] / close[first] - rate
    expected[0] = 1.0
    np.testing.assert_allclose(result.equity, expected, rtol=2e-5)
    assert result.trades.sum() == 1 and result.costs[1] == pytest.approx(rate, rel=1e-4)
    assert result.metrics["total_return"] == pytest.approx(expected[-1] - 1.0, rel=1e-4)
    assert result.metrics["num_trades"] == 1 and result.metrics["exposure"] == 1.0

    frame = result.frame()
    assert frame.columns[:3] == ["timestamp", "symbol", "split"]
    for column in ("equity", "return", "position", "target_position", "trade", "cost"):
        assert column in frame.columns
    assert frame.height == last - first + 1 and set(frame["split"]) == {"test"}
    assert frame["timestamp"].dtype.time_zone == "UTC"


def test_backtest_is_deterministic_and_causal(setup) -> None:
    env, params, close = setup
    policy = env_baselines.ma_crossover(env, fast_bars=5, slow_bars=20)
    a = bt.backtest(env, params, policy, split="validation")
    b = bt.backtest(env, params, policy, split="validation")
    np.testing.assert_array_equal(a.equity, b.equity)
    np.testing.assert_array_equal(a.target_positions, b.target_positions)
    # Changing prices after bar k changes nothing recorded at bars <= k.
    k = 250
    bumped = close.copy()
    bumped[k + 1 :] *= np.linspace(1.1, 0.7, NUM_BARS - k - 1)
    market = market_lib.from_arrays(bumped, features=np.asarray(params.market.features),
                                    splits=SPLITS)
    c = bt.backtest(env, params.replace(market=market), policy, split="validation")
    upto = k - 200 + 1  # rows are bars 200 .. 299
    np.testing.assert_allclose(c.equity[:upto], a.equity[:upto], rtol=1e-6)
    np.testing.assert_array_equal(c.target_positions[:upto], a.target_positions[:upto])
    assert not np.allclose(c.equity[upto + 1 :], a.equity[upto + 1 :])


def test_supervised_baseline_fits_on_train_only_and_finds_the_planted_signal(setup) -> None:
    env, params, close = setup
    model = sup.fit_direction_model(params.market)
    assert model.train_accuracy > 0.65
    assert abs(model.coef[0]) > 5 * abs(model.coef[1])  # the informative feature
    # Test-split prices do not influence the fit.
    scrambled = close.copy()
    scrambled[300:] = close[300] * np.exp(np.random.default_rng(1).normal(0, 0.05, 100))
    other = market_lib.from_arrays(scrambled, features=np.asarray(params.market.features),
                                   splits=SPLITS)
    np.testing.assert_allclose(sup.fit_direction_model(other).coef, model.coef, rtol=1e-6)
    results = sup.run_baselines(env, params, splits=("test",), policies={})
    test = results["logistic"]["test"]
    assert test.metrics["sharpe"] > 2.0 and test.metrics["total_return"] > 0.1


def test_walk_forward_folds_do_not_overlap_and_stitch(setup, buy_and_hold) -> None:
    env, params, close = setup
    folds = make_folds(NUM_BARS, train_bars=150, test_bars=60, embargo_bars=5)
    assert len(folds) == 4
    seen = []

    def train_fn(fold, env_, fold_params):
        seen.append(np.asarray(fold_params.market.splits).tolist())
        return buy_and_hold

    with pytest.warns(UserWarning, match=r"fold\(s\) \[0\]:"):
        result = wf.walk_forward(env, params, folds, train_fn)
    windows = [f.test for f in result.folds]
    for (_, e0), (s1, _) in zip(windows, windows[1:]):
        assert e0 <= s1
    for fold in result.folds:
        assert fold.train[1] + 5 <= fold.test[0]
    assert seen[0] == np.asarray(folds[0].as_array()).tolist()
    per_fold = [r.returns[1:] for r in result.fold_results]
    assert len(result.returns) == sum(len(r) for r in per_fold)
    expected_final = np.prod([np.prod(1 + r) for r in per_fold])
    assert result.equity[-1] == pytest.approx(expected_final, rel=1e-9)
    assert result.metrics["total_return"] == pytest.approx(expected_final - 1, rel=1e-4)
    assert np.all(np.diff(result.timestamps.astype("int64")) > 0)
    assert result.fold_table().height == 4
    rebuilt = []

    def params_fn(fold):  # a market built per fold: its own split bounds, nothing shared
        rebuilt.append(fold)
        return wf.with_splits(params, fold)

    wf.walk_forward(env, params, folds, train_fn, params_fn=params_fn)
    assert rebuilt == folds and seen[-1] == np.asarray(folds[-1].as_array()).tolist()
    overlapping = [folds[0], Splits(train=(0, 150), validation=(150, 150), test=(200, 260))]
    with pytest.raises(ValueError, match="overlaps"):
        wf.check_folds(overlapping)


def test_stationary_bootstrap_preserves_block_structure() -> None:
    num_bars, block = 500, 20.0
    idx = np.asarray(
        montecarlo.stationary_bootstrap_indices(jax.random.PRNGKey(0), num_bars, 400, block)
    )
    assert idx.shape == (400, num_bars) and idx.min() >= 0 and idx.max() < num_bars
    step = (np.diff(idx, axis=1)) % num_bars
    continues = step == 1
    # Inside a block the path walks forward bar by bar; restarts happen with rate 1/block.
    restart_rate = 1.0 - continues.mean()
    assert restart_rate == pytest.approx(1.0 / block, rel=0.1)
    # Autocorrelation survives block resampling and is destroyed by one-bar blocks.
    rng = np.random.default_rng(0)
    ar = np.zeros(num_bars)
    for t in range(1, num_bars):
        ar[t] = 0.8 * ar[t - 1] + rng.normal()
    lag1 = lambda x: np.mean([np.corrcoef(p[:-1], p[1:])[0, 1] for p in x])
    blocks = ar[idx]
    iid = ar[np.asarray(montecarlo.stationary_bootstrap_indices(
        jax.random.PRNGKey(1), num_bars, 400, 1.0))]
    assert lag1(blocks) > 0.6
    assert abs(lag1(iid)) < 0.1


def test_bootstrap_distributions_and_crash_days() -> None:
    rng = np.random.default_rng(2)
    returns = rng.normal(0.001, 0.01, 300)
    mc = montecarlo.bootstrap(returns, 252.0, num_paths=1000, num_crashes=3, crash_move=-0.1)
    assert mc.sharpe.shape == (1000,) and mc.equity_quantiles.shape == (5, 300)
    # The bootstrap centres on the sample: the median Sharpe is near the observed one.
    observed = returns.mean() / returns.std(ddof=1) * math.sqrt(252)
    assert np.median(mc.sharpe) == pytest.approx(observed, abs=0.5)
    assert np.all(mc.max_drawdown <= 0)
    # Three -10% days on a fully long book cost about 27% of final equity on every path.
    ratio = (1 + mc.crash_final_return) / (1 + mc.final_return)
    np.testing.assert_allclose(ratio, 0.9**3, rtol=1e-4)
    summary = mc.summary()
    assert summary["num_paths"] == 1000 and "crash_days" in summary
    assert summary["sharpe"]["p05"] < summary["sharpe"]["p50"] < summary["sharpe"]["p95"]


def test_fan_chart_quantiles_equal_numpy_with_signed_zeros_infinities_and_nan() -> None:
    rng = np.random.default_rng(4)
    values = np.cumprod(1 + rng.normal(0, 0.02, (501, 40)), axis=1) - 1.0  # both signs
    values[3, 5], values[4, 5], values[7, 9], values[8, 9] = -0.0, 0.0, np.inf, -np.inf
    values[1, 11] = np.nan
    values = values.astype(np.float32)
    ours = np.asarray(montecarlo.path_quantiles(jnp.asarray(values), montecarlo.QUANTILES))
    reference = np.quantile(values, montecarlo.QUANTILES, axis=0)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, equal_nan=True)
    assert np.isnan(ours[:, 11]).all() and np.isfinite(ours[:, 12]).all()


def test_stress_doubled_costs_and_delayed_fills(setup) -> None:
    env, params, _ = setup
    model = sup.fit_direction_model(params.market)
    policy = sup.supervised_policy(env, model)
    stress = montecarlo.stress_tests(env, params, policy, split="test")
    base, doubled, delayed = stress["base"], stress["costs_x2"], stress["delayed_1_bar"]
    assert doubled["total_return"] < base["total_return"]
    # The planted signal lasts one bar: acting a bar late destroys the edge.
    assert delayed["sharpe"] < base["sharpe"] - 2.0


def _write_metrics(run_dir: Path, sharpe: float, drawdown: float) -> Path:
    (run_dir / "report").mkdir(parents=True)
    metrics = {split: {"sharpe": sharpe, "max_drawdown": drawdown, "total_return": 0.1}
               for split in ("train", "validation", "test")}
    metrics["baselines"] = {"buy_and_hold": {"test": {"sharpe": 0.4}}}
    metrics["sweep_trials"] = 4
    (run_dir / "report" / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_deploy_gate(tmp_path: Path, capsys) -> None:
    old = _write_metrics(tmp_path / "old", 1.0, -0.20)
    better = _write_metrics(tmp_path / "better", 1.06, -0.15)
    marginal = _write_metrics(tmp_path / "marginal", 1.04, -0.10)
    deeper = _write_metrics(tmp_path / "deeper", 1.5, -0.30)
    assert gate.compare_runs(better, old).promote
    decision = gate.compare_runs(marginal, old)
    assert not decision.promote and "factor" in decision.reason
    decision = gate.compare_runs(deeper, old)
    assert not decision.promote and "drawdown" in decision.reason
    assert gate.compare_runs(marginal, old, factor=1.02).promote
    negative = _write_metrics(tmp_path / "neg", -0.5, -0.2)
    assert gate.compare_runs(_write_metrics(tmp_path / "less_neg", -0.4, -0.2), negative).promote
    assert gate.main([str(better), str(old)]) == 0
    assert "PROMOTE" in capsys.readouterr().out
    assert gate.main([str(marginal), str(old)]) == 3
    assert gate.main([str(tmp_path / "missing"), str(old)]) == 2


def test_compare_runs_table_and_csv(tmp_path: Path, capsys) -> None:
    a = _write_metrics(tmp_path / "run_a", 1.0, -0.2)
    b = _write_metrics(tmp_path / "run_b", 1.5, -0.1)
    frame = compare.compare_runs([a, b])
    assert frame["run"].to_list() == ["run_a", "run_b"]
    assert frame["validation_sharpe"].to_list() == [1.0, 1.5]
    assert frame["best_baseline"].to_list() == ["buy_and_hold"] * 2
    assert frame["seeds"].to_list() == [1, 1]  # reports without a "seeds" record: one seed
    assert frame["validation_sharpe_iqm"].to_list() == [1.0, 1.5]
    assert frame["validation_sharpe_std"].to_list() == [None, None]
    csv = tmp_path / "cmp.csv"
    assert compare.main_compare([str(a), str(b), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "run_a" in out and "val Sharpe" in out
    assert csv.read_text().splitlines()[0].startswith("run,agent,seeds,validation_sharpe,")


def test_compare_fits_100_columns_with_agents_seeds_and_no_nan(tmp_path: Path, capsys) -> None:
    from jaxtrade.evaluate.seeds import seed_summary

    single = _write_metrics(tmp_path / "ppo_single_seed_on_a_long_run_directory_name", 1.0, -0.2)
    (single / "config.yaml").write_text("agent:\n  name: ppo\nseed: 0\n")
    metrics = json.loads((single / "report" / "metrics.json").read_text())
    metrics["sweep_trials"] = 1  # one trial: no deflated Sharpe, and no NaN printed for it
    (single / "report" / "metrics.json").write_text(json.dumps(metrics))
    several = _write_metrics(tmp_path / "dqn5", 0.5, -0.3)
    per_point = [{s: {"sharpe": v, "total_return": v / 10, "max_drawdown": -0.1 - v / 100}
                  for s in ("validation", "test")} for v in (0.1, 0.2, 0.3, 0.9, -0.4)]
    metrics = json.loads((several / "report" / "metrics.json").read_text())
    metrics["agent"] = "dqn"
    metrics["seeds"] = seed_summary(per_point, [{"seed": i} for i in range(5)], 3, 40)
    metrics["significance"] = {"dsr": 0.42}
    (several / "report" / "metrics.json").write_text(json.dumps(metrics))

    frame = compare.compare_runs([single, several])
    assert frame["agent"].to_list() == ["ppo", "dqn"]
    assert frame["seeds"].to_list() == [1, 5]
    assert frame["test_sharpe_mean"][1] == pytest.approx(0.22)
    assert frame["test_sharpe_iqm"][1] == pytest.approx(0.2)  # mean of 0.1, 0.2, 0.3
    low, high = frame["test_sharpe_iqm_ci_low"][1], frame["test_sharpe_iqm_ci_high"][1]
    assert -0.4 <= low <= 0.2 <= high <= 0.9
    assert frame["dsr"].to_list() == [None, 0.42]

    assert compare.main_compare([str(single), str(several)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "nan" not in out.lower()
    assert "over seeds: Sharpe" in out and "0.20 [" in out  # dqn5's IQM with its interval
    assert "0.22 ± " in out
    # Why each dash: one note per reason (wrapped to the width), naming the runs concerned.
    notes = " ".join(out[out.index("DSR -:"):].split())
    assert notes.count("DSR -:") == 1
    dsr, rest = notes.removeprefix("DSR -: ").split(" IQM CI [-]: ")
    assert dsr.startswith("ppo_single") and "needs >= 2 trials" in dsr and "dqn5" not in dsr
    assert rest.startswith("ppo_single") and "dqn5" not in rest
    csv = tmp_path / "wide.csv"
    assert compare.main_compare([str(single), str(several), "--csv", str(csv)]) == 0
    header = csv.read_text().splitlines()[0].split(",")
    assert {"agent", "seeds", "test_sharpe_iqm_ci_low", "test_max_drawdown_std"} <= set(header)
    assert "nan" not in csv.read_text().lower()


def test_scale_costs_and_description(setup) -> None:
    _, params, _ = setup
    doubled = bt.scale_costs(params, 2.0)
    assert float(doubled.costs.fee_bps) == 2 * float(params.costs.fee_bps)
    assert "commission 1 bps" in bt.costs_description(params)
    assert float(jnp.asarray(doubled.costs.min_trade_fraction)) == float(
        params.costs.min_trade_fraction
    )


def test_multi_asset_backtest_rows_and_erc_baseline() -> None:
    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, [0.005, 0.02], (300, 2)), axis=0))
    market = market_lib.from_arrays(close, splits=np.array([[0, 150], [150, 220], [220, 300]]),
                                    symbols=("LOW", "HIGH"))
    env, params = envs.make("trading", market, window_bars=8, action_mode="continuous")
    policies = sup.rule_baselines(env)
    assert "equal_risk_contribution" in policies
    results = sup.run_baselines(env, params, splits=("test",), include_supervised=False,
                                policies={"erc": policies["equal_risk_contribution"]})
    erc = results["erc"]["test"]
    frame = erc.frame()
    assert frame.height == erc.num_bars * 2
    assert frame["symbol"].to_list()[:2] == ["LOW", "HIGH"]
    # Equal risk: the calmer asset gets the larger long weight, weights sum to one.
    weights = erc.target_positions[:-1]
    assert np.all(weights[:, 0] > 2 * weights[:, 1]) and np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    assert erc.metrics["exposure"] == 1.0


def test_recurrent_agent_backtest_carries_its_state_from_the_split_start(setup) -> None:
    """A GRU agent's backtest equals a bar-by-bar loop that threads `agent.act`'s carry from
    `init_carry()` at the split start (as training rollouts and the live runner do), and
    differs from acting from a fresh state on every bar."""
    import agents
    from agents import NetworkConfig, PPOConfig

    env, env_params, _ = setup
    network = NetworkConfig(torso="gru", hidden_sizes=(16,), recurrent_size=16)
    config = PPOConfig(num_envs=2, num_minibatches=1, rollout_len=8, total_steps=32,
                       network=network)
    agent = agents.make_agent(config, env, env_params)
    params = agent.init(jax.random.key(3), None, env_params).params
    # A strong policy head so that the hidden state moves decisions from bar to bar.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 50.0 if "policy_head" in jax.tree_util.keystr(path) else x, params)
    result = bt.backtest(env, env_params, bt.agent_policy(agent, params), split="test")

    first, last = bt.eval_bounds(env, env_params, "test")
    walk_params = bt.eval_params(env_params, "test")
    key = jax.random.PRNGKey(0)
    act = jax.jit(lambda obs, state, carry: agent.act(params, obs, state, walk_params, key,
                                                      carry, True))
    act_fresh = jax.jit(lambda obs, state: agent.act(params, obs, state, walk_params, key,
                                                     agent.init_carry(), True)[0])
    step = jax.jit(env.step_env)
    obs, state = env.reset(key, walk_params)
    carry, carried, fresh = agent.init_carry(), [], []
    for _ in range(last - first):
        action, carry = act(obs, state, carry)
        fresh.append(float(env.action_to_weights(act_fresh(obs, state), walk_params)[0]))
        obs, state, _, _, info = step(key, state, action, walk_params)
        carried.append(float(info["target_weights"][0]))
    final, _ = act(obs, state, carry)
    carried.append(float(env.action_to_weights(final, walk_params)[0]))
    assert len(set(carried)) >= 2  # decisions that really move
    np.testing.assert_array_equal(result.target_positions[:, 0], carried)
    # The old behaviour (a zero hidden state on every bar) decides otherwise on some bars.
    assert np.any(np.asarray(fresh) != np.asarray(carried[:-1]))
    # One compiled walk serves other parameters of the same agent (they are inputs).
    again = bt.backtest(env, env_params, bt.agent_policy(agent, params), split="test")
    np.testing.assert_array_equal(again.target_positions, result.target_positions)
