"""`jaxtrade compare run_a run_b ...`: key metrics of several runs side by side (and as CSV).

Each run contributes one row read from its `report/metrics.json` (and its agent from the
run's config.yaml): the reported point's validation and test Sharpe, Sortino, max drawdown,
total and annual return and trades; the aggregate over the run's seeds (mean, std, and the
interquartile mean with its bootstrap interval, jaxtrade.evaluate.seeds) of the Sharpe,
return and max drawdown; the number of sweep trials, the deflated Sharpe ratio when
recorded, and the best baseline's test Sharpe for context.

The console table fits 100 columns: its column groups are printed as sections, each with
the run, agent and seed count; `--csv FILE` writes every column, the intervals' bounds
included. A figure that is absent prints as `-`, with a line under the table saying why.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from jaxtrade.errors import ConfigError
from jaxtrade.evaluate.gate import read_metrics
from jaxtrade.evaluate.seeds import CONFIDENCE, MIN_SEEDS_FOR_CI, SEED_METRICS, number

SPLITS = ("validation", "test")
KEYS = ("sharpe", "sortino", "max_drawdown", "total_return", "annual_return", "num_trades")
STATS = ("mean", "std", "iqm", "iqm_ci_low", "iqm_ci_high")
WIDTH = 100  # the console table's width
RUN_WIDTH = 28  # longer run names are shortened on the console (the CSV has them whole)


def _value(x: Any) -> float | None:
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def agent_name(run_dir: str | Path, metrics: Mapping[str, Any]) -> str:
    """The run's agent: metrics.json's "agent", else agent.name in the run's config.yaml."""
    if metrics.get("agent"):
        return str(metrics["agent"])
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        try:
            name = ((yaml.safe_load(config.read_text()) or {}).get("agent") or {}).get("name")
        except yaml.YAMLError:
            name = None
        if name:
            return str(name)
    return ""


