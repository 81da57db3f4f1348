"""Rebuild the embedded datasets shipped in jaxtrade/data/embedded/ (development time only).

Reads the S&P 500 daily bars shipped with the `arch` package and the EURUSD 1h series
shipped with `gym-anytrading`, converts them to jaxtrade's canonical OHLCV schema
(timestamp UTC datetime[us], open, high, low, close, volume as float64) and writes Parquet.
The product itself never imports those packages.

    python scripts/make_embedded_data.py [--out jaxtrade/data/embedded]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


def sp500_daily() -> pl.DataFrame:
    from arch.data import sp500

    pdf = sp500.load().reset_index()
    frame = pl.from_pandas(pdf)
    return frame.select(
        pl.col("Date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("timestamp"),
        pl.col("Open").cast(pl.Float64).alias("open"),
        pl.col("High").cast(pl.Float64).alias("high"),
        pl.col("Low").cast(pl.Float64).alias("low"),
        pl.col("Close").cast(pl.Float64).alias("close"),
        pl.col("Volume").cast(pl.Float64).alias("volume"),
    )


def eurusd_1h() -> pl.DataFrame:
    import gym_anytrading

    path = Path(gym_anytrading.__file__).parent / "datasets" / "data" / "FOREX_EURUSD_1H_ASK.csv"
    raw = pl.read_csv(path)
    return raw.select(
        pl.col("Time")
        .str.strptime(pl.Datetime("us"), "%d.%m.%Y %H:%M:%S%.3f")
        .dt.replace_time_zone("UTC")
        .alias("timestamp"),
        pl.col("Open").cast(pl.Float64).alias("open"),
        pl.col("High").cast(pl.Float64).alias("high"),
        pl.col("Low").cast(pl.Float64).alias("low"),
        pl.col("Close").cast(pl.Float64).alias("close"),
        pl.col("Volume").cast(pl.Float64).alias("volume"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    default_out = Path(__file__).parents[1] / "jaxtrade/data/embedded"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("sp500_daily", sp500_daily()), ("eurusd_1h", eurusd_1h())):
        frame = frame.sort("timestamp")
        frame.write_parquet(out / f"{name}.parquet", compression="zstd")
        print(f"{name}: {frame.height} bars {frame['timestamp'][0]} .. {frame['timestamp'][-1]}")


if __name__ == "__main__":
    main()
