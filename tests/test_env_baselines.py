"""Baseline policies and rollout_policy against closed-form expectations."""

import jax
import numpy as np

import envs
from envs import baselines
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
        ro = baselines.rollout_policy(env, params, baselines.buy_and_hold(env),
                                      jax.random.PRNGKey(0), split="test")
        start = int(ro.start_bar)
        assert start == 300 and ro.bar.shape == (T - 1 - 300,)
        np.testing.assert_array_equal(np.asarray(ro.bar), np.arange(301, T))
        vol = float(MARKET.volatility[start, 0])
        c = params.costs
        rate = (float(c.fee_bps) + float(c.half_spread_bps)
                + min(float(c.slippage_vol_mult) * vol * 1e4, float(c.slippage_cap_bps))) * 1e-4
        fill = CLOSE[start]  # the open of start+1
        expected = CLOSE[301:] / fill - 1.0 - rate
        np.testing.assert_allclose(np.asarray(ro.equity) - 1.0, expected, atol=tol)
        traded = np.asarray(ro.traded_notional)
        assert traded[0] > 0 and (mode == "discrete" or np.all(traded[1:] == 0))


def test_ma_crossover_on_a_rising_path_is_buy_and_hold():
    rising = from_arrays(100 * np.exp(0.001 * np.arange(T) + 0.002 * np.sin(np.arange(T))),
                         splits=SPLITS)
    env, params = envs.make("trading", rising, window_bars=10)
    key = jax.random.PRNGKey(0)
    ma = baselines.rollout_policy(env, params, baselines.ma_crossover(env, 5, 30), key, "test")
    bh = baselines.rollout_policy(env, params, baselines.buy_and_hold(env), key, "test")
    np.testing.assert_allclose(np.asarray(ma.equity), np.asarray(bh.equity), rtol=1e-6)


def test_zscore_reversion_shorts_a_steady_rally_and_is_flat_in_a_range():
    ramp = from_arrays(np.linspace(100, 200, T), splits=SPLITS)
    env, params = envs.make("trading", ramp, window_bars=10, action_mode="continuous")
    ro = baselines.rollout_policy(env, params, baselines.zscore_reversion(env, 20, 1.0),
                                  jax.random.PRNGKey(0), "validation")
    # On a linear ramp the last close's z-score is sqrt(3 (n-1)/(n+1)) = 1.65 > 1: short.
    np.testing.assert_allclose(np.asarray(ro.position)[:, 0], -1.0, atol=0.02)
    wide = baselines.rollout_policy(env, params, baselines.zscore_reversion(env, 20, 2.0),
                                    jax.random.PRNGKey(0), "validation")
    assert np.all(np.asarray(wide.position) == 0)


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
    ro = baselines.rollout_policy(env, params, baselines.equal_risk_contribution(env, 60),
                                  jax.random.PRNGKey(0), "test")
    pos = np.asarray(ro.position)[-1]
    assert pos[0] > pos[1] > pos[2] > 0  # low-volatility assets get larger weights
    rnd = baselines.random_policy(env)
    a = baselines.rollout_policy(env, params, rnd, jax.random.PRNGKey(5), "test")
    b = baselines.rollout_policy(env, params, rnd, jax.random.PRNGKey(5), "test")
    np.testing.assert_array_equal(np.asarray(a.equity), np.asarray(b.equity))
    assert np.asarray(a.costs).sum() > np.asarray(ro.costs).sum()


def test_default_env_on_the_embedded_market_walks_every_split():
    from jaxtrade.data import load_ohlcv
    from jaxtrade.market import build

    market = build(load_ohlcv("sp500_daily").tail(800))
    env, params = envs.make("trading", market)
    assert env.observation_shape == (32 * market.num_features + 5,)
    policy = baselines.ma_crossover(env, 10, 40)
    for split in ("train", "validation", "test"):
        ro = baselines.rollout_policy(env, params, policy, jax.random.PRNGKey(0), split)
        start, end = market.split_bounds(split)
        assert int(ro.bar[-1]) == end - 1 and int(ro.start_bar) == max(start, 31)
        assert np.all(np.isfinite(np.asarray(ro.equity))) and np.asarray(ro.costs).sum() > 0
