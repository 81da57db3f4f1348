"""Market data: loading, validation, gaps, resampling and train/validation/test splits.

    frame = load_ohlcv("sp500_daily")            # or a CSV/Parquet path, a folder, "synthetic"
    report = validate(frame)                      # DataError on bad data; report.gaps lists gaps
    daily = resample(load_ohlcv("eurusd_1h"), "1d")
    splits = make_splits(frame.height, embargo_bars=20)   # 70 / 15 / 15 as the CLI
"""

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
