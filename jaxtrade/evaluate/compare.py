"""`jaxtrade compare run_a run_b ...`: key metrics of several runs side by side (and as CSV).

Each run contributes one row read from its `report/metrics.json`: validation and test
Sharpe, Sortino, max drawdown, total and annual return, the number of sweep trials, the
deflated Sharpe ratio when recorded, and the best baseline's test Sharpe for context.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from jaxtrade.errors import ConfigError
from jaxtrade.evaluate.gate import read_metrics

SPLITS = ("validation", "test")
KEYS = ("sharpe", "sortino", "max_drawdown", "total_return", "annual_return", "num_trades")


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def compare_runs(run_dirs: Sequence[str | Path]) -> pl.DataFrame:
    """One row per run directory, columns `<split>_<metric>` plus context columns."""
    rows = []
    for run_dir in run_dirs:
        metrics = read_metrics(run_dir)
        row: dict[str, Any] = {"run": Path(run_dir).name or str(run_dir)}
        for split in SPLITS:
            for key in KEYS:
                row[f"{split}_{key}"] = _value((metrics.get(split) or {}).get(key))
        row["sweep_trials"] = int(metrics.get("sweep_trials") or 1)
        row["dsr"] = _value((metrics.get("significance") or {}).get("dsr"))
        baseline_sharpes = {
            name: _value((splits.get("test") or {}).get("sharpe"))
            for name, splits in (metrics.get("baselines") or {}).items()
        }
        finite = {k: v for k, v in baseline_sharpes.items() if math.isfinite(v)}
        best = max(finite, key=finite.get) if finite else None
        row["best_baseline"] = best or ""
        row["best_baseline_test_sharpe"] = finite[best] if best else math.nan
        rows.append(row)
    return pl.DataFrame(rows)


def format_table(frame: pl.DataFrame) -> str:
    """Plain-text table, one run per row, numbers rounded for reading."""
    columns = frame.columns
    cells = [[str(c) for c in columns]]
    for row in frame.iter_rows():
        cells.append([_fmt(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main_compare(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxtrade compare", description="Compare the key metrics of several runs."
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories with report/metrics.json")
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        frame = compare_runs(args.run_dirs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(frame))
    if args.csv:
        frame.write_csv(args.csv)
        print(f"wrote {args.csv}")
    return 0
