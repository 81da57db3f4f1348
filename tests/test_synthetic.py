"""Synthetic market generator: shapes, OHLC consistency, vmap, statistics, planted signal."""

from __future__ import annotations

import datetime as dt

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from jaxtrade.data import synthetic
from jaxtrade.errors import ConfigError

# One long length shared by the statistics tests, so the generator compiles once for it.
LONG = 20000


def _log_returns(close: np.ndarray) -> np.ndarray:
    return np.diff(np.log(np.asarray(close, dtype=np.float64)), axis=0)


def _autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def test_frame_schema_and_ohlc_consistency():
    frame, regimes = synthetic.synthetic_frame(
        seed=3, num_bars=128, num_assets=2, start="2020-01-01", freq="4h", return_regimes=True
    )
    assert frame.columns == ["timestamp", "open", "high", "low", "close", "volume", "symbol"]
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    for column in ("open", "high", "low", "close", "volume"):
        assert frame.schema[column] == pl.Float64
    assert frame.height == 128 * 2 and regimes.shape == (frame.height,)
    assert set(np.unique(regimes)) <= {0, 1, 2}
    stamps = frame.filter(pl.col("symbol") == "SYN1").get_column("timestamp").to_list()
    assert stamps[0] == dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    assert all(b - a == dt.timedelta(hours=4) for a, b in zip(stamps, stamps[1:]))

    o, h, lo, c, v = (
        frame.get_column(k).to_numpy() for k in ("open", "high", "low", "close", "volume")
    )
    assert np.all(lo > 0) and np.all(v > 0)
    assert np.all(o[:2] == 100.0)  # start_price, exactly
    assert np.all(lo <= np.minimum(o, c)) and np.all(np.maximum(o, c) <= h)
    assert np.any(h > np.maximum(o, c)) and np.any(lo < np.minimum(o, c))
    # No overnight gap: the open of a bar is the previous close (fills at the open see it).
    for _, group in frame.group_by("symbol"):
        np.testing.assert_array_equal(group["open"].to_numpy()[1:], group["close"].to_numpy()[:-1])
    # Rows of one timestamp share its regime.
    assert np.all(regimes.reshape(128, 2) == regimes.reshape(128, 2)[:, :1])


def test_reproducible_per_seed_and_regimes_match_frame():
    # Same shapes as the vmap test (128 bars, 2 assets) so the generator compiles once.
    a, regimes = synthetic.synthetic_frame(seed=7, num_bars=128, num_assets=2, return_regimes=True)
    b = synthetic.synthetic_frame(seed=7, num_bars=128, num_assets=2)
    c = synthetic.synthetic_frame(seed=8, num_bars=128, num_assets=2)
    assert a.equals(b)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    np.testing.assert_array_equal(
        synthetic.synthetic_regimes(seed=7, num_bars=128, num_assets=2), regimes[::2]
    )
    single = synthetic.synthetic_frame(seed=7, num_bars=LONG)
    assert "symbol" not in single.columns and single.height == LONG


def test_vmap_over_1024_keys_and_over_params_equals_single_runs():
    params = synthetic.default_params()
    keys = jax.random.split(jax.random.key(0), 1024)
    batch = jax.vmap(synthetic.generate, in_axes=(0, None, None, None))(keys, params, 128, 2)
    assert batch.close.shape == (1024, 128, 2) and batch.regime.shape == (1024, 128)
    assert batch.close.dtype == jnp.float32 and batch.regime.dtype == jnp.int32
    for i in (0, 511, 1023):
        single = synthetic.generate(keys[i], params, 128, 2)
        for name in ("open", "high", "low", "close", "volume", "sigma"):
            np.testing.assert_allclose(getattr(batch, name)[i], getattr(single, name), rtol=2e-5)
        np.testing.assert_array_equal(batch.regime[i], single.regime)

    # Over keys and parameter sets at once (domain randomization).
    strengths = [0.0, 0.1, 0.2, 0.3]
    stacked = synthetic.stack_params([synthetic.planted_params(s) for s in strengths])
    both = jax.vmap(synthetic.generate, in_axes=(0, 0, None, None))(keys[:4], stacked, 128, 2)
    for i, s in enumerate(strengths):
        single = synthetic.generate(keys[i], synthetic.planted_params(s), 128, 2)
        np.testing.assert_allclose(both.close[i], single.close, rtol=2e-5)
        np.testing.assert_array_equal(both.regime[i], single.regime)


def test_garch_and_planted_ar_recovered_by_arch_package():
    """With one regime and no jumps the returns are an AR(1)-GARCH(1,1): `arch` must find it."""
    arch = pytest.importorskip("arch")
    params = synthetic.default_params().replace(
        regime_drift=jnp.zeros(3),
        regime_vol=jnp.full(3, 0.01),
        jump_prob=jnp.zeros(3),
        garch_alpha=jnp.float32(0.08),
        garch_beta=jnp.float32(0.88),
        predictability=jnp.float32(0.2),
    )
    paths = synthetic.generate(jax.random.key(11), params, LONG, 1)
    returns = 100.0 * _log_returns(np.concatenate([[100.0], np.asarray(paths.close[:, 0])]))
    fit = arch.arch_model(returns, mean="AR", lags=1, vol="GARCH", p=1, q=1).fit(disp="off")
    assert abs(fit.params["y[1]"] - 0.2) < 0.04
    assert abs(fit.params["alpha[1]"] - 0.08) < 0.03
    assert abs(fit.params["beta[1]"] - 0.88) < 0.04


