"""Bundles with `timeframe:` features: the runner builds the coarse bars from the fine ones.

On the embedded EUR/USD hourly bars (weekend gaps included, so some 4h and daily bars lack
their last hourly bar): the incremental 4h / 1d features equal `jaxtrade.features.compute`
bar for bar, and a policy trained on a spec with 4h entries trades the backtest's positions.
"""

from __future__ import annotations

import numpy as np
from live_helpers import make_policy, real_frame

import envs
from jaxtrade import features as features_lib
from jaxtrade import market as market_lib
from jaxtrade.data.splits import make_splits
from jaxtrade.evaluate.backtest import backtest
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.features import FeatureEngine

COARSE = [
    {"name": "rsi", "window": 14, "timeframe": "4h"},
    {"name": "macd", "relative": True, "timeframe": "4h"},
    {"name": "atr", "timeframe": "4h"},
    {"name": "realized_vol", "windows": [5], "timeframe": "1d"},
    {"name": "calendar", "timeframe": "1d"},
]


def _bars(frame):
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    columns = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    return [Bar(t, *values) for t, *values in zip(stamps, *columns)]


def test_coarse_features_equal_the_training_engine_across_gaps():
    frame = real_frame("eurusd_1h", 2500)
    spec = features_lib.FeatureSpec.from_dict(
        [{"name": "log_returns", "lags": [1]}, *COARSE, {"name": "rsi", "window": 7}]
    )
    reference = features_lib.compute(frame, spec).drop("timestamp").to_numpy()
    engine = FeatureEngine(spec.to_dict()["features"], bar_spacing_seconds=3600.0)
    ours = np.stack([engine.update(bar) for bar in _bars(frame)])
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    both = ~np.isnan(reference)
    np.testing.assert_allclose(ours[both], reference[both], rtol=1e-6, atol=1e-9)
    gaps = np.diff(frame["timestamp"].dt.epoch("s").to_numpy())
    assert (gaps > 4 * 3600).sum() > 5  # weekends: coarse bars closed by the next bar


def test_runner_with_4h_features_trades_the_backtest_positions(tmp_path):
    frame = real_frame("eurusd_1h", 900)
    spec = features_lib.FeatureSpec.from_dict(
        [e.to_dict() for e in features_lib.default_spec().entries][:6] + COARSE
    )
    market = market_lib.build(frame, spec, make_splits(frame.height, 0.6, 0.2))
    assert any(name.endswith("_4h") for name in market.meta.feature_names)
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, policy = make_policy(env, env_params)
    result = backtest(env, env_params, policy, split="test")
    bundle = write_bundle(
        tmp_path / "tf", params=params, network_config=cfg, env=env, env_params=env_params
    )
    runner = Runner(load_bundle(bundle), max_jump_seconds=0)
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    targets, rows = [], []
    for bar in _bars(frame):
        decision = runner.process(bar, trade=bar.timestamp_us >= start)
        rows.append(runner.latest_row().copy())
        if decision is not None:
            targets.append(decision["target_position"])
    np.testing.assert_allclose(
        np.stack(rows), np.asarray(market.features)[:, 0, :], rtol=1e-6, atol=1e-6
    )
    reference = result.target_positions[:, 0]
    assert len(set(reference.tolist())) >= 2  # the policy really trades
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
