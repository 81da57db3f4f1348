"""Runner input/output pieces: weight files, bar validation, sources, sinks, replay store."""

from __future__ import annotations

import http.server
import io
import json
import math
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxtrade.live.bars import BarGate, format_timestamp, parse_bar, parse_timestamp
from jaxtrade.live.errors import BarRejected, BundleError
from jaxtrade.live.formats import BarFormat
from jaxtrade.live.sinks import FileSink, WebhookSink
from jaxtrade.live.sources import (
    CsvReplaySource,
    HttpPollingSource,
    JsonLinesSource,
    MalformedRecord,
)
from jaxtrade.live.store import ReplayStore
from jaxtrade.live.tensors import read_npz, read_safetensors, write_safetensors

GOOD = {"timestamp": "2020-01-02T00:00:00Z", "open": 1, "high": 2, "low": 0.5, "close": 1.5}


def test_safetensors_reader_and_writer_agree_with_the_reference_library(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a/kernel": rng.normal(size=(3, 4)).astype(np.float32),
        "b": rng.normal(size=(5,)).astype(np.float64),
        "c": np.arange(6, dtype=np.int32).reshape(2, 3),
        "scalar": np.array(2.5, dtype=np.float32),
    }
    save_file(tensors, str(tmp_path / "ref.safetensors"))
    ours = read_safetensors(tmp_path / "ref.safetensors")
    write_safetensors(tmp_path / "ours.safetensors", tensors, {"k": "v"})
    theirs = load_file(str(tmp_path / "ours.safetensors"))
    for name, value in tensors.items():
        np.testing.assert_array_equal(ours[name], value)
        np.testing.assert_array_equal(theirs[name], value)
        assert ours[name].dtype == value.dtype == theirs[name].dtype


def test_corrupt_safetensors_and_pickled_npz_are_refused(tmp_path):
    path = write_safetensors(tmp_path / "w.safetensors", {"x": np.ones(4, np.float32)})
    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[:-3])
    with pytest.raises(BundleError, match="offsets"):
        read_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "huge.safetensors").write_bytes((10**12).to_bytes(8, "little") + raw[8:])
    with pytest.raises(BundleError, match="header length"):
        read_safetensors(tmp_path / "huge.safetensors")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BundleError, match="without pickle"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "ok.npz", x=np.arange(3.0))
    np.testing.assert_array_equal(read_npz(tmp_path / "ok.npz")["x"], np.arange(3.0))


def test_timestamps_round_trip_in_utc():
    us = parse_timestamp("2017-01-01T22:00:00.000000+0000")
    assert format_timestamp(us) == "2017-01-01T22:00:00Z"
    assert parse_timestamp("2017-01-02T00:00:00+02:00") == us
    assert parse_timestamp("2017-01-01 22:00:00") == us  # naive means UTC
    assert parse_timestamp(us / 1e6) == us
    assert parse_timestamp(str(us / 1e6)) == us


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"close": float("nan")}, "non-finite close"),
        ({"open": "inf"}, "non-finite open"),
        ({"low": 0.0}, "non-positive low"),
        ({"high": -1.0}, "non-positive high"),
        ({"high": 0.4}, "below low"),
        ({"volume": -5}, "negative volume"),
        ({"close": "abc"}, "malformed close"),
        ({"timestamp": "yesterday"}, "malformed timestamp"),
        ({"close": None}, "missing close"),
    ],
)
def test_bad_bars_are_rejected_with_a_reason(change, reason):
    with pytest.raises(BarRejected, match=reason):
        parse_bar({**GOOD, **change})


def _at(stamp: str):
    return parse_bar({**GOOD, "timestamp": stamp})


def test_gate_rejects_duplicates_and_out_of_order_and_reports_gaps():
    gate = BarGate(bar_interval_us=3600 * 10**6)
    first = parse_bar(GOOD)
    assert gate.admit(first) == ([(first, None)], [])
    with pytest.raises(BarRejected, match="duplicate"):
        gate.admit(first)
    with pytest.raises(BarRejected, match="out-of-order"):
        gate.admit(_at("2020-01-01T23:00:00Z"))
    assert gate.admit(_at("2020-01-02T01:00:00Z"))[0][0][1] is None
    (admitted, note), = gate.admit(_at("2020-01-02T11:00:00Z"))[0]
    assert note is not None and "gap of 10.0 bars" in note


