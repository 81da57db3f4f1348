"""Normalization and feature selection: fitted on the train rows only."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from jaxtrade import features as F
from jaxtrade.data import load_ohlcv
from jaxtrade.errors import FeatureError

TRAIN = (0, 3000)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return F.compute(load_ohlcv("sp500_daily"), F.default_spec())


def test_zscore_stats_are_train_only(table: pl.DataFrame) -> None:
    norm = F.Normalizer.fit(table, TRAIN)
    x = table.drop("timestamp").to_numpy()[: TRAIN[1]]
    np.testing.assert_allclose(norm.center, np.nanmean(x, axis=0), rtol=1e-12)
    std = np.nanstd(x, axis=0)
    constant = std < 1e-12  # hour of day on daily bars: scale 1 instead of dividing by 0
    assert constant.sum() == 2
    np.testing.assert_allclose(norm.scale, np.where(constant, 1.0, std), rtol=1e-12)
    # Changing (or wrecking) every row after train changes nothing.
    wrecked = table.with_columns(
        pl.when(pl.int_range(pl.len()) >= TRAIN[1]).then(pl.col(c) * 1e6 + 7).otherwise(pl.col(c))
        for c in norm.feature_names
    )
    again = F.Normalizer.fit(wrecked, TRAIN)
    assert np.array_equal(again.center, norm.center) and np.array_equal(again.scale, norm.scale)
    # The same rows as a slice, a pair or a mask give the same statistics.
    mask = np.zeros(table.height, bool)
    mask[: TRAIN[1]] = True
    for rows in (slice(*TRAIN), mask):
        np.testing.assert_allclose(F.Normalizer.fit(table, rows).center, norm.center, rtol=1e-12)


def test_transform_clips_and_zeroes_warmup(table: pl.DataFrame) -> None:
    norm = F.Normalizer.fit(table, TRAIN, clip=3.0)
    out = norm.transform(table)
    assert out.columns == table.columns
    y = out.drop("timestamp").to_numpy()
    assert np.isfinite(y).all() and np.abs(y).max() <= 3.0
    raw = table.drop("timestamp").to_numpy()
    assert (y[np.isnan(raw)] == 0).all()  # warm-up NaN -> 0
    i, j = 4000, norm.feature_names.index("rsi_14")
    expected = np.clip((raw[i, j] - norm.center[j]) / norm.scale[j], -3, 3)
    assert y[i, j] == pytest.approx(expected)
    train = y[: TRAIN[1]][~np.isnan(raw[: TRAIN[1]])[:, j], j]
    assert abs(train.mean()) < 0.05  # centred on train (up to clipping)


def test_robust_option_uses_median_and_iqr(table: pl.DataFrame) -> None:
    norm = F.Normalizer.fit(table, TRAIN, method="robust")
    x = table.drop("timestamp").to_numpy()[: TRAIN[1]]
    q25, q50, q75 = np.nanpercentile(x, [25, 50, 75], axis=0)
    np.testing.assert_allclose(norm.center, q50)
    scale = (q75 - q25) / 1.349
    ok = scale > 1e-12
    np.testing.assert_allclose(norm.scale[ok], scale[ok])
    assert (norm.scale[~ok] == 1.0).all()  # constant on train (hour of day for daily bars)


def test_export_round_trip_with_numpy_only(table: pl.DataFrame) -> None:
    norm = F.Normalizer.fit(table, TRAIN, method="robust", clip=4.0)
    stats = json.loads(json.dumps(norm.to_dict()))  # plain JSON
    x = table.drop("timestamp").to_numpy()
    expected = norm.transform(x)
    np.testing.assert_array_equal(F.normalize_numpy(stats, x), expected)
    np.testing.assert_array_equal(F.Normalizer.from_dict(stats).transform(x), expected)
    # The formula, written out.
    manual = np.clip((x - np.array(stats["center"])) / np.array(stats["scale"]), -4, 4)
    np.testing.assert_allclose(np.nan_to_num(manual, nan=0.0), expected)


def test_normalizer_errors(table: pl.DataFrame) -> None:
    with pytest.raises(FeatureError, match="zscore"):
        F.Normalizer.fit(table, TRAIN, method="minmax")
    with pytest.raises(FeatureError, match="empty"):
        F.Normalizer.fit(table, (10, 10))
    norm = F.Normalizer.fit(table.select("timestamp", "rsi_14"), TRAIN)
    with pytest.raises(FeatureError, match="lacks"):
        norm.transform(table.select("timestamp", "atr_14"))


def _planted(n: int = 3000, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """Features where `signal` predicts the next-bar direction, `twin` duplicates `noise_a`."""
    rng = np.random.default_rng(seed)
    direction = np.sign(rng.normal(size=n))
    signal = direction + rng.normal(0, 1.0, n)
    noise_a = rng.normal(size=n)
    frame = pl.DataFrame(
        {
            "noise_a": noise_a,
            "twin": 3 * noise_a + 1e-3 * rng.normal(size=n),
            "noise_b": rng.normal(size=n) * 100,  # large units, ordinary spread
            "signal": signal,
            "flat": np.r_[np.zeros(n // 2), rng.normal(size=n - n // 2)],  # constant on train
        }
    )
    return frame, direction


def test_selection_variance_correlation_importance() -> None:
    frame, direction = _planted()
    train = (0, 1500)
    assert "flat" not in F.select_by_variance(frame, train, top_n=4)
    kept = F.select_by_correlation(frame, train, threshold=0.9)
    assert "noise_a" in kept and "twin" not in kept and "flat" not in kept
    top = F.select_by_importance(frame, direction, train, top_n=1)
    assert top == ["signal"]
    # Fitted on train only: the signal dies after train, and scrambling the rows after
    # train (target included) does not change the choice.
    scrambled = frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= train[1]).then(-pl.col("signal")).otherwise("signal")
    )
    flipped = np.where(np.arange(len(direction)) >= train[1], -direction, direction)
    assert F.select_by_importance(scrambled, flipped, train, top_n=1) == ["signal"]


def test_next_bar_direction_per_symbol() -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["a", "a", "a", "b", "b"],
            "close": [1.0, 2.0, 1.5, 3.0, 3.0],
        }
    )
    target = F.next_bar_direction(frame)
    np.testing.assert_array_equal(target[[0, 1, 3]], [1.0, -1.0, 0.0])
    assert np.isnan(target[[2, 4]]).all()
