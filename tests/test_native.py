"""The native CPU row-statistics kernel (jaxtrade/native) against the JAX path and numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import empyrical as ep
import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from jaxtrade import metrics as M
from jaxtrade import native

EMBEDDED = Path(__file__).resolve().parents[1] / "jaxtrade" / "data" / "embedded"

pytestmark = pytest.mark.skipif(
    not native.enabled(), reason="JAXTRADE_NATIVE=0 turns the native kernel off"
)


def _market() -> np.ndarray:
    close = pl.read_parquet(EMBEDDED / "sp500_daily.parquet")["close"].to_numpy()
    return close[1:] / close[:-1] - 1.0


def _rows(bars: int) -> np.ndarray:
    """Strategy-like rows plus edge cases, [N, bars] float32."""
    market = _market()
    rng = np.random.default_rng(3)
    starts = rng.integers(0, len(market) - bars, size=40)
    positions = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(40, bars // 10 + 1)).repeat(10, 1)
    rows = list(positions[:, :bars] * market[starts[:, None] + np.arange(bars)])
    rows.append(np.full(bars, 0.003))  # constant
    rows.append(np.abs(rows[0]) + 1e-4)  # all gains
    rows.append(-np.abs(rows[1]) - 1e-4)  # all losses
    rows.append(rng.choice([-0.01, 0.0, 0.01], size=bars))  # heavy ties
    outlier = rng.uniform(-0.01, 0.01, size=bars)
    outlier[bars // 2] = 10.0  # skews the pivot guess far off: the whole-row path
    rows.append(outlier)
    wiped = rows[2].copy()
    wiped[bars // 3] = -1.0  # equity 0: log growth -inf
    rows.append(wiped)
    return np.asarray(rows, np.float32)


def _both(returns: np.ndarray, positions: np.ndarray | None = None,
          part: int = 0) -> tuple[dict, dict]:
    """(native, JAX) row statistics (part 0) or position statistics (part 1) as float64."""
    x = jnp.asarray(returns)
    p = None if positions is None else jnp.asarray(positions, jnp.float32)
    ours = jax.jit(lambda r, q: M._row_stats_native(r, q)[part])(x, p)
    reference = jax.jit(lambda r, q: M._row_stats_xla(r, q)[part])(x, p)
    return ({k: np.asarray(v, np.float64) for k, v in ours.items()},
            {k: np.asarray(v, np.float64) for k, v in reference.items()})


def test_kernel_builds_and_registers() -> None:
    assert native.available(), "the native kernel failed to build or load (see the warning)"
    path = native.library_path()
    assert path is not None and path.exists() and path.stat().st_size > 0


@pytest.mark.parametrize("bars", [1, 2, 5, 63, 64, 65, 300, 2520])
def test_native_row_stats_equal_the_jax_path(bars: int) -> None:
    returns = _rows(bars)
    ours, reference = _both(returns)
    assert set(ours) == set(native.ROW_STATS)
    for key in native.ROW_STATS:
        a, b = ours[key], reference[key]
        if key in ("m3", "m4"):  # float32 sums of cubes / fourth powers: relative to scale
            scale = np.maximum(np.abs(b), reference["m2"] ** (1.5 if key == "m3" else 2.0))
            np.testing.assert_array_less(np.abs(a - b), 1e-4 * scale + 1e-30, err_msg=key)
            continue
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7, err_msg=key)


@pytest.mark.parametrize("assets", [0, 1, 3])
def test_native_position_stats_equal_the_jax_path(assets: int) -> None:
    returns = _rows(700)
    rng = np.random.default_rng(5)
    shape = returns.shape + ((assets,) if assets else ())
    # Held for random stretches at a few levels, flat in between; some rows open on bar 0
    # and some end inside a trade.
    levels = rng.choice([-1.0, 0.0, 0.0, 0.5, 1.0], size=shape)
    keep = rng.random(returns.shape) < 0.9
    positions = levels.copy()
    for t in range(1, returns.shape[1]):
        positions[:, t] = np.where(keep[:, t, None] if assets else keep[:, t],
                                   positions[:, t - 1], levels[:, t])
    positions[0] = 0.0  # never in the market
    ours, reference = _both(returns, positions, part=1)
    assert set(ours) == set(native.POSITION_STATS)
    assert np.all(ours["num_trades"][1:] > 0) and ours["num_trades"][0] == 0
    assert np.isnan(ours["avg_trade_return"][0]) and np.isnan(reference["avg_trade_return"][0])
    for key in native.POSITION_STATS:
        np.testing.assert_allclose(ours[key], reference[key], rtol=2e-5, atol=2e-7,
                                   equal_nan=True, err_msg=key)
    # With positions the return statistics are unchanged.
    with_positions, _ = _both(returns, positions)
    alone, _ = _both(returns)
    for key in native.ROW_STATS:
        np.testing.assert_array_equal(with_positions[key], alone[key], err_msg=key)


@pytest.mark.parametrize("bars", [5, 64, 300, 2520])
def test_native_tails_are_exact_order_statistics(bars: int) -> None:
    returns = _rows(bars)
    ours, _ = _both(returns)
    x = returns.astype(np.float64)
    lo = int((bars - 1) * 0.05)
    np.testing.assert_allclose(ours["var_5"], np.percentile(x, 5, axis=1), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(ours["var_95"], np.percentile(x, 95, axis=1), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(ours["cvar_5"], np.sort(x, axis=1)[:, :lo + 1].mean(axis=1),
                               rtol=1e-6, atol=1e-9)


def test_native_batch_metrics_match_empyrical() -> None:
    returns = _rows(1000)[:40]
    out = M.batch_metrics(returns, 252.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, series in enumerate(returns.astype(np.float64)):
            for key, ref in [("max_drawdown", ep.max_drawdown(series)),
                             ("sharpe", ep.sharpe_ratio(series)),
                             ("sortino", ep.sortino_ratio(series)),
                             ("annual_return", ep.annual_return(series)),
                             ("calmar", ep.calmar_ratio(series)),
                             ("tail_ratio", ep.tail_ratio(series))]:
                assert float(out[key][i]) == pytest.approx(ref, rel=1e-5, abs=1e-7), (i, key)


def test_nan_in_a_row_gives_nan_for_that_row_only() -> None:
    returns = _rows(300)[:3].copy()
    returns[1, 100] = np.nan
    ours, _ = _both(returns)
    for key in native.ROW_STATS:
        assert np.isnan(ours[key][1]), key
        assert np.all(np.isfinite(ours[key][[0, 2]])), key


def test_ruin_below_minus_one_gives_nan_growth_like_log1p() -> None:
    returns = np.full((1, 100), 0.01, np.float32)
    returns[0, 10] = -1.5  # a loss beyond the account (leverage)
    ours, reference = _both(returns)
    assert np.isnan(ours["log_growth"][0]) and np.isnan(reference["log_growth"][0])


def test_float64_rows_under_x64() -> None:
    returns = _rows(500).astype(np.float64)
    with jax.enable_x64(True):
        x = jnp.asarray(returns)
        assert x.dtype == jnp.float64
        ours = jax.jit(lambda r: M._row_stats_native(r, None)[0])(x)
        assert ours["var_5"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(ours["var_5"]), np.percentile(returns, 5, axis=1),
                                   rtol=1e-12)
        np.testing.assert_allclose(np.asarray(ours["mean"]), returns.mean(axis=1), rtol=1e-12,
                                   atol=1e-15)


def test_vmapped_single_series_use_the_kernel_and_agree_with_the_batch() -> None:
    returns = jnp.asarray(_rows(400))
    single = jax.jit(jax.vmap(lambda r: M.compute_metrics(r, 252.0)))(returns)
    batch = M.batch_metrics(returns, 252.0)
    for key in ("sharpe", "max_drawdown", "var_5", "cvar_5", "max_drawdown_duration"):
        np.testing.assert_allclose(np.asarray(single[key]), np.asarray(batch[key]),
                                   rtol=1e-6, equal_nan=True, err_msg=key)
    text = jax.jit(jax.vmap(lambda r: M.compute_metrics(r, 252.0))).lower(returns).as_text()
    assert native.TARGET in text


def test_only_cpu_programs_contain_the_custom_call() -> None:
    returns = jnp.asarray(_rows(300))
    traced = jax.jit(lambda r: M.batch_metrics(r, 252.0)).trace(returns)
    assert native.TARGET in traced.lower(lowering_platforms=("cpu",)).as_text()
    assert native.TARGET not in traced.lower(lowering_platforms=("cuda",)).as_text()


def test_concurrent_kernel_calls_agree_with_single_calls() -> None:
    # Independent calls big enough to be split over the thread pool, in one program and
    # from two Python threads at once: the results must equal those of one call at a time
    # (to float rounding of the fused formulas: no shared scratch between calls) and every
    # call must finish (a subprocess, so a deadlock fails by timeout instead of hanging).
    code = (
        "import threading, jax, numpy as np\n"
        "from jaxtrade import metrics as M\n"
        "x = np.random.default_rng(0).normal(0, 0.01, (6, 600, 2520)).astype(np.float32)\n"
        "keys = ('var_5', 'cvar_5', 'max_drawdown', 'sharpe')\n"
        "one = [np.stack([np.asarray(M.batch_metrics(x[i] * (i + 1), 252.0)[k])\n"
        "                 for k in keys]) for i in range(6)]\n"
        "f = jax.jit(lambda a: [jax.numpy.stack([M.batch_metrics(a[i] * (i + 1), 252.0)[k]\n"
        "                                        for k in keys]) for i in range(6)])\n"
        "bad = []\n"
        "def run():\n"
        "    for _ in range(10):\n"
        "        out = jax.block_until_ready(f(x))\n"
        "        bad.extend(i for i in range(6)\n"
        "                   if not np.allclose(out[i], one[i], rtol=1e-6, atol=0))\n"
        "threads = [threading.Thread(target=run) for _ in range(2)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('ok' if not bad else f'differ: {sorted(set(bad))}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.stdout,
                                                                  done.stderr[-2000:])


def test_build_without_avx512_gives_the_same_results(tmp_path: Path) -> None:
    # CPUs without AVX-512 take the scalar candidate split and narrower vectors: build that
    # variant into its own cache folder and run the comparisons above with it.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXTRADE_CACHE_DIR": str(tmp_path),
           "JAXTRADE_NATIVE_CXXFLAGS": "-mno-avx512f"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "equal_the_jax_path or exact_order_statistics or builds_and_registers"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    built = list((tmp_path / "native").glob("row_stats-*.so"))
    assert len(built) == 1


def test_opt_out_and_failed_builds_fall_back_to_jax(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import numpy as np; from jaxtrade import metrics as M, native; "
            "out = M.batch_metrics(np.linspace(-0.01, 0.02, 600).reshape(2, 300), 252.0); "
            "print(native.available(), float(out['var_5'][0]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "JAXTRADE_NATIVE": "0", "JAX_PLATFORMS": "cpu"},
                          timeout=120, check=True)
    flag, value = done.stdout.split()
    assert flag == "False"
    assert float(value) == pytest.approx(np.percentile(np.linspace(-0.01, 0.02, 600)[:300], 5),
                                         rel=1e-5)
    # A compiler that fails: one warning naming the problem, no library.
    monkeypatch.setenv("CXX", "false")
    monkeypatch.setenv("JAXTRADE_CACHE_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="using the JAX path"):
        assert native.library_path() is None
    # A cache folder that cannot be created (here: a file is in the way).
    monkeypatch.delenv("CXX")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("JAXTRADE_CACHE_DIR", str(blocker))
    with pytest.warns(RuntimeWarning, match="JAXTRADE_CACHE_DIR"):
        assert native.library_path() is None
