"""`jaxtrade data list|inspect|validate|convert|features`: look at data before training on it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from jaxtrade.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    # A usage mistake is a ConfigError (one line, exit 2) like every other user error.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"jaxtrade data: {message} (see jaxtrade data --help)")


def _columns(pairs: Sequence[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        canonical, sep, name = pair.partition("=")
        if not sep:
            raise ConfigError(f"--column {pair!r} is not allowed: expected canonical=file_column")
        out[canonical] = name
    return out


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxtrade data", description="List, inspect, validate and convert "
                "bar data; list the features a spec can use.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="embedded datasets (name, bars, span, frequency, source)")
    for name, text in (("inspect", "summary of a dataset or file (JSON)"),
                       ("validate", "check a file; DataError names the file, row, problem")):
        q = sub.add_parser(name, help=text)
        q.add_argument("source", help="embedded name, 'synthetic', CSV/Parquet file or folder")
        q.add_argument("--column", action="append", metavar="CANONICAL=NAME",
                       help="column mapping, e.g. --column close=Close (repeatable)")
        q.add_argument("--format", default=None, help="generic|yahoo|binance|csv|parquet")
    c = sub.add_parser("convert", help="load any source and write canonical CSV/Parquet")
    c.add_argument("source")
    c.add_argument("destination", help="file.csv, file.parquet or a folder (one per symbol)")
    c.add_argument("--column", action="append", metavar="CANONICAL=NAME")
    c.add_argument("--format", default=None)
    f = sub.add_parser("features", help="every feature with its parameters and columns")
    f.add_argument("--json", action="store_true", help="machine-readable list")
    return p


def _load(args: argparse.Namespace) -> Any:
    from jaxtrade.data import load_ohlcv

    options: dict[str, Any] = {}
    if args.column:
        options["columns"] = _columns(args.column)
    if args.format:
        options["format"] = args.format
    return load_ohlcv(args.source, **options)


def main(argv: Sequence[str]) -> int:
    try:
        args = parser().parse_args(list(argv))
    except SystemExit as done:  # --help
        return int(done.code or 0)
    if args.action == "list":
        from jaxtrade.data import list_datasets

        rows = list_datasets()
        print(f"{'name':<14}{'bars':>8}  {'start':<26}{'end':<26}{'frequency':<10}source")
        for r in rows:
            print(f"{r['name']:<14}{r['bars']:>8}  {r['start']:<26}{r['end']:<26}"
                  f"{str(r.get('frequency', '')):<10}{r.get('source', '')}")
        print("also: synthetic (generator), or any CSV/Parquet path (data=csv data.path=...)")
    elif args.action == "inspect":
        from jaxtrade.data import describe

        print(json.dumps(describe(_load(args)), indent=2, default=str))
    elif args.action == "validate":
        from jaxtrade.data import validate

        report = validate(_load(args), path=args.source)
        print(f"{args.source}: ok, {report.num_bars} bars, {len(report.symbols) or 1} "
              f"symbol(s), {report.start} .. {report.end}, {report.frequency}; "
              f"{len(report.gaps)} gap(s), {report.missing_bars} missing bar(s)")
        for gap in report.gaps[:10]:
            print(f"  gap: {gap}")
    elif args.action == "convert":
        from jaxtrade.data import save

        written = save(_load(args), args.destination)
        for path in written:
            print(path)
    elif args.action == "features":
        from jaxtrade.features import describe_features, list_features

        print(json.dumps(list_features(), indent=2) if args.json else describe_features())
    return 0
