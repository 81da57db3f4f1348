"""Command line of the runner (numpy + standard library only).

    python BUNDLE/runner.py --bars bars.csv [--start 2020-01-02] [--store replay.sqlite]
    jaxtrade live bundle=BUNDLE source=replay path=bars.csv [start=...] [store=...]

Sources: `--bars PATH` (CSV, or Parquet when pyarrow is installed), `--stdin` (JSON lines),
`--url URL` (HTTP polling example). Sinks: `--sink stdout` (default), `--sink file:PATH`,
`--sink webhook:ENV_VAR` (URL read from that environment variable; posts on target changes,
retried with backoff, kept in the store until delivered, in order).
Every source is read the way training read its bars (the manifest's `bars` section:
vendor headers, klines without header, epochs, day-first dates; see formats.py).
One JSON line per decided bar goes to the sinks; at the end one `{"summary": {...}}` line is
printed to stdout, counting accepted, rejected and gap bars. Rejected bars and gaps are logged
to stderr and the runner goes on. A bar stamped more than --max-ahead-seconds (default one
day) after this machine's clock is rejected; a bar more than --max-jump-seconds (default ten
times the longest pause seen in training) after the previous one waits for the next bar to
confirm it. Lines longer than --max-line-bytes (default 64 KiB) are rejected unread.
A bundle trained on several symbols (its manifest lists `symbols`) runs in
multi.MultiAssetRunner: `--bars` is one file with a `symbol` column (rows in time order) or a
folder with one file per symbol (named SYMBOL.csv), `--stdin` JSON lines with a `symbol` key;
one line per timestamp carries `target_positions` {symbol: weight}. A symbol whose bar is
missing at a timestamp is handled as the backtest handles it (prices carried, no fill there);
its bar arriving after a later timestamp was seen is rejected, never applied late. The
alerts, `--on-drift flat` (every symbol flat), `--bundle-pointer` and `--store` (one
transaction per timestamp; a restart resumes after the last stored one) work as for one
symbol.
`--engine onnx` runs the policy with the bundle's policy.onnx through onnxruntime (exported
with format=onnx); features, ledger and risk rules are the same numpy code.

`--bundle-pointer P` (instead of --bundle) follows `jaxtrade retrain`'s promotions: when the
pointer names another bundle, it takes over at the next bar boundary (sha256-checked, warmed
up on the bars seen so far) and the ledger, store and open position carry on; a bundle that
fails its checks is refused with an alert and the running one keeps trading.
Alerts (monitor.py; logged to stderr, stored in the store's `events`, posted by webhook
sinks): live Sharpe below --min-sharpe (1.0) over --sharpe-window (100) bars, drawdown deeper
than --max-drawdown (default the backtest's worst, from the bundle), and a shift of the
returns' distribution from training's (PSI over --drift-window 150 bars above --drift-psi
0.25), and of the policy's inputs (the median over features of their PSI against the training
split's, over --feature-window 300 bars, above --feature-psi 0.5; monitor.py). `--on-drift
flat` holds no position from either drift alert until a promotion.

Exit codes: 0 ok; 2 a bundle, option or source that cannot be used (a file whose header does
not map onto bars stops before the first bar, naming the file, the columns found and the
columns expected); 1 a stream of which no bar was accepted; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .bars import parse_timestamp
from .bundle import load_bundle
from .engine import MAX_AHEAD_SECONDS, Runner
from .errors import BarRejected, BundleError
from .formats import BarFormat
from .pointer import read_pointer
from .sinks import FileSink, MultiSink, Sink, StdoutSink, WebhookSink
from .sources import (
    MAX_LINE_BYTES,
    BarSource,
    HttpPollingSource,
    JsonLinesSource,
    replay_source,
)
from .store import ReplayStore

# key=value spellings of `jaxtrade live` mapped onto the flags.
_KEYS = {
    "bundle": "--bundle",
    "path": "--bars",
    "bars": "--bars",
    "start": "--start",
    "store": "--store",
    "sink": "--sink",
    "url": "--url",
    "initial_equity": "--initial-equity",
    "purge_days": "--purge-days",
    "poll_seconds": "--poll-seconds",
    "max_polls": "--max-polls",
    "max_ahead_seconds": "--max-ahead-seconds",
    "max_jump_seconds": "--max-jump-seconds",
    "max_line_bytes": "--max-line-bytes",
    "bundle_pointer": "--bundle-pointer",
    "on_drift": "--on-drift",
    "min_sharpe": "--min-sharpe",
    "sharpe_window": "--sharpe-window",
    "max_drawdown": "--max-drawdown",
    "drift_psi": "--drift-psi",
    "drift_window": "--drift-window",
    "feature_psi": "--feature-psi",
    "feature_window": "--feature-window",
    "engine": "--engine",
}


def _translate(argv: list[str]) -> list[str]:
    out: list[str] = []
    source = None
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key, value = arg.split("=", 1)
        if key == "source":
            source = value
            continue
        if key not in _KEYS:
            raise BundleError(f"unknown option {key!r}; known: source, {', '.join(_KEYS)}")
        out += [_KEYS[key], value]
    if source == "stdin":
        out.append("--stdin")
    elif source not in (None, "replay", "http"):
        raise BundleError(f"source must be replay, stdin or http, got {source!r}")
    return out


def build_parser(default_bundle: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner.py" if default_bundle else "jaxtrade live",
        description="Run an exported jaxtrade policy bundle on bars (paper trading).",
        epilog="key=value spellings work too: bundle=DIR source=replay|stdin|http path=FILE "
        "url=URL start=TIME store=FILE sink=SPEC initial_equity=X purge_days=N "
        "max_ahead_seconds=S max_jump_seconds=S max_line_bytes=N engine=numpy|onnx",
    )
    bundles = parser.add_mutually_exclusive_group()
    bundles.add_argument("--bundle", default=default_bundle, help="bundle directory")
    bundles.add_argument("--bundle-pointer",
                         help="pointer to the deployed bundle (followed between bars)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bars", help="replay a CSV (or Parquet) file of OHLCV bars")
    src.add_argument("--stdin", action="store_true", help="read JSON-lines bars from stdin")
    src.add_argument("--url", help="poll an HTTP endpoint returning the latest bar(s) as JSON")
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--max-polls", type=int, default=None)
    parser.add_argument(
        "--start", help="first bar to trade (ISO time); earlier bars only warm up the features"
    )
    parser.add_argument("--store", help="SQLite replay store (bars, decisions, fills)")
    parser.add_argument("--durable", action="store_true", help="fsync the store every bar")
    parser.add_argument(
        "--purge-days",
        type=float,
        default=None,
        help="delete store rows older than this many days at start",
    )
    parser.add_argument(
        "--sink",
        action="append",
        default=None,
        help="stdout | file:PATH | webhook:ENV_VAR (repeatable)",
    )
    parser.add_argument("--initial-equity", type=float, default=None)
    parser.add_argument(
        "--max-ahead-seconds", type=float, default=MAX_AHEAD_SECONDS,
        help="reject bars stamped this much after this machine's clock (0: off; default a day)",
    )
    parser.add_argument(
        "--max-jump-seconds", type=float, default=None,
        help="a bar this much after the previous one waits for the next bar to confirm it "
        "(0: off; default 10x the longest pause seen in training)",
    )
    parser.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                        help="reject longer JSON lines on stdin unread")
    parser.add_argument("--on-drift", choices=("alert", "flat"), default="alert",
                        help="flat: hold no position from a drift alert until a promotion")
    parser.add_argument("--min-sharpe", type=float, default=1.0,
                        help="alert when live Sharpe over --sharpe-window bars falls below")
    parser.add_argument("--sharpe-window", type=int, default=100)
    parser.add_argument("--max-drawdown", type=float, default=None,
                        help="alert below this drawdown, e.g. -0.2 (default the backtest's)")
    parser.add_argument("--drift-psi", type=float, default=0.25,
                        help="alert when the returns' PSI vs training exceeds this")
    parser.add_argument("--drift-window", type=int, default=150)
    parser.add_argument("--feature-psi", type=float, default=0.5,
                        help="alert when the median PSI of the policy's normalized features "
                        "vs training's exceeds this (0: off)")
    parser.add_argument("--feature-window", type=int, default=300)
    parser.add_argument("--no-monitor", action="store_true", help="no alerts")
    parser.add_argument(
        "--engine", choices=("numpy", "onnx"), default="numpy",
        help="policy forward pass: numpy (default) or the bundle's policy.onnx through "
        "onnxruntime (export with format=onnx; pip install onnxruntime)",
    )
    parser.add_argument("--no-summary", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def _sinks(specs: list[str] | None, store: ReplayStore | None) -> Sink:
    sinks: list[Sink] = []
    for spec in specs or ["stdout"]:
        if spec == "stdout":
            sinks.append(StdoutSink())
        elif spec.startswith("file:"):
            sinks.append(FileSink(spec[5:]))
        elif spec.startswith("webhook:"):
            sinks.append(WebhookSink(spec[8:], store=store))
        else:
            raise BundleError(f"unknown sink {spec!r}: use stdout, file:PATH or webhook:ENV_VAR")
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


def _source(args, bar_format: BarFormat) -> BarSource:
    if args.bars:
        return replay_source(args.bars, bar_format)
    if args.url:
        return HttpPollingSource(args.url, poll_seconds=args.poll_seconds,
                                 max_polls=args.max_polls, bar_format=bar_format)
    return JsonLinesSource(max_line_bytes=args.max_line_bytes)


def main(argv: list[str] | None = None, *, default_bundle: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(default_bundle).parse_args(_translate(argv))
        logging.basicConfig(
            level=args.log_level.upper(),
            stream=sys.stderr,
            format="runner: %(levelname)s %(message)s",
        )
        if args.bundle_pointer:
            bundle = load_bundle(read_pointer(args.bundle_pointer))
        elif args.bundle:
            bundle = load_bundle(Path(args.bundle))
        else:
            raise BundleError("no bundle given (--bundle DIR or bundle=DIR)")
        for name in ("sharpe_window", "drift_window", "feature_window"):
            if getattr(args, name) < 2:
                raise BundleError(f"--{name.replace('_', '-')} must be at least 2")
        if len(bundle.manifest.get("symbols") or [None]) > 1:
            return _run_multi(args, bundle)
        # Made first: a file whose header cannot be mapped stops before anything is written.
        source = _source(args, BarFormat(bundle.manifest.get("bars")))
        start_us = parse_timestamp(args.start) if args.start else None
        store = ReplayStore(args.store, durable=args.durable) if args.store else None
        if store is not None and args.purge_days is not None:
            store.purge(args.purge_days * 86_400.0)
        sink = _sinks(args.sink, store)
        max_age = None if args.purge_days is None else args.purge_days * 86_400.0
        runner = Runner(
            bundle,
            sink=sink,
            store=store,
            initial_equity=args.initial_equity,
            max_age_seconds=max_age,
            max_ahead_seconds=args.max_ahead_seconds,
            max_jump_seconds=args.max_jump_seconds,
            pointer=args.bundle_pointer,
            monitor=_monitor_options(args),
            on_drift=args.on_drift,
            engine=args.engine,
        )
        # After a restart the store holds what was already processed: rebuild from it, print
        # what was stored but not printed, and skip those bars in the source.
        resume_after = runner.replay_store(start_us)
        runner.emit_unemitted()
        try:
            summary = runner.run(source, start_us=start_us, resume_after_us=resume_after)
        finally:
            source.close()
            sink.close()
            if store is not None:
                store.close()
        if not args.no_summary:
            print(json.dumps({"summary": summary}, default=float), flush=True)
        if runner.accepted == 0 and runner.resumed == 0:
            reason = f"; first rejection: {runner.first_rejection}" if runner.rejected else ""
            where = args.bars or args.url or "stdin"
            print(f"runner: error: no bar accepted from {where} ({runner.rejected} rejected"
                  f"{reason})", file=sys.stderr)
            return 1
        return 0
    except (BundleError, BarRejected) as err:
        print(f"runner: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _monitor_options(args) -> dict | None:
    if args.no_monitor:
        return None
    return {"min_sharpe": args.min_sharpe, "sharpe_window": args.sharpe_window,
            "max_drawdown": args.max_drawdown, "drift_psi": args.drift_psi,
            "drift_window": args.drift_window, "feature_psi": args.feature_psi or None,
            "feature_window": args.feature_window}


def _multi_records(args, bar_format: BarFormat):
    """(symbol, record) pairs in time order from a folder of per-symbol files, or the raw
    records of one file / stdin (their `symbol` field names the symbol)."""
    import heapq

    if args.bars and Path(args.bars).is_dir():
        files = sorted(p for p in Path(args.bars).iterdir()
                       if p.suffix.lower() in (".csv", ".parquet", ".pq"))
        if not files:
            raise BundleError(f"{args.bars}: no .csv or .parquet file (one per symbol)")
        streams = []
        for k, path in enumerate(files):
            rows = []
            for i, record in enumerate(replay_source(path, bar_format).records()):
                try:
                    stamp = bar_format.bar(record).timestamp_us
                except Exception:  # noqa: BLE001 - the runner rejects it with its reason
                    stamp = -1
                rows.append((stamp, k, i, (path.stem, record)))
            streams.append(rows)
        return (item[3] for item in heapq.merge(*streams, key=lambda r: (r[0], r[1], r[2])))
    if args.url:
        raise BundleError("a multi-asset bundle reads --bars (file or folder) or --stdin")
    return _source(args, bar_format)


def _run_multi(args, bundle) -> int:
    from .multi import MultiAssetRunner

    bar_format = BarFormat(bundle.manifest.get("bars"))
    # Made first: a file whose header cannot be mapped stops before anything is written.
    records = _multi_records(args, bar_format)
    start_us = parse_timestamp(args.start) if args.start else None
    store = ReplayStore(args.store, durable=args.durable) if args.store else None
    if store is not None and args.purge_days is not None:
        store.purge(args.purge_days * 86_400.0)
    sink = _sinks(args.sink, store)
    max_age = None if args.purge_days is None else args.purge_days * 86_400.0
    try:
        runner = MultiAssetRunner(bundle, sink=sink, initial_equity=args.initial_equity,
                                  engine=args.engine, monitor=_monitor_options(args),
                                  on_drift=args.on_drift, pointer=args.bundle_pointer,
                                  store=store, max_age_seconds=max_age)
        # After a restart: rebuild from the store, print what was stored but not printed,
        # and skip the source's bars up to the last stored timestamp.
        resume_after = runner.replay_store(start_us)
        runner.emit_unemitted()
        summary = runner.run(records, start_us=start_us, resume_after_us=resume_after)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
        sink.close()
        if store is not None:
            store.close()
    if not args.no_summary:
        print(json.dumps({"summary": summary}, default=float), flush=True)
    if runner.timestamps == 0:
        print(f"runner: error: no bar accepted ({runner.rejected} rejected)", file=sys.stderr)
        return 1
    return 0
