"""Regime detector: forward filter vs hmmlearn, causality, serialization, synthetic accuracy."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hmmlearn.hmm import GaussianHMM

from jaxtrade.data.synthetic import synthetic_frame
from jaxtrade.errors import DataError, FeatureError
from jaxtrade.features import regimes as R

# The synthetic tests generate 20000-bar markets too: same length, one generator compile.
NUM_BARS = 20000
USED_BARS = 10000
TRAIN_FRACTION = 0.6


@pytest.fixture(scope="module")
def market() -> tuple[pl.DataFrame, np.ndarray]:
    frame, truth = synthetic_frame(seed=0, num_bars=NUM_BARS, return_regimes=True)
    return frame.head(USED_BARS), truth[:USED_BARS]


@pytest.fixture(scope="module")
def model(market) -> R.RegimeModel:
    frame, _ = market
    return R.fit_regimes(frame.head(int(TRAIN_FRACTION * USED_BARS)), seed=0)


def _reference_hmm(model: R.RegimeModel) -> GaussianHMM:
    hmm = GaussianHMM(n_components=model.n_states, covariance_type="full")
    hmm.n_features = model.means.shape[1]
    hmm.startprob_ = model.startprob
    hmm.transmat_ = model.transmat
    hmm.means_ = model.means
    hmm.covars_ = model.covars
    return hmm


def test_detects_true_synthetic_regimes_out_of_sample(market, model):
    frame, truth = market
    cut = int(TRAIN_FRACTION * USED_BARS)
    detected = model.transform(frame).to_numpy().argmax(axis=1)[cut:]
    truth = truth[cut:]
    accuracy = float(np.mean(detected == truth))
    majority = np.bincount(truth, minlength=3).max() / len(truth)
    assert accuracy > 0.65 and accuracy > majority + 0.2, (accuracy, majority)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (truth, detected), 1)
    # Every true regime is detected as itself more often than as anything else.
    assert np.all(confusion.argmax(axis=1) == np.arange(3)), confusion
    assert sorted(model.state_regime) == [0, 1, 2]


def test_transform_rows_probabilities_and_warmup(market, model):
    frame, _ = market
    out = model.transform(frame)
    assert out.columns == list(R.REGIME_COLUMNS) and out.height == frame.height
    probs = out.to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert np.all((probs >= 0) & (probs <= 1))
    # Before the inputs are defined (first bar, vol window) the output is the prior.
    prior = model.named_probabilities(model.startprob)
    np.testing.assert_allclose(probs[: model.warmup_bars - 1], np.tile(prior, (10, 1)), atol=1e-12)
    assert not np.allclose(probs[model.warmup_bars - 1], prior)


def test_filter_matches_hmmlearn_on_prefixes_and_differs_from_smoothing(market, model):
    """P(s_t | x_1..x_t) is the smoother's last row on the prefix x_1..x_t (independent
    reference), while hmmlearn's predict_proba on the whole series (smoothing) differs."""
    frame, _ = market
    inputs, _ = model.inputs(frame)
    inputs = inputs[model.warmup_bars - 1 :]
    assert not np.any(np.isnan(inputs))
    z = (inputs - model.feature_mean) / model.feature_std
    hmm = _reference_hmm(model)
    filtered = model.filter(inputs)
    for t in (0, 37, 400, 2500):
        np.testing.assert_allclose(filtered[t], hmm.predict_proba(z[: t + 1])[-1], atol=1e-8)
    smoothed = hmm.predict_proba(z)
    np.testing.assert_allclose(filtered[-1], smoothed[-1], atol=1e-8)
    gap = np.abs(smoothed - filtered).sum(axis=1)
    assert gap.max() > 0.5 and gap.mean() > 0.02