def seed_aggregate(metrics: Mapping[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
    """(number of seeds, {split: {metric: aggregate}}) of a metrics.json; a report without a
    "seeds" record (one point, or written before it existed) is one seed: its own figures."""
    seeds = metrics.get("seeds")
    if seeds and seeds.get("aggregate"):
        return int(seeds["num_seeds"]), seeds["aggregate"]
    single = {}
    for split in SPLITS:
        by_metric = {}
        for metric in SEED_METRICS:
            value = _value((metrics.get(split) or {}).get(metric))
            by_metric[metric] = {"mean": value, "std": None, "iqm": value, "iqm_ci": None}
        single[split] = by_metric
    return 1, single


def compare_runs(run_dirs: Sequence[str | Path]) -> pl.DataFrame:
    """One row per run directory: `run`, `agent`, `seeds`, `<split>_<metric>` of the reported
    point, `<split>_<metric>_<stat>` over seeds, and context columns. Absent figures are null."""
    rows = []
    for run_dir in run_dirs:
        metrics = read_metrics(run_dir)
        num_seeds, aggregate = seed_aggregate(metrics)
        row: dict[str, Any] = {
            "run": Path(run_dir).name or str(run_dir),
            "agent": agent_name(run_dir, metrics),
            "seeds": num_seeds,
        }
        for split in SPLITS:
            for key in KEYS:
                row[f"{split}_{key}"] = _value((metrics.get(split) or {}).get(key))
        for split in SPLITS:
            for metric in SEED_METRICS:
                agg = (aggregate.get(split) or {}).get(metric) or {}
                ci = agg.get("iqm_ci") or (None, None)
                values = {
                    "mean": agg.get("mean"),
                    "std": agg.get("std"),
                    "iqm": agg.get("iqm"),
                    "iqm_ci_low": ci[0],
                    "iqm_ci_high": ci[1],
                }
                for stat in STATS:
                    row[f"{split}_{metric}_{stat}"] = _value(values[stat])
        row["sweep_trials"] = int(metrics.get("sweep_trials") or 1)
        row["dsr"] = _value((metrics.get("significance") or {}).get("dsr"))
        baseline_sharpes = {
            name: _value((splits.get("test") or {}).get("sharpe"))
            for name, splits in (metrics.get("baselines") or {}).items()
        }
        finite = {k: v for k, v in baseline_sharpes.items() if v is not None}
        best = max(finite, key=finite.get) if finite else None
        row["best_baseline"] = best or ""
        row["best_baseline_test_sharpe"] = finite[best] if best else None
        rows.append(row)
    schema = {
        key: pl.Float64
        for key in rows[0]
        if key not in ("run", "agent", "best_baseline", "seeds", "sweep_trials")
    }
    return pl.DataFrame(rows, schema_overrides=schema)


# ------------------------------------------------------------------------------ console

Cell = Callable[[Mapping[str, Any]], str]
SHORT = {"validation": "val", "test": "test"}
LABELS = {
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "max DD",
    "total_return": "return",
    "annual_return": "CAGR",
    "num_trades": "trades",
}


def _figure(key: str, metric: str) -> Cell:
    def cell(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if metric == "num_trades":
            return "-" if value is None else f"{value:.0f}"
        return number(value, metric)

    return cell


def _mean_std(split: str, metric: str) -> Cell:
    def cell(row: Mapping[str, Any]) -> str:
        mean, std = row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"]
        if mean is None:
            return "-"
        return number(mean, metric) + ("" if std is None else f" ± {number(std, metric)}")

    return cell


def _iqm_ci(split: str, metric: str) -> Cell:
    def cell(row: Mapping[str, Any]) -> str:
        iqm = row[f"{split}_{metric}_iqm"]
        low, high = row[f"{split}_{metric}_iqm_ci_low"], row[f"{split}_{metric}_iqm_ci_high"]
        if iqm is None:
            return "-"
        ci = "[-]" if low is None else f"[{number(low, metric)}, {number(high, metric)}]"
        return f"{number(iqm, metric)} {ci}"

    return cell


def _context(key: str) -> Cell:
    def cell(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if value is None or value == "":
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return cell


def sections() -> list[tuple[str, list[tuple[str, Cell]]]]:
    """The console's column groups: (title, [(header, cell)])."""
    ci = f"IQM [{100 * CONFIDENCE:g}% CI]"
    out = [
        (
            f"reported point: {split}",
            [(f"{SHORT[split]} {LABELS[k]}", _figure(f"{split}_{k}", k)) for k in KEYS],
        )
        for split in SPLITS
    ]
    for metric in SEED_METRICS:
        columns = []
        for split in SPLITS:
            columns.append((f"{SHORT[split]} mean ± std", _mean_std(split, metric)))
            columns.append((f"{SHORT[split]} {ci}", _iqm_ci(split, metric)))
        out.append((f"over seeds: {LABELS[metric]}", columns))
    out.append(
        (
            "context",
            [
                ("trials", _context("sweep_trials")),
                ("DSR", _context("dsr")),
                ("best baseline", _context("best_baseline")),
                ("its test Sharpe", _context("best_baseline_test_sharpe")),
            ],
        )
    )
    return out


def _short_name(name: str, width: int = RUN_WIDTH) -> str:
    if len(name) <= width:
        return name
    keep = width - 3
    return name[: (keep + 1) // 2] + "..." + name[len(name) - keep // 2 :]


def _table(keys: list[list[str]], headers: list[str], cells: list[list[str]]) -> list[str]:
    key_headers = ["run", "agent", "seeds"]
    table = [key_headers + headers] + [k + c for k, c in zip(keys, cells, strict=True)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    just = [str.ljust, str.ljust] + [str.rjust] * (len(widths) - 2)
    lines = ["  ".join(j(c, w) for j, c, w in zip(just, r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(frame: pl.DataFrame, width: int = WIDTH) -> str:
    """The comparison as text no wider than `width`: each column group a section headed by
    its title, repeating run, agent and seeds; a group too wide is cut into several."""
    rows = frame.to_dicts()
    keys = [[_short_name(r["run"]), r["agent"] or "-", str(r["seeds"])] for r in rows]
    key_width = sum(
        max(len(k[i]) for k in [["run", "agent", "seeds"], *keys]) + 2 for i in range(3)
    )
    blocks = []
    for title, columns in sections():
        rendered = [(h, [cell(r) for r in rows]) for h, cell in columns]
        part: list[tuple[str, list[str]]] = []
        used = key_width
        parts = []
        for header, values in rendered:
            column_width = max(len(header), *(len(v) for v in values)) + 2
            if part and used + column_width > width:
                parts.append(part)
                part, used = [], key_width
            part.append((header, values))
            used += column_width
        parts.append(part)
        for index, part in enumerate(parts):
            suffix = f" ({index + 1}/{len(parts)})" if len(parts) > 1 else ""
            cells = [[values[i] for _, values in part] for i in range(len(rows))]
            blocks.append(
                "\n".join([f"{title}{suffix}", *_table(keys, [h for h, _ in part], cells)])
            )
    notes = [
        line
        for note in footnotes(rows)
        for line in textwrap.wrap(note, width - 1, subsequent_indent="  ")
    ]
    return "\n\n".join(blocks) + ("\n\n" + "\n".join(notes) if notes else "")


def footnotes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a figure is `-`: the DSR of a single trial, the CI of fewer than 4 seeds."""
    lines = []

    def runs(keep: Callable[[Mapping[str, Any]], bool]) -> str:
        return ", ".join(dict.fromkeys(r["run"] for r in rows if keep(r)))

    single = runs(lambda r: r["dsr"] is None and r["sweep_trials"] < 2)
    missing = runs(lambda r: r["dsr"] is None and r["sweep_trials"] >= 2)
    if single:
        lines.append(
            f"DSR -: {single}: the deflated Sharpe ratio discounts the best "
            "of several trials and needs >= 2 trials (sweep points or seeds)"
        )
    if missing:
        lines.append(f"DSR -: {missing}: not recorded in report/metrics.json")
    few = runs(lambda r: r["seeds"] < MIN_SEEDS_FOR_CI)
    if few:
        lines.append(
            f"IQM CI [-]: {few}: fewer than {MIN_SEEDS_FOR_CI} seeds, no "
            f"meaningful interval (train.num_seeds>={MIN_SEEDS_FOR_CI} gives one)"
        )
    one = runs(lambda r: r["seeds"] == 1)
    if one:
        lines.append(f"std -: {one}: one seed")
    return lines


def main_compare(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxtrade compare", description="Compare the key metrics of several runs."
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories with report/metrics.json")
    parser.add_argument(
        "--csv", metavar="PATH", help="also write every column (interval bounds too) as CSV"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        frame = compare_runs(args.run_dirs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(frame))
    if args.csv:
        frame.write_csv(args.csv)
        print(f"wrote {args.csv} ({len(frame.columns)} columns)")
    else:
        print(f"every column ({len(frame.columns)}, the intervals' bounds too): --csv FILE")
    return 0
