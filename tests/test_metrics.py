"""jaxtrade.metrics against empyrical / quantstats / pandas on real returns and edge cases."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from statistics import NormalDist

import empyrical as ep
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import polars as pl
import pytest
import quantstats as qs

from jaxtrade import metrics as M

EMBEDDED = Path(__file__).resolve().parents[1] / "jaxtrade" / "data" / "embedded"


def _close(name: str) -> np.ndarray:
    return pl.read_parquet(EMBEDDED / f"{name}.parquet")["close"].to_numpy()


def _returns(name: str) -> np.ndarray:
    close = _close(name)
    return close[1:] / close[:-1] - 1.0


def _reference(returns: np.ndarray, bars_per_year: float) -> dict[str, float]:
    series = pd.Series(returns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "sharpe": ep.sharpe_ratio(returns, annualization=bars_per_year),
            "sortino": ep.sortino_ratio(returns, annualization=bars_per_year),
            "max_drawdown": ep.max_drawdown(returns),
            "total_return": ep.cum_returns_final(returns),
            "annual_return": ep.annual_return(returns, annualization=bars_per_year),
            "annual_volatility": ep.annual_volatility(returns, annualization=bars_per_year),
            "calmar": ep.calmar_ratio(returns, annualization=bars_per_year),
            "var_5": ep.value_at_risk(returns, 0.05),
            "cvar_5": ep.conditional_value_at_risk(returns, 0.05),
            "tail_ratio": ep.tail_ratio(returns),
            "skew": series.skew(),
            "kurtosis": series.kurtosis(),
            "profit_factor": qs.stats.profit_factor(series),
            "win_rate": qs.stats.win_rate(series),
        }


def _same(ours: float, ref: float, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    if np.isnan(ref) or np.isinf(ref):
        return bool(np.isnan(ours) and np.isnan(ref) or ours == ref)
    return bool(np.isclose(ours, ref, rtol=rtol, atol=atol))


def _drawdown_duration_loop(returns: np.ndarray) -> int:
    equity, peak, run, longest = 1.0, 1.0, 0, 0
    for r in returns:
        equity *= 1.0 + r
        if equity >= peak:
            peak, run = equity, 0
        else:
            run += 1
            longest = max(longest, run)
    return longest


@pytest.mark.parametrize(
    "name, bars_per_year", [("sp500_daily", 252.0), ("eurusd_1h", 365.0 * 24)]
)
def test_metrics_match_references_on_real_returns(name: str, bars_per_year: float) -> None:
    returns = _returns(name)
    ours = M.metrics_dict(returns, bars_per_year)
    for key, ref in _reference(returns, bars_per_year).items():
        assert _same(ours[key], ref), (key, ours[key], ref)
    assert ours["max_drawdown_duration"] == _drawdown_duration_loop(returns)


EDGE_CASES = {
    "all_gains": np.linspace(0.001, 0.02, 60),
    "all_losses": -np.linspace(0.001, 0.02, 60),
    "constant": np.full(40, 0.002),
    "all_zero": np.zeros(40),
    "single_gain": np.array([0.03]),
    "single_loss": np.array([-0.02]),
    "two_bars": np.array([0.01, -0.02]),
    "first_bar_loss": np.array([-0.05, 0.01, 0.02, 0.03, -0.01]),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_metrics_match_references_on_edge_cases(case: str) -> None:
    returns = EDGE_CASES[case]
    ours = M.metrics_dict(returns, 252.0)
    for key, ref in _reference(returns, 252.0).items():
        assert _same(ours[key], ref, atol=1e-5), (case, key, ours[key], ref)
    assert ours["max_drawdown_duration"] == _drawdown_duration_loop(returns)


def test_edge_case_values_are_the_stated_conventions() -> None:
    gains = M.metrics_dict(EDGE_CASES["all_gains"], 252.0)
    assert gains["max_drawdown"] == 0.0 and math.isnan(gains["calmar"])
    assert gains["sortino"] == math.inf and gains["profit_factor"] == math.inf
    assert gains["win_rate"] == 1.0
    losses = M.metrics_dict(EDGE_CASES["all_losses"], 252.0)
    assert losses["win_rate"] == 0.0 and losses["profit_factor"] == 0.0
    assert losses["max_drawdown_duration"] == 60
    constant = M.metrics_dict(EDGE_CASES["constant"], 252.0)
    assert constant["sharpe"] == math.inf and constant["annual_volatility"] == 0.0
    single = M.metrics_dict(EDGE_CASES["single_loss"], 252.0)
    assert math.isnan(single["sharpe"]) and single["max_drawdown"] == pytest.approx(-0.02)
    # The starting equity counts as a peak: a loss on the very first bar is a drawdown.
    first = M.metrics_dict(EDGE_CASES["first_bar_loss"], 252.0)
    assert first["max_drawdown"] == pytest.approx(-0.05)


def test_batch_of_empty_series_is_nan_like_a_single_empty_series() -> None:
    out = M.batch_metrics(np.zeros((3, 0)), 252.0)
    single = M.compute_metrics(np.zeros(0), 252.0)
    for key in M.METRIC_KEYS:
        assert out[key].shape == (3,) and np.all(np.isnan(np.asarray(out[key]))), key
        assert math.isnan(float(single[key])), key
    assert all(v.shape == (0,) for v in M.batch_metrics(np.zeros((0, 10)), 252.0).values())


def test_batch_metrics_equal_single_series() -> None:
    returns = _returns("sp500_daily")[:2520]
    rng = np.random.default_rng(0)
    batch = np.stack([returns * rng.choice([-1.0, 0.0, 1.0], size=returns.shape) for _ in range(4)])
    positions = np.sign(batch)
    out = M.batch_metrics(batch, 252.0, positions)
    for i in range(len(batch)):
        single = M.metrics_dict(batch[i], 252.0, positions[i])
        for key in M.METRIC_KEYS:
            assert _same(float(out[key][i]), single[key], rtol=1e-5), key


def _trades_loop(returns: np.ndarray, positions: np.ndarray) -> list[float]:
    trades, current, previous = [], None, 0.0
    for r, p in zip(returns, positions):
        if p != previous:
            if current is not None:
                trades.append(current - 1.0)
            current = 1.0 if p != 0 else None
        if current is not None:
            current *= 1.0 + r
        previous = p
    if current is not None:
        trades.append(current - 1.0)
    return trades


def test_position_metrics_against_a_loop() -> None:
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, 300)
    positions = np.repeat(rng.choice([-1.0, 0.0, 0.5, 1.0], size=30), 10)
    ours = M.metrics_dict(returns, 252.0, positions)
    trades = _trades_loop(returns, positions)
    assert ours["num_trades"] == len(trades)
    assert ours["avg_trade_return"] == pytest.approx(np.mean(trades), rel=1e-4)
    changes = np.abs(np.diff(positions, prepend=0.0))
    assert ours["turnover"] == pytest.approx(changes.mean() * 252.0, rel=1e-5)
    assert ours["exposure"] == pytest.approx(np.mean(positions != 0))
    # multi-asset: gross exposure and the sum of per-asset changes
    two = np.stack([positions, np.roll(positions, 5)], axis=1)
    multi = M.metrics_dict(returns, 252.0, two)
    gross_changes = np.abs(np.diff(two, axis=0, prepend=0.0)).sum(axis=1)
    assert multi["turnover"] == pytest.approx(gross_changes.mean() * 252.0, rel=1e-5)
    assert multi["exposure"] == pytest.approx(np.mean(np.abs(two).sum(axis=1) > 0))


def test_no_positions_gives_nan_position_metrics() -> None:
    out = M.metrics_dict(np.array([0.01, -0.01, 0.02]), 252.0)
    assert set(out) == set(M.METRIC_KEYS)
    for key in ("num_trades", "avg_trade_return", "turnover", "exposure"):
        assert math.isnan(out[key])


def test_bars_per_year_conventions() -> None:
    assert M.bars_per_year_for(86_400) == 252.0
    assert M.bars_per_year_for(3_600) == 252.0 * 24
    assert M.bars_per_year_for(3_600, "continuous") == 365.0 * 24
    assert M.bars_per_year_for(7 * 86_400) == 52.0


# ------------------------------------------------------------------------- PSR / DSR by hand


def _psr_by_hand(sr: float, n: int, g3: float, g4: float, sr_star: float) -> float:
    z = (sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return NormalDist().cdf(z)


def _expected_max_by_hand(trials: int, variance: float) -> float:
    gamma = 0.5772156649015329
    inv = NormalDist().inv_cdf
    return math.sqrt(variance) * (
        (1 - gamma) * inv(1 - 1 / trials) + gamma * inv(1 - 1 / (trials * math.e))
    )


def test_psr_matches_the_paper_formula() -> None:
    for sr, n, g3, g4, star in [(0.1, 250, -0.5, 5.0, 0.0), (0.05, 1000, 0.2, 3.0, 0.02)]:
        ours = float(M.probabilistic_sharpe_ratio(sr, n, g3, g4, star))
        assert ours == pytest.approx(_psr_by_hand(sr, n, g3, g4, star), abs=1e-6)


def test_dsr_matches_the_paper_formula() -> None:
    sr, n, g3, g4 = 0.12, 1250, -0.3, 6.0
    for trials, variance in [(10, 0.002), (100, 0.0005), (1000, 0.001)]:
        star = _expected_max_by_hand(trials, variance)
        assert float(M.expected_max_sharpe(trials, variance)) == pytest.approx(star, rel=1e-5)
        ours = float(M.deflated_sharpe_ratio(sr, n, trials, variance, g3, g4))
        assert ours == pytest.approx(_psr_by_hand(sr, n, g3, g4, star), abs=1e-5)
    # One trial: nothing to deflate.
    assert float(M.deflated_sharpe_ratio(sr, n, 1, 0.01, g3, g4)) == pytest.approx(
        _psr_by_hand(sr, n, g3, g4, 0.0), abs=1e-6
    )


def test_sweep_significance_deflates_the_lucky_best_of_many() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.01, size=(200, 500))  # 200 strategies with no edge at all
    summary = M.sweep_significance(noise)
    assert summary["num_trials"] == 200
    assert summary["psr"] > 0.9  # the best of 200 looks significant on its own ...
    assert summary["dsr"] < 0.5  # ... but not once the number of trials is accounted for
    best = noise[summary["best_trial"]]
    centred = best - best.mean()
    g3 = np.mean(centred**3) / np.mean(centred**2) ** 1.5
    g4 = np.mean(centred**4) / np.mean(centred**2) ** 2
    sr = best.mean() / best.std(ddof=1)
    assert summary["psr"] == pytest.approx(_psr_by_hand(sr, 500, g3, g4, 0.0), abs=1e-5)


def test_metrics_are_jittable_and_vmappable_over_bars_per_year() -> None:
    returns = jnp.asarray(_returns("sp500_daily")[:500])
    per_year = jnp.array([252.0, 365.0])
    sharpe = jax.jit(jax.vmap(M.sharpe_ratio, in_axes=(None, 0)))(returns, per_year)
    ratio = float(sharpe[1] / sharpe[0])
    assert ratio == pytest.approx(math.sqrt(365 / 252), rel=1e-5)


def _strategy_batch(num: int, bars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    market = _returns("sp500_daily")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(market) - bars, size=num)
    levels = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(num, bars // 20 + 1))
    positions = np.repeat(levels, 20, axis=1)[:, :bars]
    return positions * market[starts[:, None] + np.arange(bars)], positions


def test_batched_metrics_match_empyrical_with_ties_and_constant_rows() -> None:
    # A batch is jax.vmap of the per-series functions: every row, including rows with long
    # runs of equal returns around the 5% ranks and constant rows, must equal empyrical.
    returns, positions = _strategy_batch(70, 1100, seed=11)
    returns[5:20] = 0.0
    returns[5:20, :80] = -0.01  # 80 equal losses span the 5% ranks (54, 55) and beyond
    returns[6:20:2] = 0.003  # constant rows
    out = M.batch_metrics(returns, 252.0, positions)
    for i in range(len(returns)):
        for key, ref in _reference(returns[i], 252.0).items():
            assert _same(float(out[key][i]), ref, atol=1e-5), (i, key, out[key][i], ref)
        assert float(out["max_drawdown_duration"][i]) == _drawdown_duration_loop(returns[i])
        assert float(out["num_trades"][i]) == len(_trades_loop(returns[i], positions[i]))