def test_gate_refuses_future_bars_and_holds_jumps_until_the_next_bar_confirms_them():
    now = parse_timestamp("2020-01-10T00:00:00Z") / 1e6
    gate = BarGate(3600 * 10**6, max_ahead_us=86_400 * 10**6, max_jump_us=30 * 3600 * 10**6,
                   clock=lambda: now)
    with pytest.raises(BarRejected, match="ahead of this machine's clock"):
        gate.admit(_at("2099-01-01T00:00:00Z"))
    assert gate.last_timestamp_us is None  # the stream's position did not move
    # The first bar of a stream waits for a second one that follows it within the limit.
    first, second = _at("2020-01-02T00:00:00Z"), _at("2020-01-02T01:00:00Z")
    assert gate.admit(first) == ([], [])
    assert [b for b, _ in gate.admit(second)[0]] == [first, second]
    # A lone bar far ahead (inside the clock's limit) is dropped when the next real bar comes.
    stray, third = _at("2020-01-09T00:00:00Z"), _at("2020-01-02T02:00:00Z")
    assert gate.admit(stray) == ([], [])
    admitted, dropped = gate.admit(third)
    assert [b for b, _ in admitted] == [third]
    assert dropped[0][0] == stray and "not confirmed" in dropped[0][1]
    # A real pause (a closure, a restart) is confirmed by the bar after it: one bar of delay.
    after, next_one = _at("2020-01-06T00:00:00Z"), _at("2020-01-06T01:00:00Z")
    assert gate.admit(after) == ([], [])
    admitted, _ = gate.admit(next_one)
    assert [b for b, _ in admitted] == [after, next_one] and "gap of" in admitted[0][1]
    assert gate.admit(_at("2020-01-08T00:00:00Z")) == ([], [])
    assert "the stream ended" in gate.finish()[0][1]


@pytest.mark.parametrize("stamp", [1e300, -1e300, 10**400, "1e300", 1e308 * 10],
                         ids=["1e300", "-1e300", "10**400", "text", "inf"])
def test_timestamps_outside_years_1_to_9999_are_rejected_not_raised(stamp):
    with pytest.raises(BarRejected, match="out of range"):
        BarFormat().bar({**GOOD, "timestamp": stamp})
    with pytest.raises(BarRejected, match="out of range"):
        parse_timestamp(stamp)
    with pytest.raises(BarRejected, match="malformed close"):
        BarFormat().bar({**GOOD, "close": 10**400})  # overflows a float


