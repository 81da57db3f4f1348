"""Market data: loading, validation, resampling and train/validation/test splits."""

from jaxtrade.data.loaders import load_ohlcv
from jaxtrade.data.splits import Splits, make_splits, walk_forward

__all__ = ["Splits", "load_ohlcv", "make_splits", "walk_forward"]
