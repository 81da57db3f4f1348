"""Train/serve parity on every input format `load_ohlcv` reads.

The same bars are written in each vendor layout (generic, Yahoo-style, Binance klines with ms
and us epochs, epoch columns, day-first, US and compact dates, an explicit `columns=` mapping,
Parquet). For each, the shared tiny run is pointed at that file (its config's data section,
the checkpoints copied): the file loads to bars with the training fingerprint, so training on
it would give the same checkpoint. `jaxtrade export` then records how it read the file, and
the runner fed that very file (replay, stdin JSON lines, HTTP polling, `jaxtrade live`)
decides the positions of the run's backtest bar for bar.

The cheap half, without training: every layout and timestamp rule (time zones, fractions,
ns epochs, adjusted prices) read through the runner's `BarFormat` gives the bars of
`load_ohlcv` exactly.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from live_helpers import report_positions, tiny_frame, tiny_run

from experiments import common
from experiments.export import bars_spec, export
from jaxtrade.live import cli as live_cli
from jaxtrade.live.formats import BarFormat, HeaderError
from jaxtrade.live.sources import JsonLinesSource, replay_source

try:
    import pyarrow  # noqa: F401

    HAVE_PYARROW = True
except ImportError:
    HAVE_PYARROW = False

PRICES = ("open", "high", "low", "close", "volume")


# --- one frame, every layout ------------------------------------------------------------------
def _micros(frame: pl.DataFrame) -> pl.Series:
    return frame["timestamp"].dt.epoch("us")


def _write(frame: pl.DataFrame, path: Path, columns: dict[str, Any], *, header: bool = True,
           separator: str = ",") -> Path:
    pl.DataFrame(columns).write_csv(path, include_header=header, separator=separator)
    return path


def generic(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    path = d / "generic.csv"
    f.write_csv(path)  # ISO 8601 with offset, as `jaxtrade data convert` writes
    return path, {"source": "csv"}


def yahoo(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    cols = {"Date": f["timestamp"].dt.strftime("%Y-%m-%d"), "Open": f["open"],
            "High": f["high"], "Low": f["low"], "Close": f["close"], "Adj Close": f["close"],
            "Volume": f["volume"]}
    return _write(f, d / "yahoo.csv", cols), {"source": "csv"}


def yahoo_us_dates(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    # The issue's file: Date,Open,High,Low,Close,Volume with US month/day/year dates.
    cols = {"Date": f["timestamp"].dt.strftime("%m/%d/%Y"), "Open": f["open"],
            "High": f["high"], "Low": f["low"], "Close": f["close"], "Volume": f["volume"]}
    return _write(f, d / "yahoo_us.csv", cols), {"source": "csv"}


def _klines(f: pl.DataFrame, d: Path, per_us: int, name: str) -> tuple[Path, dict]:
    # Kline files have no header: open time, OHLCV, close time, quote volume, trades, ...
    opened = _micros(f) // per_us
    cols = {"a": opened, "o": f["open"], "h": f["high"], "l": f["low"], "c": f["close"],
            "v": f["volume"], "ct": opened + 86_400_000_000 // per_us - 1,
            "q": f["volume"] * f["close"], "n": pl.Series(range(f.height)),
            "tb": f["volume"] / 2, "tq": f["volume"] * f["close"] / 2,
            "i": pl.Series([0] * f.height)}
    return _write(f, d / name, cols, header=False), {"source": "csv"}


def binance_ms(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    return _klines(f, d, 1000, "klines_ms.csv")


def binance_us(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    return _klines(f, d, 1, "klines_us.csv")  # the exchange's files since 2025


def epoch_ms(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    cols = {"time": _micros(f) // 1000, **{c: f[c] for c in PRICES}}
    return _write(f, d / "epoch_ms.csv", cols), {"source": "csv"}


def day_first(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    cols = {"Gmt time": f["timestamp"].dt.strftime("%d.%m.%Y %H:%M:%S.000"),
            **{c.capitalize(): f[c] for c in PRICES}}
    return _write(f, d / "dayfirst.csv", cols), {"source": "csv"}


def explicit_columns(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    names = {"timestamp": "t", "open": "px_o", "high": "px_h", "low": "px_l",
             "close": "px_c", "volume": "qty"}
    cols = {"t": f["timestamp"].dt.strftime("%Y-%m-%d"), **{names[c]: f[c] for c in PRICES}}
    path = _write(f, d / "mapped.csv", cols, separator=";")
    return path, {"source": "csv", "columns": names}


def compact_dates(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    cols = {"date": f["timestamp"].dt.strftime("%Y%m%d").cast(pl.Int64),
            **{c: f[c] for c in PRICES}}
    return _write(f, d / "compact.csv", cols), {"source": "csv"}


def parquet(f: pl.DataFrame, d: Path) -> tuple[Path, dict]:
    path = d / "bars.parquet"
    f.write_parquet(path)
    return path, {"source": "parquet"}


LAYOUTS: dict[str, Callable[[pl.DataFrame, Path], tuple[Path, dict]]] = {
    "generic": generic, "yahoo": yahoo, "yahoo_us_dates": yahoo_us_dates,
    "binance_ms": binance_ms, "binance_us": binance_us, "epoch_ms": epoch_ms,
    "day_first": day_first, "explicit_columns": explicit_columns,
    "compact_dates": compact_dates, "parquet": parquet,
}
# What the manifest must record for each: layout, timestamp kind, strptime format or unit.
RECORDED = {
    "generic": ("generic", "text", None), "yahoo": ("yahoo", "text", None),
    "yahoo_us_dates": ("generic", "text", "%m/%d/%Y"), "binance_ms": ("binance", "epoch", "ms"),
    "binance_us": ("binance", "epoch", "us"), "epoch_ms": ("generic", "epoch", "ms"),
    "day_first": ("generic", "text", "%d.%m.%Y %H:%M:%S%.f"),
    "explicit_columns": ("generic", "text", None), "compact_dates": ("generic", "text", "%Y%m%d"),
    "parquet": ("generic", "datetime", None),
}
NEEDS_PYARROW = {"parquet"}


def _layout(name: str):
    marks = [pytest.mark.skipif(not HAVE_PYARROW, reason="the runner reads Parquet with "
                                "pyarrow")] if name in NEEDS_PYARROW else []
    return pytest.param(name, marks=marks, id=name)


def _data_cfg(path: Path, data: dict) -> dict:
    return {"source": data["source"], "path": str(path), "columns": data.get("columns"),
            "options": dict(data.get("options") or {})}


def _runner_bars(path: Path, data_cfg: dict) -> list:
    # Through JSON, as a bundle carries it.
    fmt = BarFormat(json.loads(json.dumps(bars_spec(data_cfg))))
    return [fmt.bar(record) for record in replay_source(path, fmt)]


def _assert_same_bars(bars: list, frame: pl.DataFrame) -> None:
    assert [b.timestamp_us for b in bars] == _micros(frame).to_list()
    for name in PRICES:
        np.testing.assert_array_equal([getattr(b, name) for b in bars], frame[name].to_numpy())


# --- the cheap half: the runner's reading equals load_ohlcv's ---------------------------------
@pytest.mark.parametrize("name", [_layout(n) for n in LAYOUTS])
def test_runner_reads_each_layout_as_load_ohlcv_does(name, tmp_path):
    frame = tiny_frame(60)
    path, data = LAYOUTS[name](frame, tmp_path)
    cfg = _data_cfg(path, data)
    loaded = common.load_frame(cfg)
    _assert_same_bars(_runner_bars(path, cfg), loaded)
    spec = bars_spec(cfg)
    layout, kind, detail = RECORDED[name]
    assert (spec["format"], spec["timestamp"]["kind"]) == (layout, kind)
    assert detail == (spec["timestamp"]["unit"] if kind == "epoch" else spec["timestamp"]["format"])


def _utc_hours(first: str, bars: int) -> pl.Series:
    begin = pl.Series([first]).str.to_datetime(time_zone="UTC")[0]
    return pl.datetime_range(begin, begin + pl.duration(hours=bars - 1), "1h", eager=True)


@pytest.mark.parametrize("case", ["new_york_local", "fraction_day_first", "ns_epochs",
                                  "explicit_format", "adjusted_yahoo", "iso_offsets"])
def test_time_zones_fractions_and_adjusted_prices_read_as_load_ohlcv_reads_them(case, tmp_path):
    frame = tiny_frame(72, seed=2)
    # Hours across the 2021-03-14 spring-forward change in New York (02:00-03:00 local skipped).
    frame = frame.with_columns(timestamp=_utc_hours("2021-03-13T12:00:00", 72))
    prices = {c.capitalize(): frame[c] for c in PRICES}
    options: dict[str, Any] = {}
    if case == "new_york_local":
        local = frame["timestamp"].dt.convert_time_zone("America/New_York")
        cols = {"Date": local.dt.strftime("%Y-%m-%d %H:%M:%S"), **prices}
        options = {"timezone": "America/New_York"}
    elif case == "fraction_day_first":
        frame = frame.with_columns(pl.col("timestamp") + pl.duration(milliseconds=125))
        cols = {"Local time": frame["timestamp"].dt.strftime("%d.%m.%Y %H:%M:%S%.3f"), **prices}
    elif case == "ns_epochs":
        cols = {"timestamp": _micros(frame) * 1000, **prices}
    elif case == "explicit_format":
        cols = {"when": frame["timestamp"].dt.strftime("%Y/%m/%d %Hh%M"), **prices}
        options = {"timestamp_format": "%Y/%m/%d %Hh%M"}
    elif case == "iso_offsets":
        local = frame["timestamp"].dt.convert_time_zone("Europe/Berlin")
        cols = {"time": local.dt.strftime("%Y-%m-%dT%H:%M:%S%:z"), **prices}
    else:
        cols = {"Date": frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"), **prices,
                "Adj Close": frame["close"] * 0.5}
        options = {"adjust": True}
    path = _write(frame, tmp_path / f"{case}.csv", cols)
    cfg = {"source": "csv", "path": str(path), "columns": None, "options": options}
    if case == "explicit_format":
        cfg["columns"] = {"timestamp": "when"}
    bars = _runner_bars(path, cfg)
    _assert_same_bars(bars, common.load_frame(cfg))  # adjusted: the same float64 products
    if case != "adjusted_yahoo":
        _assert_same_bars(bars, frame)  # and the times written are the times meant


def test_quoted_headers_and_cells_read_as_load_ohlcv_reads_them(tmp_path):
    frame = tiny_frame(40)
    path = tmp_path / "quoted.csv"
    names = {"timestamp": "Trade Date", "close": "Last Price"}
    pl.DataFrame({"Trade Date": frame["timestamp"].dt.strftime("%Y-%m-%d"),
                  **{c: frame[c] for c in ("open", "high", "low")},
                  "Last Price": frame["close"], "volume": frame["volume"]}
                 ).write_csv(path, quote_style="always")
    cfg = {"source": "csv", "path": str(path), "columns": names, "options": {}}
    _assert_same_bars(_runner_bars(path, cfg), common.load_frame(cfg))


def test_a_header_that_cannot_be_mapped_is_refused_naming_file_and_columns(tmp_path):
    path = tmp_path / "yahoo.csv"
    yahoo(tiny_frame(30), tmp_path)
    spec = bars_spec(_data_cfg(path, {"source": "csv"}))
    odd = tmp_path / "odd.csv"
    odd.write_text("when,first,top,bottom,last_px\n2020-01-01,1,2,0.5,1.5\n")
    with pytest.raises(HeaderError) as err:
        replay_source(odd, BarFormat(spec))
    message = str(err.value)
    assert str(odd) in message and "['when', 'first', 'top', 'bottom', 'last_px']" in message
    assert "expected timestamp, open, high, low, close, volume" in message
    assert "training read Date, Open, High, Low, Close, Volume" in message
    # Canonical names (what `jaxtrade data convert` writes, what feeds send) always read.
    canonical = tmp_path / "canonical.csv"
    tiny_frame(30).write_csv(canonical)
    assert len(list(replay_source(canonical, BarFormat(spec)))) == 30
    records = list(JsonLinesSource(io.StringIO('{"Date": "2020-01-01", "Open": 1, "High": 2, '
                                               '"Low": 0.5, "Close": 1.5, "Volume": 3}\n')))
    assert BarFormat(spec).bar(records[0]).close == 1.5


# --- the round trips: train -> export -> runner on every layout --------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir, frame, _ = tiny_run(tmp_path_factory)
    test = report_positions(run_dir / "report", "test")
    return run_dir, frame, test


_BUNDLES: dict[str, tuple[Path, Path]] = {}


def _bundle(name: str, trained, tmp_factory) -> tuple[Path, Path]:
    """(bundle, bar file) of the shared run pointed at the bars written in layout `name`."""
    if name in _BUNDLES:
        return _BUNDLES[name]
    run_dir, frame, _ = trained
    root = tmp_factory.mktemp(name)
    path, data = LAYOUTS[name](frame, root)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    original = common.data_fingerprint(common.load_frame(cfg["data"]))
    cfg["data"].update(_data_cfg(path, data))
    # The file holds the bars training saw, so training on it would give this checkpoint.
    assert common.data_fingerprint(common.load_frame(cfg["data"])) == original
    pointed = root / "run"
    cfg["run_dir"] = str(pointed)
    pointed.mkdir()
    shutil.copytree(run_dir / "checkpoints", pointed / "checkpoints")
    (pointed / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with contextlib.redirect_stdout(io.StringIO()):
        bundle = export(pointed, root / "bundle")
    _BUNDLES[name] = (bundle, path)
    return bundle, path


def _decisions(text: str) -> tuple[list[dict], dict | None]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return ([x for x in lines if "target_position" in x],
            next((x["summary"] for x in lines if "summary" in x), None))


def _assert_trades_like_the_backtest(decisions: list[dict], summary: dict | None,
                                     test: pl.DataFrame, bars: int) -> None:
    assert summary is not None
    assert (summary["accepted_bars"], summary["rejected_bars"], summary["gap_bars"]) == (
        bars, 0, 0)
    assert [d["timestamp"][:10] for d in decisions] == [t[:10] for t in test["timestamp"]]
    targets = np.array([d["target_position"] for d in decisions])
    reference = test["target_position"].to_numpy()
    # The backtest's last row is the policy's target before the risk manager (no next bar).
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
    assert len(set(targets.tolist())) >= 2  # the policy really changes its mind


def _start(test: pl.DataFrame) -> str:
    return test["timestamp"][0]


@pytest.mark.parametrize("name", [_layout(n) for n in LAYOUTS])
def test_jaxtrade_live_on_each_training_layout_trades_like_the_backtest(
        name, trained, tmp_path_factory, capsys):
    from jaxtrade.cli import main

    bundle, path = _bundle(name, trained, tmp_path_factory)
    _, frame, test = trained
    recorded = json.loads((bundle / "manifest.json").read_text())["bars"]
    layout, kind, _ = RECORDED[name]
    assert (recorded["format"], recorded["timestamp"]["kind"]) == (layout, kind)
    capsys.readouterr()
    code = main(["live", f"bundle={bundle}", "source=replay", f"path={path}",
                 f"start={_start(test)}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    _assert_trades_like_the_backtest(*_decisions(out.out), test, frame.height)


def test_bundle_runner_on_the_yahoo_file_of_the_issue_trades_like_the_backtest(
        trained, tmp_path_factory):
    bundle, path = _bundle("yahoo_us_dates", trained, tmp_path_factory)
    _, frame, test = trained
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(path),
                           "--start", _start(test)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _assert_trades_like_the_backtest(*_decisions(proc.stdout), test, frame.height)


def test_stdin_json_lines_keyed_like_the_training_file_trade_like_the_backtest(
        trained, tmp_path_factory):
    bundle, path = _bundle("yahoo", trained, tmp_path_factory)
    _, frame, test = trained
    rows = pl.read_csv(path).to_dicts()  # numbers as JSON numbers, keys as in the file
    stream = "".join(json.dumps(row) + "\n" for row in rows)
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--stdin", "--start",
                           _start(test)], input=stream, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    _assert_trades_like_the_backtest(*_decisions(proc.stdout), test, frame.height)


class _Klines(http.server.BaseHTTPRequestHandler):
    payload = b"[]"

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).payload)

    def log_message(self, *args):
        pass


def test_polled_kline_arrays_trade_like_the_backtest(trained, tmp_path_factory, capsys):
    bundle, path = _bundle("binance_ms", trained, tmp_path_factory)
    _, frame, test = trained
    # The exchange's REST answer: arrays of kline fields, prices as strings.
    klines = [[int(row[0]), *row[1:6]] for row in
              (line.split(",") for line in path.read_text().splitlines())]
    handler = type("Handler", (_Klines,), {"payload": json.dumps(klines).encode()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        capsys.readouterr()
        code = live_cli.main(["--bundle", str(bundle), "--url",
                              f"http://127.0.0.1:{httpd.server_address[1]}/klines",
                              "--max-polls", "1", "--start", _start(test)])
    finally:
        httpd.shutdown()
        httpd.server_close()
    out = capsys.readouterr()
    assert code == 0, out.err
    _assert_trades_like_the_backtest(*_decisions(out.out), test, frame.height)


def test_unmappable_header_exits_2_and_no_accepted_bar_exits_1(trained, tmp_path_factory,
                                                               tmp_path, capsys):
    bundle, _ = _bundle("yahoo", trained, tmp_path_factory)
    odd = tmp_path / "odd.csv"
    odd.write_text("when,first,top,bottom,last_px,qty\n2020-01-01,1,2,0.5,1.5,3\n")
    capsys.readouterr()
    assert live_cli.main(["--bundle", str(bundle), "--bars", str(odd)]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # stopped before the first bar: no decision, no summary
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and str(odd) in lines[0] and "'last_px'" in lines[0]
    assert "expected timestamp, open, high, low, close, volume" in lines[0]
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                       "yesterday,1,2,0.5,1.5,1.5,3\ntoday,1,2,0.5,1.5,1.5,3\n")
    assert live_cli.main(["--bundle", str(bundle), "--bars", str(garbage)]) == 1
    out = capsys.readouterr()
    _, summary = _decisions(out.out)
    assert summary is not None
    assert (summary["accepted_bars"], summary["rejected_bars"], summary["gap_bars"]) == (0, 2, 0)
    assert "no bar accepted" in out.err and "malformed timestamp 'yesterday'" in out.err
