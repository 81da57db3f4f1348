"""Baseline policies, walked by the backtest, against closed-form expectations."""

import jax
import numpy as np

import envs
from envs import baselines
from jaxtrade.evaluate.backtest import backtest, eval_bounds
from jaxtrade.market import from_arrays

T = 400
SPLITS = np.array([[0, 200], [200, 300], [300, T]])
RNG = np.random.default_rng(3)
CLOSE = 100 * np.exp(np.cumsum(RNG.normal(0.0003, 0.012, T)))
MARKET = from_arrays(CLOSE, splits=SPLITS)  # open of t = close of t-1 (no gaps)


def test_buy_and_hold_equals_price_ratio_minus_entry_cost():
    # Continuous weights hold the units bought at the first open. The leverage cap sits a
    # hair above 1 because paying the entry cost leaves the position at 1.0004x equity, and
    # a binding cap would (rightly) trim it. Discrete mode holds the exposure level instead,
    # so it rebalances a little as costs accumulate: equal to a looser tolerance.
    for mode, lev, tol in (("continuous", 1.01, 3e-6), ("discrete", 1.0, 5e-4)):
        env, params = envs.make("trading", MARKET, window_bars=10, action_mode=mode,
                                max_leverage=lev)
        ro = backtest(env, params, baselines.buy_and_hold(env), "test",
                      key=jax.random.PRNGKey(0))
        start, last = eval_bounds(env, params, "test")
        # Row 0 is the first decision bar (300); rows 1.. are bars 301 .. T-1.
        assert (start, last) == (300, T - 1) and ro.num_bars == T - 300
        np.testing.assert_allclose(ro.close[:, 0], CLOSE[300:], rtol=1e-6)  # float32
        vol = float(MARKET.volatility[start, 0])
        c = params.costs
        rate = (float(c.fee_bps) + float(c.half_spread_bps)
                + min(float(c.slippage_vol_mult) * vol * 1e4, float(c.slippage_cap_bps))) * 1e-4
        fill = CLOSE[start]  # the open of start+1
        expected = CLOSE[301:] / fill - 1.0 - rate
        np.testing.assert_allclose(ro.equity[1:] - 1.0, expected, atol=tol)
        assert ro.trades[1] and (mode == "discrete" or not np.any(ro.trades[2:]))


def test_ma_crossover_on_a_rising_path_is_buy_and_hold():
    rising = from_arrays(100 * np.exp(0.001 * np.arange(T) + 0.002 * np.sin(np.arange(T))),
                         splits=SPLITS)
    env, params = envs.make("trading", rising, window_bars=10)
    key = jax.random.PRNGKey(0)
    ma = backtest(env, params, baselines.ma_crossover(env, 5, 30), "test", key=key)
    bh = backtest(env, params, baselines.buy_and_hold(env), "test", key=key)
    np.testing.assert_allclose(ma.equity, bh.equity, rtol=1e-6)


def test_zscore_reversion_shorts_a_steady_rally_and_is_flat_in_a_range():
    ramp = from_arrays(np.linspace(100, 200, T), splits=SPLITS)
    env, params = envs.make("trading", ramp, window_bars=10, action_mode="continuous")
    ro = backtest(env, params, baselines.zscore_reversion(env, 20, 1.0), "validation")
    # On a linear ramp the last close's z-score is sqrt(3 (n-1)/(n+1)) = 1.65 > 1: short.
    np.testing.assert_allclose(ro.positions[1:, 0], -1.0, atol=0.02)
    wide = backtest(env, params, baselines.zscore_reversion(env, 20, 2.0), "validation")
    assert np.all(wide.positions == 0)


def test_erc_weights_equalize_risk_contributions():
    vols = np.array([0.1, 0.2, 0.4])
    np.testing.assert_allclose(np.asarray(baselines.erc_weights(np.diag(vols**2))),
                               (1 / vols) / np.sum(1 / vols), rtol=1e-5)
    a = RNG.normal(size=(4, 4))
    cov = a @ a.T + 0.5 * np.eye(4)
    w = np.asarray(baselines.erc_weights(cov), dtype=np.float64)
    contrib = w * (cov @ w)
    np.testing.assert_allclose(contrib / contrib.sum(), 0.25, atol=1e-4)
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-6


def test_erc_and_random_on_a_multi_asset_market():
    close = 100 * np.exp(np.cumsum(RNG.normal(0, [0.005, 0.01, 0.03], (T, 3)), axis=0))
    market = from_arrays(close, splits=SPLITS)
    env, params = envs.make("trading", market, window_bars=10, action_mode="continuous")
    ro = backtest(env, params, baselines.equal_risk_contribution(env, 60), "test")
    pos = ro.positions[-1]
    assert pos[0] > pos[1] > pos[2] > 0  # low-volatility assets get larger weights
    rnd = baselines.random_policy(env)
    a = backtest(env, params, rnd, "test", key=jax.random.PRNGKey(5))
    b = backtest(env, params, rnd, "test", key=jax.random.PRNGKey(5))
    np.testing.assert_array_equal(a.equity, b.equity)
    assert a.costs.sum() > ro.costs.sum()


def test_default_env_on_the_embedded_market_walks_every_split():
    from jaxtrade.data import load_ohlcv
    from jaxtrade.market import build

    market = build(load_ohlcv("sp500_daily").tail(800))
    env, params = envs.make("trading", market)
    assert env.observation_shape == (32 * market.num_features + 5,)
    policy = baselines.ma_crossover(env, 10, 40)
    for split in ("train", "validation", "test"):
        ro = backtest(env, params, policy, split)
        start, end = market.split_bounds(split)
        assert eval_bounds(env, params, split) == (max(start, 31), end - 1)
        assert ro.num_bars == end - max(start, 31)
        assert np.all(np.isfinite(ro.equity)) and ro.costs.sum() > 0
