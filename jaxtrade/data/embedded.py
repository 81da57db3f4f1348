"""Datasets shipped inside the package: canonical Parquet files, see embedded/ATTRIBUTION.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from jaxtrade.data.calendar import frequency_label, spacing_us
from jaxtrade.errors import DataError

EMBEDDED_DIR = Path(__file__).parent / "embedded"

# name -> where the bars came from (the numbers are read from the files themselves).
EMBEDDED: dict[str, str] = {
    "sp500_daily": "S&P 500 index daily bars 1999-2018 (arch package data, from Yahoo! Finance)",
    "eurusd_1h": "EURUSD 1h ask bars 2017 (gym-anytrading package data)",
}
DEFAULT_DATASET = "sp500_daily"


def load_embedded(name: str) -> pl.DataFrame:
    if name not in EMBEDDED:
        raise DataError(f"unknown embedded dataset {name!r}; available: {sorted(EMBEDDED)}")
    return pl.read_parquet(EMBEDDED_DIR / f"{name}.parquet")


def list_datasets() -> list[dict[str, Any]]:
    """name, bars, start, end (ISO 8601, UTC), frequency and source of each embedded dataset."""
    out = []
    for name, source in EMBEDDED.items():
        frame = load_embedded(name)
        ts = frame["timestamp"]
        out.append({
            "name": name,
            "bars": frame.height,
            "start": ts.min().isoformat(),  # type: ignore[union-attr]
            "end": ts.max().isoformat(),  # type: ignore[union-attr]
            "frequency": frequency_label(spacing_us(ts)),
            "source": source,
        })
    return out
