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


def test_gate_rejects_duplicates_and_out_of_order_and_reports_gaps():
    gate = BarGate(bar_interval_us=3600 * 10**6)
    first = parse_bar(GOOD)
    assert gate.admit(first) is None
    with pytest.raises(BarRejected, match="duplicate"):
        gate.admit(first)
    with pytest.raises(BarRejected, match="out-of-order"):
        gate.admit(parse_bar({**GOOD, "timestamp": "2020-01-01T23:00:00Z"}))
    assert gate.admit(parse_bar({**GOOD, "timestamp": "2020-01-02T01:00:00Z"})) is None
    note = gate.admit(parse_bar({**GOOD, "timestamp": "2020-01-02T11:00:00Z"}))
    assert note is not None and "gap of 10.0 bars" in note


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


class _Handler(http.server.BaseHTTPRequestHandler):
    bars: list = []
    received: list = []
    polls = 0

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
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"bars": [], "received": [], "polls": 0})
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
    monkeypatch.delenv("JT_HOOK")
    with pytest.raises(BundleError, match="JT_HOOK"):
        WebhookSink("JT_HOOK")


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
