"""Feature specs: YAML round trip, shipped configs, catalogue, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from jaxtrade import features as F
from jaxtrade.data import load_ohlcv
from jaxtrade.errors import DataError, FeatureError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "features"


def test_yaml_round_trip(tmp_path: Path) -> None:
    spec = F.FeatureSpec.from_dict(
        [{"name": "rsi", "window": 9}, {"name": "macd", "timeframe": "4h"}, "candle"]
    )
    path = tmp_path / "spec.yaml"
    spec.to_yaml(path)
    again = F.FeatureSpec.from_yaml(path)
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    # Resolved parameters are explicit (export reproduces them without our defaults).
    assert again.to_dict()["features"][1] == {
        "name": "macd",
        "fast": 12,
        "slow": 26,
        "signal": 9,
        "relative": False,
        "timeframe": "4h",
    }
    assert spec.columns(multi_asset=False)[:2] == ["rsi_9", "macd_12_26_9_4h"]
    json.dumps(spec.to_dict())  # plain data


def test_shipped_configs() -> None:
    assert F.FeatureSpec.from_yaml(CONFIGS / "default.yaml") == F.default_spec()
    minimal = F.FeatureSpec.from_yaml(CONFIGS / "minimal.yaml")
    frame = load_ohlcv("sp500_daily").head(300)
    out = F.compute(frame, minimal)
    assert out.columns[1:] == minimal.columns(multi_asset=False)
    assert len(F.default_spec().columns(multi_asset=False)) >= 60
    assert len(F.default_spec().columns(multi_asset=True)) >= 62


def test_list_features_is_complete_and_printable() -> None:
    catalogue = F.list_features()
    names = {f["name"] for f in catalogue}
    assert {
        "returns", "log_returns", "sma_ratio", "ema_ratio", "rsi", "macd", "bollinger", "atr",
        "adx", "stochastic", "williams_r", "cci", "obv", "volume_roc", "realized_vol",
        "parkinson_vol", "garman_klass_vol", "zscore", "skew", "candle", "high_low_distance",
        "calendar", "cross_corr", "turbulence",
    } <= names  # fmt: skip
    for f in catalogue:
        assert f["description"] and f["columns"]
        # The defaults listed are accepted as they are and give the listed columns.
        entry = F.FeatureEntry.from_dict({"name": f["name"], **f["params"]})
        assert entry.columns() == f["columns"]
    text = F.describe_features()
    assert "rsi" in text and "window=14" in text and "timeframe" in text
    json.dumps(catalogue)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "rsii"}, "unknown feature 'rsii' (did you mean 'rsi'?)"),
        ({"name": "rsi", "windw": 3}, "unknown parameter"),
        ({"name": "rsi", "window": 0}, "window must be an integer >= 2"),
        ({"name": "rsi", "window": 2.5}, "window must be an integer"),
        ({"name": "returns", "lags": []}, "non-empty list"),
        ({"name": "macd", "fast": 30}, "fast (30) must be < slow (26)"),
        ({"name": "zscore", "column": "price"}, "column must be one of"),
        ({"name": "rsi", "timeframe": "4 hours"}, "timeframe must look like"),
        ({"name": "turbulence", "timeframe": "1d"}, "cross-asset features take no timeframe"),
        ({"window": 3}, "mapping with a 'name'"),
    ],
)
def test_bad_entries_raise_feature_error(entry: dict, message: str) -> None:
    with pytest.raises(FeatureError) as err:
        F.FeatureSpec.from_dict([entry])
    assert message in str(err.value)


def test_spec_level_errors(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="produced twice"):
        F.FeatureSpec.from_dict([{"name": "rsi"}, {"name": "rsi", "window": 14}])
    with pytest.raises(FeatureError, match="at least one"):
        F.FeatureSpec.from_dict({"features": []})
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [ {name: rsi\n")
    with pytest.raises(FeatureError, match="cannot read"):
        F.FeatureSpec.from_yaml(bad)
    frame = load_ohlcv("sp500_daily").head(50)
    with pytest.raises(FeatureError, match="unknown feature"):
        F.compute(frame, [{"name": "nope"}])


def test_compute_keeps_rows_and_order_for_shuffled_multi_symbol_input() -> None:
    base = load_ohlcv("sp500_daily").head(400)
    frame = pl.concat(
        [
            base.with_columns(pl.lit("A").alias("symbol")),
            base.with_columns(pl.lit("B").alias("symbol"), pl.col("close") * 1.0),
        ]
    )
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    out = F.compute(shuffled, [{"name": "rsi"}, {"name": "atr"}])
    assert out.select("timestamp", "symbol").equals(shuffled.select("timestamp", "symbol"))
    sorted_out = F.compute(frame, [{"name": "rsi"}, {"name": "atr"}])
    joined = out.join(sorted_out, on=["timestamp", "symbol"], suffix="_ref")
    assert (joined["rsi_14"] - joined["rsi_14_ref"]).abs().max() == 0
    # Per-symbol computation: identical bars give identical values for both symbols.
    a = sorted_out.filter(pl.col("symbol") == "A")["rsi_14"]
    b = sorted_out.filter(pl.col("symbol") == "B")["rsi_14"]
    assert a.equals(b)


def test_hydra_config_node_is_accepted() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONFIGS / "default.yaml")
    assert F.FeatureSpec.from_dict(node) == F.default_spec()


def test_bad_frames_raise_data_error() -> None:
    frame = load_ohlcv("sp500_daily").head(50)
    with pytest.raises(DataError, match="missing column"):
        F.compute(frame.drop("volume"))
    with pytest.raises(DataError, match="duplicate timestamps"):
        F.compute(pl.concat([frame, frame.tail(1)]))