def test_volatility_clustering_without_return_autocorrelation():
    frame = synthetic.synthetic_frame(seed=1, num_bars=LONG)
    returns = _log_returns(frame["close"].to_numpy())
    band = 3.0 / np.sqrt(len(returns))  # 3 standard errors of an autocorrelation under iid
    centered = returns - returns.mean()
    for lag in range(1, 6):
        assert _autocorr(np.abs(returns), lag) > 0.1 > 3 * band
        assert _autocorr(returns**2, lag) > band
        # Returns are uncorrelated but not independent (that is the clustering), so their
        # autocorrelation gets the heteroskedasticity-robust standard error.
        products = centered[:-lag] * centered[lag:]
        robust_se = np.sqrt(np.sum(products**2)) / np.sum(centered**2)
        assert abs(_autocorr(returns, lag)) < 3.0 * robust_se


def test_regimes_are_persistent_with_markov_durations():
    stay = np.array([0.95, 0.9, 0.8])
    matrix = np.tile(((1 - stay) / 2)[:, None], (1, 3))
    np.fill_diagonal(matrix, stay)
    params = synthetic.default_params().replace(transition=jnp.asarray(matrix, jnp.float32))
    regime = np.asarray(synthetic.generate(jax.random.key(5), params, LONG, 1).regime)
    change = np.flatnonzero(np.diff(regime)) + 1
    bounds = np.concatenate([[0], change, [len(regime)]])
    run_state, run_length = regime[bounds[:-1]], np.diff(bounds)
    # Drop the first and last runs (cut by the window) and compare with 1 / (1 - p_ii).
    run_state, run_length = run_state[1:-1], run_length[1:-1]
    for state in range(3):
        expected = 1.0 / (1.0 - stay[state])
        assert abs(run_length[run_state == state].mean() / expected - 1.0) < 0.12
    # Occupancy matches the stationary distribution of the chain.
    stationary = np.asarray(synthetic.stationary_distribution(jnp.asarray(matrix)))
    np.testing.assert_allclose(
        np.bincount(regime, minlength=3) / len(regime), stationary, atol=0.03
    )


def _sign_policy_sharpe(close: np.ndarray, cost_bps: float) -> float:
    """Hold sign(last return) decided at close t, filled at open t+1 (= close t), with costs."""
    simple = close[1:] / close[:-1] - 1.0
    position = np.sign(simple[:-1])  # decided after bar t, held over bar t+1
    turnover = np.abs(np.diff(position, prepend=0.0))
    pnl = position * simple[1:] - turnover * cost_bps * 1e-4
    return float(np.sqrt(252.0) * pnl.mean() / pnl.std())


def test_planted_signal_beats_costs_and_vanishes_without_it():
    key = jax.random.key(2)
    # Eight independent-enough windows of 2500 bars (~10 years of daily bars) each.
    planted = np.asarray(synthetic.generate(key, synthetic.planted_params(), LONG, 1).close[:, 0])
    plain = np.asarray(synthetic.generate(key, synthetic.planted_params(0.0), LONG, 1).close[:, 0])
    planted_sharpe = [_sign_policy_sharpe(c, cost_bps=5.0) for c in planted.reshape(8, -1)]
    plain_sharpe = [_sign_policy_sharpe(c, cost_bps=5.0) for c in plain.reshape(8, -1)]
    assert min(planted_sharpe) > 1.0, planted_sharpe
    assert np.mean(plain_sharpe) < 0.3, plain_sharpe


def test_crash_pair_trades_mean_for_tail_risk():
    frame = synthetic.crash_pair_frame(seed=4, num_bars=LONG)
    assert sorted(frame["symbol"].unique().to_list()) == ["CRASHY", "STEADY"]
    stats = {}
    for (symbol,), group in frame.group_by("symbol"):
        close = group["close"].to_numpy()
        simple = close[1:] / close[:-1] - 1.0
        tail = np.sort(simple)[: len(simple) // 100]
        stats[symbol] = (simple.mean(), tail.mean(), simple.min())
    crashy, steady = stats["CRASHY"], stats["STEADY"]
    assert crashy[0] > steady[0] + 2e-4  # higher mean return per bar
    assert crashy[1] < steady[1] - 0.03  # far worse 1 % CVaR
    assert steady[2] > -0.05 and crashy[2] < -0.1  # only CRASHY crashes


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        synthetic.synthetic_frame(num_bars=10, preset="nope")
    with pytest.raises(ConfigError, match="unknown synthetic parameter"):
        synthetic.synthetic_frame(num_bars=10, volatility=0.1)
    with pytest.raises(ConfigError, match="ISO date"):
        synthetic.synthetic_frame(num_bars=10, start="yesterday")
    with pytest.raises(ConfigError, match="freq"):
        synthetic.synthetic_frame(num_bars=10, freq="1 day")
    with pytest.raises(ConfigError, match="per-asset"):
        synthetic.synthetic_frame(num_bars=10, num_assets=3, preset="crash_pair")
