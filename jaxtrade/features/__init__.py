"""Causal features: indicator columns from OHLCV bars, normalization and selection.

    from jaxtrade import features
    spec = features.default_spec()                 # or FeatureSpec.from_yaml(path)
    table = features.compute(frame, spec)          # timestamp (+ symbol) + float64 columns
    norm = features.Normalizer.fit(table, train_rows=(0, 3000))
    x = norm.transform(table)                      # z-scored, clipped, NaN -> 0

Everything here is causal: a value at bar t depends only on bars <= t. Anything fitted
(normalization, selection, regimes) is fitted on the training rows only.
"""

from jaxtrade.features.engine import compute
from jaxtrade.features.normalize import Normalizer, normalize_numpy
from jaxtrade.features.registry import describe_features, list_features
from jaxtrade.features.select import (
    next_bar_direction,
    select_by_correlation,
    select_by_importance,
    select_by_variance,
)
from jaxtrade.features.spec import FeatureEntry, FeatureSpec, default_spec

__all__ = [
    "FeatureEntry",
    "FeatureSpec",
    "Normalizer",
    "compute",
    "default_spec",
    "describe_features",
    "list_features",
    "next_bar_direction",
    "normalize_numpy",
    "select_by_correlation",
    "select_by_importance",
    "select_by_variance",
]
