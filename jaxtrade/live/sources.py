"""Where bars come from: replay of a file, JSON lines on stdin, or a feed you implement.

A source yields raw records, not validated bars: objects keyed by the file's own header or
canonically (`timestamp, open, high, low, close[, volume]`), or arrays of kline fields. The
runner reads every record through the bundle's `formats.BarFormat` (the way training read its
file) and validates it, so a source stays a thin adapter and a bad record from any source is
rejected the same way. A source must never raise for one bad record; it yields what it
received (or a `MalformedRecord`) and moves on. A file whose header cannot be mapped is
refused when the source is made (`formats.HeaderError`), before any bar is read.

To connect a broker or exchange, subclass `BarSource` and implement `records()`:

    class MyFeed(BarSource):
        def records(self):
            for message in my_client.subscribe("BTC-USD", "1h"):  # blocks until a bar closes
                yield {"timestamp": message["t"], "open": message["o"], "high": message["h"],
                       "low": message["l"], "close": message["c"], "volume": message["v"]}

Yield only closed bars (the decision at t uses the close of t), in time order; `close()` is
called once when the runner stops.
"""

from __future__ import annotations

import abc
import csv
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import BarRejected, BundleError
from .formats import BarFormat, HeaderError, sniff_header


@dataclass(frozen=True)
class MalformedRecord:
    """A line that could not even be decoded; the runner logs `reason` and skips it."""

    reason: str
    raw: str = ""


class BarSource(abc.ABC):
    """Base class of every bar source: iterate `records()`; release resources in `close()`."""

    name = "source"

    @abc.abstractmethod
    def records(self) -> Iterator[dict | list | MalformedRecord]:
        """Yield one dict (or kline array) per bar, or a MalformedRecord for input that
        could not be decoded."""

    def close(self) -> None:  # noqa: B027 - optional hook: most sources hold nothing to release
        """Called once when the runner stops (end of stream, error or signal)."""

    def __iter__(self) -> Iterator[dict | list | MalformedRecord]:
        return self.records()


class CsvReplaySource(BarSource):
    """Replays a CSV file read as training read its own (header, separator, columns)."""

    name = "csv"

    def __init__(self, path: str | Path, bar_format: BarFormat | None = None) -> None:
        self.path = Path(path)
        self.format = bar_format or BarFormat()
        if not self.path.is_file():
            raise BundleError(f"bars file not found: {self.path}")
        with self.path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline()
        if not first.strip():
            raise HeaderError(f"{self.path}: the file is empty; expected a header with "
                              f"{self.format.expected}")
        self.separator, self.columns = sniff_header(first, self.format.separator)
        self.headerless = self.columns[0] == "column_0"
        self.format.check_header(self.columns, str(self.path))

    def records(self) -> Iterator[dict | list | MalformedRecord]:
        with self.path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.reader(handle, delimiter=self.separator)
            if not self.headerless:
                next(reader, None)
            width = len(self.columns)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:  # a field over the csv module's limit (128 KiB)
                    yield MalformedRecord(f"line {reader.line_num}: {err}")
                    continue
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != width:
                    yield MalformedRecord(
                        f"line {reader.line_num}: {len(row)} fields, header has {width}",
                        self.separator.join(row),
                    )
                    continue
                cells = [cell.strip() for cell in row]
                yield cells if self.headerless else dict(zip(self.columns, cells))


class ParquetReplaySource(BarSource):
    """Replays a Parquet file; needs pyarrow, which a numpy-only box usually lacks."""

    name = "parquet"

    def __init__(self, path: str | Path, bar_format: BarFormat | None = None) -> None:
        self.path = Path(path)
        self.format = bar_format or BarFormat()
        try:
            import pyarrow.parquet as pq  # (optional: only this source needs it)
        except ImportError:
            raise BundleError(
                "replaying Parquet needs pyarrow (pip install pyarrow), or convert the file to CSV"
            ) from None
        if not self.path.is_file():
            raise BundleError(f"bars file not found: {self.path}")
        self.columns = list(pq.read_schema(self.path).names)
        self.format.check_header(self.columns, str(self.path))

    def records(self) -> Iterator[dict | MalformedRecord]:
        import pyarrow.parquet as pq

        # Timestamps arrive as datetime objects (aware when the column has a zone), which
        # BarFormat reads as training read the column.
        table = pq.read_table(self.path)
        for batch in table.to_batches(max_chunksize=4096):
            yield from batch.to_pylist()