def test_csv_and_jsonl_sources_yield_malformed_records_instead_of_raising(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text("Timestamp,Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,1.5,10\n1,2\n\n")
    records = list(CsvReplaySource(path))
    # Rows keep the file's own names; the bundle's BarFormat maps them.
    assert records[0]["Close"] == "1.5" and BarFormat().bar(records[0]).close == 1.5
    assert isinstance(records[1], MalformedRecord) and "2 fields" in records[1].reason
    stream = io.StringIO(json.dumps(GOOD) + "\n{not json\n\n[1, 2]\n")
    records = list(JsonLinesSource(stream))
    assert records[0] == GOOD and isinstance(records[1], MalformedRecord)
    with pytest.raises(BarRejected, match="expected an object"):
        parse_bar(records[2])


def test_hostile_lines_are_malformed_records_not_exceptions(tmp_path, monkeypatch):
    good = json.dumps(GOOD).encode()
    lines = [
        b"[" * 30_000 + b"]" * 30_000,  # within the line limit: RecursionError in the decoder
        b"[" + b"1," * 100_000 + b"1]",  # 200 kB: over the line limit, never decoded
        b'{"timestamp": "2020-01-02", "close": \xff\xfe}',  # not UTF-8
        b'{"timestamp": 1' + b"0" * 5000 + b"}",  # an int too long to convert
        b"\xef\xbb\xbf" + good,  # a byte-order mark is not an error
    ]
    stream = io.BytesIO(b"\n".join(x for line in lines for x in (line, good)) + b"\n")
    # The runner reads stdin as bytes: strict text decoding would raise on \xff.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream, encoding="utf-8"))
    records = list(JsonLinesSource())
    assert [r == GOOD for r in records] == [False, True] * 4 + [True, True]
    reasons = [r.reason for r in records[:8:2]]
    assert "nested too deeply" in reasons[0]
    assert "longer than the limit of 65536" in reasons[1]
    assert "undecodable bytes" in reasons[2] and "\\xff" in records[4].raw
    assert "malformed JSON" in reasons[3]
    # CSV: a field over the csv module's limit is one malformed row, and the file goes on.
    path = tmp_path / "bars.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    f"2020-01-01,{'1' * 200_000},2,0.5,1,0\n2020-01-02,1,2,0.5,1.5,0\n")
    records = list(CsvReplaySource(path))
    assert "field larger than field limit" in records[0].reason
    assert parse_bar(records[1]).close == 1.5


def test_store_keeps_undecodable_raw_text(tmp_path):
    store = ReplayStore(tmp_path / "s.sqlite")
    # Text decoded with surrogateescape (stdin in the C locale) or a JSON "\\udcff" escape.
    store.record_rejection("malformed JSON", b"{\xff".decode("utf-8", "surrogateescape"))
    assert store.db.execute("SELECT raw FROM rejections").fetchone()[0] == "{\\udcff"


class _Handler(http.server.BaseHTTPRequestHandler):
    bars: list = []
    received: list = []
    polls = 0
    failures = 0  # POSTs still to answer with 500

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        cls = type(self)
        # Serves a growing list of bars: each poll reveals one more, repeating the old ones.
        body = json.dumps(cls.bars[: cls.polls + 1]).encode()
        cls.polls += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        cls = type(self)
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        if cls.failures > 0:
            cls.failures -= 1
            self.send_response(500)
        else:
            cls.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"bars": [], "received": [], "polls": 0,
                                            "failures": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, handler
    httpd.shutdown()
    httpd.server_close()


def test_http_polling_source_delivers_each_bar_once(server):
    httpd, handler = server
    handler.bars = [{**GOOD, "timestamp": f"2020-01-0{d}T00:00:00Z", "close": d} for d in (1, 2, 3)]
    url = f"http://127.0.0.1:{httpd.server_address[1]}/bars"
    source = HttpPollingSource(url, poll_seconds=0.0, max_polls=5)
    closes = [parse_bar(r).close for r in source]
    assert closes == [1.0, 2.0, 3.0]
    errors = []
    dead = HttpPollingSource(
        "http://127.0.0.1:9/none",
        poll_seconds=0,
        max_polls=2,
        timeout_seconds=0.5,
        on_error=errors.append,
    )
    assert list(dead) == [] and len(errors) == 2


def test_webhook_sink_posts_changes_only(server, monkeypatch):
    httpd, handler = server
    monkeypatch.setenv("JT_HOOK", f"http://127.0.0.1:{httpd.server_address[1]}/hook")
    sink = WebhookSink("JT_HOOK")
    for target in (0.0, 0.0, 1.0, 1.0, -1.0):
        sink.emit({"timestamp": "t", "target_position": target})
    assert [d["target_position"] for d in handler.received] == [0.0, 1.0, -1.0]
    # A multi-asset decision: posted when any symbol's target changes.
    sink = WebhookSink("JT_HOOK")
    for targets in ({"A": 0.5, "B": 0.0}, {"A": 0.5, "B": 0.0}, {"A": 0.5, "B": 0.25}):
        sink.emit({"timestamp": "t", "target_positions": targets})
    assert [d.get("target_positions") for d in handler.received[3:]] == [
        {"A": 0.5, "B": 0.0}, {"A": 0.5, "B": 0.25}]
    monkeypatch.delenv("JT_HOOK")
    with pytest.raises(BundleError, match="JT_HOOK"):
        WebhookSink("JT_HOOK")


def test_webhook_sink_retries_failed_deliveries_in_order(server, monkeypatch):
    httpd, handler = server
    monkeypatch.setenv("JT_HOOK", f"http://127.0.0.1:{httpd.server_address[1]}/hook")
    handler.failures = 3  # the receiver answers 500 three times
    errors: list[str] = []
    sink = WebhookSink("JT_HOOK", first_backoff_seconds=0.01, on_error=errors.append)
    for target in (0.0, 1.0, 1.0, -1.0, 0.5):
        sink.emit({"timestamp": "t", "target_position": target})
    sink.close()
    assert [d["target_position"] for d in handler.received] == [0.0, 1.0, -1.0, 0.5]
    assert len(errors) == 3 and "next try in" in errors[0]


def test_undelivered_alerts_wait_in_the_store_and_go_first_after_a_restart(
    server, monkeypatch, tmp_path
):
    httpd, handler = server
    monkeypatch.setenv("JT_HOOK", f"http://127.0.0.1:{httpd.server_address[1]}/hook")
    store = ReplayStore(tmp_path / "s.sqlite")
    handler.failures = 10**9  # down for the whole first run
    quiet = {"first_backoff_seconds": 0.01, "wait_seconds": 0.05, "close_wait_seconds": 0.05}
    errors: list[str] = []
    sink = WebhookSink("JT_HOOK", store=store, on_error=errors.append, **quiet)
    for target in (1.0, -1.0, 0.0):
        sink.emit({"timestamp": "t", "target_position": target})
    sink.close()
    assert handler.received == [] and "3 alert(s) undelivered at exit, kept" in errors[-1]
    assert len(store.pending_alerts()) == 3
    handler.failures = 0
    restarted = WebhookSink("JT_HOOK", store=store, **quiet)
    restarted.emit({"timestamp": "t", "target_position": 0.0})  # unchanged: no new alert
    restarted.emit({"timestamp": "t", "target_position": 2.0})
    assert [d["target_position"] for d in handler.received] == [1.0, -1.0, 0.0, 2.0]
    assert store.pending_alerts() == []


def test_file_sink_writes_strict_json(tmp_path):
    sink = FileSink(tmp_path / "out.jsonl")
    sink.emit({"timestamp": "t", "target_position": 0.5})
    sink.close()
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {
        "timestamp": "t",
        "target_position": 0.5,
    }
    with pytest.raises(ValueError):
        FileSink(tmp_path / "x.jsonl").emit({"p": math.nan})


def test_store_writes_one_transaction_per_bar_and_purges_by_age(tmp_path):
    store = ReplayStore(tmp_path / "s.sqlite")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    bar = parse_bar(GOOD)
    decision = {"target_position": 1.0, "action": 2, "probabilities": [0.1, 0.2, 0.7]}
    fill = {
        "timestamp_us": bar.timestamp_us,
        "decided_at_us": bar.timestamp_us - 1,
        "price": 1.0,
        "from_position": 0.0,
        "to_position": 1.0,
        "cost": 0.01,
    }
    store.record_bar(bar, decision, [fill])
    with pytest.raises(KeyError):  # a broken fill aborts the whole bar, not half of it
        store.record_bar(parse_bar({**GOOD, "timestamp": "2020-01-03"}), decision, [{}])
    assert store.decision_timestamps() == [bar.timestamp_us]
    assert store.last_bars(5) == [(bar.timestamp_us, 1.0, 2.0, 0.5, 1.5, 0.0)]
    assert store.purge(3600.0) == 0
    assert store.purge(3600.0, now=time.time() + 7200) == 3
    assert store.last_bars(5) == []


def test_parquet_replay_and_its_clear_message_without_pyarrow(tmp_path, monkeypatch):
    import polars as pl

    from jaxtrade.live.sources import replay_source

    frame = pl.DataFrame(
        {
            "timestamp": ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"],
            "open": [1.0, 2.0],
            "high": [2.0, 3.0],
            "low": [0.5, 1.5],
            "close": [1.5, 2.5],
            "volume": [10.0, 20.0],
        }
    )
    frame = frame.with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
    frame.write_parquet(tmp_path / "bars.parquet")
    bars = [parse_bar(r) for r in replay_source(tmp_path / "bars.parquet")]
    assert [b.iso for b in bars] == ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"]
    assert [b.close for b in bars] == [1.5, 2.5]
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(BundleError, match="needs pyarrow"):
        replay_source(tmp_path / "bars.parquet")


def test_live_cli_key_value_form_maps_onto_the_flags():
    from jaxtrade.live.cli import _translate, main

    assert _translate(["bundle=B", "source=replay", "path=x.csv", "start=2020-01-01"]) == [
        "--bundle",
        "B",
        "--bars",
        "x.csv",
        "--start",
        "2020-01-01",
    ]
    assert _translate(["bundle=B", "source=stdin"]) == ["--bundle", "B", "--stdin"]
    assert main(["bundle=B", "colour=red"]) == 2  # one clear line, no traceback
    assert main(["bundle=B", "source=carrier-pigeon"]) == 2
