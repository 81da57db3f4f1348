"""market.build: shapes, dtypes, splits, train-only normalization, alignment, memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from jaxtrade import features as F
from jaxtrade import market as M
from jaxtrade.data import load_ohlcv, make_splits

SPEC = F.FeatureSpec.from_dict(
    [{"name": "log_returns"}, {"name": "rsi"}, {"name": "atr"}, {"name": "bollinger"}]
)


@pytest.fixture(scope="module")
def sp500() -> pl.DataFrame:
    return load_ohlcv("sp500_daily")


@pytest.fixture(scope="module")
def market(sp500: pl.DataFrame) -> M.MarketData:
    return M.build(sp500, SPEC)


def test_shapes_dtypes_splits_and_meta(sp500: pl.DataFrame, market: M.MarketData) -> None:
    t, f = sp500.height, len(SPEC.columns(multi_asset=False))
    assert market.features.shape == (t, 1, f)
    for name in ("open", "high", "low", "close", "atr", "volatility", "valid"):
        assert getattr(market, name).shape == (t, 1), name
    assert market.regime.shape == (t, 3)
    np.testing.assert_allclose(market.regime, 1 / 3)
    for leaf in jax.tree_util.tree_leaves(market):
        assert leaf.dtype == (jnp.int32 if leaf is market.splits else jnp.float32)
        assert leaf.devices() == {jax.devices()[0]}
    # One default split for the library and the CLI (data.train_frac / validation_frac).
    np.testing.assert_array_equal(market.splits, make_splits(t, 0.7, 0.15).as_array())
    assert market.meta.feature_names == tuple(SPEC.columns(multi_asset=False))
    assert market.meta.bars_per_year == 252.0
    assert market.meta.extra["feature_spec"] == SPEC.to_dict()
    np.testing.assert_allclose(market.close[:, 0], sp500["close"].to_numpy(), rtol=1e-7)
    assert market.meta.timestamps[0] == np.datetime64("1999-01-04T00:00:00", "us")


def test_normalization_fitted_on_train_only(sp500: pl.DataFrame, market: M.MarketData) -> None:
    start, end = market.split_bounds("train")
    table = F.compute(sp500, SPEC)
    expected = F.Normalizer.fit(table, (start, end))
    stats = market.meta.extra["normalizer"]
    np.testing.assert_allclose(stats["center"], expected.center, rtol=1e-9)
    np.testing.assert_allclose(stats["scale"], expected.scale, rtol=1e-9)
    np.testing.assert_allclose(
        market.features[:, 0, :], expected.transform(table.drop("timestamp").to_numpy()), atol=1e-5
    )
    # Wrecking every bar after train leaves the train features and the stats unchanged.
    later = pl.int_range(pl.len()) >= end
    wrecked = sp500.with_columns(
        pl.when(later).then(pl.col(c) * 3.0).otherwise(pl.col(c))
        for c in ("open", "high", "low", "close", "volume")
    )
    other = M.build(wrecked, SPEC)
    assert other.meta.extra["normalizer"] == stats
    np.testing.assert_array_equal(other.features[:end], market.features[:end])
    assert not np.array_equal(other.close[end:], market.close[end:])


def test_atr_and_volatility_match_from_arrays(sp500: pl.DataFrame, market: M.MarketData) -> None:
    ref = M.from_arrays(
        sp500["close"].to_numpy(),
        open=sp500["open"].to_numpy(),
        high=sp500["high"].to_numpy(),
        low=sp500["low"].to_numpy(),
    )
    np.testing.assert_allclose(market.atr, ref.atr, rtol=1e-6)
    np.testing.assert_allclose(market.volatility, ref.volatility, rtol=1e-5, atol=1e-8)


def test_split_argument_and_robust_normalization(sp500: pl.DataFrame) -> None:
    splits = make_splits(sp500.height, 0.5, 0.25, embargo_bars=10)
    m = M.build(sp500, SPEC, splits, normalization="robust")
    np.testing.assert_array_equal(m.splits, splits.as_array())
    assert m.meta.extra["normalizer"]["method"] == "robust"
    none = M.build(sp500.head(300), SPEC, normalization="none")
    assert none.meta.extra["normalizer"] is None
    raw = F.compute(sp500.head(300), SPEC)["rsi_14"].fill_null(0.0).to_numpy()
    np.testing.assert_allclose(none.features[:, 0, SPEC.columns(False).index("rsi_14")], raw, 1e-6)


def test_multi_asset_alignment(sp500: pl.DataFrame) -> None:
    base = sp500.head(600)
    a = base.with_columns(pl.lit("A").alias("symbol"))
    b = (
        base.with_columns(pl.col(c) * 2.0 for c in ("open", "high", "low", "close"))
        .with_columns(pl.lit("B").alias("symbol"))
        .slice(50)  # B starts later...
        .filter(pl.int_range(pl.len()) % 10 != 0)  # ...and misses some bars
    )
    frame = pl.concat([b, a])  # not sorted by symbol
    spec = F.FeatureSpec.from_dict([{"name": "rsi"}, {"name": "turbulence", "window": 30}])
    m = M.build(frame, spec)
    assert m.meta.symbols == ("B", "A")
    assert m.features.shape == (600, 2, 2)
    valid = np.asarray(m.valid).astype(bool)
    assert valid[:, 1].all() and valid[:, 0].sum() == b.height and not valid[:50, 0].any()
    # Real bars sit at their timestamps; missing ones carry the last price, features 0.
    t_index = {t: i for i, t in enumerate(base["timestamp"].to_list())}
    rows = [t_index[t] for t in b["timestamp"].to_list()]
    np.testing.assert_allclose(np.asarray(m.close)[rows, 0], b["close"].to_numpy(), rtol=1e-7)
    missing = np.where(~valid[:, 0])[0]
    missing = missing[missing > 50]
    np.testing.assert_array_equal(
        np.asarray(m.close)[missing, 0], np.asarray(m.close)[missing - 1, 0]
    )
    assert (np.asarray(m.features)[~valid] == 0).all()
    assert (np.asarray(m.close)[:50, 0] == np.asarray(m.close)[50, 0]).all()
    # Each real bar's features are that symbol's computed features, normalized.
    norm = F.Normalizer.from_dict(m.meta.extra["normalizer"])
    table = F.compute(frame, spec).filter(pl.col("symbol") == "B")
    expected = norm.transform(table.drop("timestamp", "symbol").to_numpy())
    np.testing.assert_allclose(np.asarray(m.features)[rows, 0], expected, atol=1e-5)


def test_regimes_are_forward_filtered_probabilities(sp500: pl.DataFrame) -> None:
    frame = sp500.head(1500)
    m = M.build(frame, SPEC, regimes=True)
    regime = np.asarray(m.regime)
    assert regime.shape == (1500, 3)
    np.testing.assert_allclose(regime.sum(axis=1), 1.0, atol=1e-5)
    assert m.meta.extra["regime_model"] is not None
    # Causal: later bars do not change the regime at earlier bars.
    cut = 1200
    wrecked = frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= cut).then(pl.col(c) * 0.5).otherwise(pl.col(c))
        for c in ("open", "high", "low", "close")
    )
    other = M.build(wrecked, SPEC, regimes=True)
    np.testing.assert_allclose(np.asarray(other.regime)[:cut], regime[:cut], atol=1e-6)


def test_row_order_of_the_input_does_not_matter(sp500: pl.DataFrame) -> None:
    base = sp500.head(400)
    frame = pl.concat(
        [
            base.with_columns(pl.lit("A").alias("symbol")),
            base.with_columns(pl.lit("B").alias("symbol"), pl.col("volume") * 2),
        ]
    )
    m = M.build(frame, SPEC)
    shuffled = M.build(frame.sample(fraction=1.0, shuffle=True, seed=1), SPEC)
    for name in ("features", "close", "atr", "volatility", "valid"):
        a, b = np.asarray(getattr(m, name)), np.asarray(getattr(shuffled, name))
        if shuffled.meta.symbols != m.meta.symbols:
            b = b[:, ::-1]
        np.testing.assert_array_equal(a, b, err_msg=name)