# A bar is a few hundred bytes; a longer line is refused unread (a 10 MB JSON array would
# take seconds and gigabytes to decode).
MAX_LINE_BYTES = 65_536


class JsonLinesSource(BarSource):
    """One JSON object per line (stdin by default): the simplest bridge from any other process.

    Lines are read as bytes and decoded here, so undecodable bytes, lines longer than
    `max_line_bytes`, JSON nested too deeply or numbers too long to convert are each one
    `MalformedRecord`, never an exception.
    """

    name = "jsonl"

    def __init__(
        self, stream: TextIO | BinaryIO | None = None, *, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.max_line_bytes = max_line_bytes

    def records(self) -> Iterator[dict | MalformedRecord]:
        limit = self.max_line_bytes
        while True:
            line = self.stream.readline(limit + 1)
            if not line:
                return
            newline = b"\n" if isinstance(line, bytes) else "\n"
            if len(line) > limit and not line.endswith(newline):
                size = len(line)
                while line and not line.endswith(newline):  # skip the rest, holding no more
                    line = self.stream.readline(limit)
                    size += len(line)
                yield MalformedRecord(f"line of {size} bytes, longer than the limit "
                                      f"of {limit}")
                continue
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield MalformedRecord(f"undecodable bytes (not UTF-8 at byte {err.start})",
                                          line[:200].decode("utf-8", "backslashreplace"))
                    continue
            text = line.strip().lstrip("\ufeff")
            if not text:
                continue
            try:
                yield json.loads(text)
            except RecursionError:
                yield MalformedRecord("malformed JSON (nested too deeply)", text[:200])
            except ValueError as err:  # JSONDecodeError, or an integer of 4,300+ digits
                yield MalformedRecord(f"malformed JSON ({getattr(err, 'msg', err)})", text[:200])


class HttpPollingSource(BarSource):
    """Example feed: polls a URL that returns the latest closed bar (or a list of recent bars).

    The endpoint answers JSON: one bar object, or a list of them. Bars already delivered are
    skipped by timestamp, so polling faster than bars close costs nothing but requests. Network
    errors are logged through `on_error` and retried after `poll_seconds`; `max_polls` bounds the
    loop (None: poll forever).
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        poll_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
        max_polls: int | None = None,
        on_error=None,
        bar_format: BarFormat | None = None,
        max_response_bytes: int = 1 << 20,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BundleError(f"HttpPollingSource needs an http(s) URL, got {url!r}")
        self.url = url
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.max_polls = max_polls
        self.max_response_bytes = max_response_bytes
        self.on_error = on_error or (lambda message: print(message, file=sys.stderr))
        self._last_seen: int | None = None
        self.format = bar_format or BarFormat()

    def _fetch(self) -> list:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            body = response.read(self.max_response_bytes + 1)
        if len(body) > self.max_response_bytes:
            raise ValueError(f"response longer than {self.max_response_bytes} bytes")
        try:
            payload = json.loads(body.decode("utf-8"))
        except RecursionError:
            raise ValueError("response JSON nested too deeply") from None
        return payload if isinstance(payload, list) else [payload]

    def records(self) -> Iterator[dict | MalformedRecord]:
        polls = 0
        while self.max_polls is None or polls < self.max_polls:
            polls += 1
            try:
                batch = self._fetch()
            except (urllib.error.URLError, OSError, ValueError) as err:
                self.on_error(f"http source: poll {polls} failed: {err}")
                batch = []
            for record in batch:
                try:
                    stamp = self.format.bar(record).timestamp_us
                except BarRejected:
                    stamp = None  # yielded as is: the runner rejects it with its reason
                if stamp is not None and self._last_seen is not None and stamp <= self._last_seen:
                    continue  # the endpoint still shows bars we already delivered
                if stamp is not None:
                    self._last_seen = stamp
                yield record
            if self.max_polls is None or polls < self.max_polls:
                time.sleep(self.poll_seconds)


def replay_source(path: str | Path, bar_format: BarFormat | None = None) -> BarSource:
    """CSV or Parquet replay chosen by file extension."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return ParquetReplaySource(path, bar_format)
    return CsvReplaySource(path, bar_format)
