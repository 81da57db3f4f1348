"""Load OHLCV bars into the canonical polars frame (first version: embedded and canonical files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from jaxtrade.errors import DataError

EMBEDDED_DIR = Path(__file__).parent / "embedded"
EMBEDDED_NAMES = ("sp500_daily", "eurusd_1h")


def load_ohlcv(source: str | Path = "sp500_daily", **options: object) -> pl.DataFrame:
    name = str(source)
    if name in EMBEDDED_NAMES:
        return pl.read_parquet(EMBEDDED_DIR / f"{name}.parquet")
    path = Path(source)
    if not path.exists():
        raise DataError("no such file or embedded dataset", path=str(path))
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, try_parse_dates=True)
