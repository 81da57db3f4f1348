"""Market data: loading, validation, gaps, resampling and train/validation/test splits.

    frame = load_ohlcv("sp500_daily")            # or a CSV/Parquet path, a folder, "synthetic"
    report = validate(frame)                      # DataError on bad data; report.gaps lists gaps
    daily = resample(load_ohlcv("eurusd_1h"), "1d")
    splits = make_splits(frame.height, embargo_bars=20)   # 70 / 15 / 15 as the CLI
"""

import importlib
from typing import TYPE_CHECKING

# Each name is imported on first use (PEP 562), so `jaxtrade.data.splits` alone (the config
# schema's split defaults) does not import polars: config typos are reported fast.
_WHERE = {
    "Gap": "calendar", "fill_gaps": "calendar", "find_gaps": "calendar",
    "infer_bars_per_year": "calendar", "list_datasets": "embedded", "convert": "loaders",
    "load_ohlcv": "loaders", "save": "loaders", "resample": "resample", "Splits": "splits",
    "make_splits": "splits", "walk_forward": "splits", "ValidationReport": "validate",
    "describe": "validate", "validate": "validate",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'jaxtrade.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"jaxtrade.data.{_WHERE[name]}"), name)


if TYPE_CHECKING:
    from jaxtrade.data.calendar import Gap, fill_gaps, find_gaps, infer_bars_per_year
    from jaxtrade.data.embedded import list_datasets
    from jaxtrade.data.loaders import convert, load_ohlcv, save
    from jaxtrade.data.resample import resample
    from jaxtrade.data.splits import Splits, make_splits, walk_forward
    from jaxtrade.data.validate import ValidationReport, describe, validate

__all__ = [
    "Gap",
    "Splits",
    "ValidationReport",
    "convert",
    "describe",
    "fill_gaps",
    "find_gaps",
    "infer_bars_per_year",
    "list_datasets",
    "load_ohlcv",
    "make_splits",
    "resample",
    "save",
    "validate",
    "walk_forward",
]