def test_filter_step_bar_by_bar_equals_batch_after_json_roundtrip(market, model):
    frame, _ = market
    head = frame.head(1500)
    restored = R.RegimeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    inputs, _ = restored.inputs(head)
    prob, stepped = None, []
    for x_t in inputs:
        prob = restored.filter_step(prob, x_t)
        stepped.append(restored.named_probabilities(prob))
    np.testing.assert_allclose(np.array(stepped), model.transform(head).to_numpy(), atol=1e-12)


def test_regime_columns_are_causal(market, model):
    frame, _ = market
    frame = frame.head(3000)
    base = model.transform(frame).to_numpy()
    rng = np.random.default_rng(0)
    for cut in (20, 1000, 2999):
        noise = np.where(np.arange(frame.height) > cut, rng.lognormal(0, 0.05, frame.height), 1.0)
        wrecked = frame.with_columns(
            (pl.col(c) * pl.Series(noise)).alias(c) for c in ("open", "high", "low", "close")
        )
        changed = model.transform(wrecked).to_numpy()
        np.testing.assert_array_equal(changed[: cut + 1], base[: cut + 1])
        if cut < 2999:
            assert not np.allclose(changed[cut + 1 :], base[cut + 1 :])


def test_multi_asset_uses_market_average_return_and_keeps_row_order(model):
    frame = synthetic_frame(seed=5, num_bars=128, num_assets=2)
    out = model.transform(frame).to_numpy()
    assert out.shape == (frame.height, 3)
    np.testing.assert_array_equal(out[0::2], out[1::2])  # one regime per timestamp

    # Reference: a single series whose log returns are the equal-weight average.
    returns = (
        frame.sort("symbol", "timestamp")
        .with_columns(pl.col("close").log().diff().over("symbol").alias("r"))
        .group_by("timestamp")
        .agg(pl.col("r").mean())
        .sort("timestamp")
    )
    index = np.concatenate([[0.0], np.cumsum(returns["r"].to_numpy()[1:])])
    single = pl.DataFrame({"timestamp": returns["timestamp"], "close": 100 * np.exp(index)})
    np.testing.assert_allclose(out[0::2], model.transform(single).to_numpy(), atol=1e-12)

    # Shuffled rows come back aligned with their own rows; later bars don't leak back.
    order = np.random.default_rng(1).permutation(frame.height)
    shuffled = model.transform(frame[order]).to_numpy()
    np.testing.assert_array_equal(shuffled, out[order])
    late = frame.with_columns(
        pl.when(pl.col("timestamp") > frame["timestamp"][100])
        .then(pl.col("close") * 1.3)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    np.testing.assert_array_equal(model.transform(late).to_numpy()[:102], out[:102])


def test_inputs_match_polars_rolling_reference():
    rng = np.random.default_rng(3)
    returns = np.concatenate([[np.nan], rng.normal(0, 0.01, 300)])
    names = ("log_return", "abs_return", "realized_vol_20", "log_realized_vol_5", "momentum_7")
    got = R.regime_inputs(returns, names)
    r = pl.Series(returns).fill_nan(None)
    expected = np.stack(
        [
            returns,
            np.abs(returns),
            r.rolling_std(20).to_numpy(),
            np.log(r.rolling_std(5).to_numpy()),
            r.rolling_mean(7).to_numpy(),
        ],
        axis=1,
    ).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)


def test_naming_rule():
    mean = np.array([0.0, -0.002, 0.001, 0.0001])
    std = np.array([0.005, 0.03, 0.01, 0.008])
    names = [R.REGIME_NAMES[i] for i in R.name_states(mean, std)]
    assert names == ["range", "defensive", "trend", "range"]


def test_bad_inputs_raise(market):
    frame, _ = market
    with pytest.raises(FeatureError, match="unknown regime feature"):
        R.fit_regimes(frame, features=("log_return", "vol20"))
    with pytest.raises(DataError, match="too few training bars"):
        R.fit_regimes(frame.head(40))
    with pytest.raises(DataError, match="close"):
        R.fit_regimes(frame.drop("close"))
