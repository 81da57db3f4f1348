"""One OHLCV bar, how raw records become bars, and the checks every bar passes before use.

A record is whatever a source delivers (a CSV row dict, a decoded JSON object). `parse_bar`
turns it into a `Bar` or raises `BarRejected` with the reason; `BarGate` then rejects bars that
are well-formed but unusable in sequence (duplicate or out-of-order timestamps) and reports gaps.
Nothing here raises anything else, so a bad bar can never stop the runner.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import BarRejected

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
PRICE_FIELDS = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class Bar:
    timestamp_us: int  # microseconds since the Unix epoch, UTC
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def iso(self) -> str:
        return format_timestamp(self.timestamp_us)


def format_timestamp(timestamp_us: int) -> str:
    moment = _EPOCH + dt.timedelta(microseconds=int(timestamp_us))
    return moment.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if timestamp_us % 1_000_000 else "%Y-%m-%dT%H:%M:%SZ"
    )


_ISO = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$"
)


def parse_iso(text: str) -> dt.datetime | None:
    """ISO 8601 date or date-time (any number of fraction digits, `Z` or an offset) or None.

    Aware when the text has a zone; naive otherwise. Written out rather than left to
    `datetime.fromisoformat`, whose accepted forms differ between Python 3.10 and 3.11.
    """
    match = _ISO.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = None
    if zone in ("Z", "z"):
        tz = dt.timezone.utc
    elif zone:
        digits = zone[1:].replace(":", "").ljust(6, "0")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]),
                              seconds=int(digits[4:6]))
        tz = dt.timezone(-offset if zone[0] == "-" else offset)
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                           int(second or 0), micros, tzinfo=tz)
    except ValueError:
        return None


def utc_micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive ones are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_timestamp(value: object) -> int:
    """ISO 8601 text or a datetime (naive means UTC), or a number of seconds since the epoch
    -> microseconds."""
    if isinstance(value, dt.datetime):
        return utc_micros(value)
    if isinstance(value, bool):
        raise BarRejected(f"malformed timestamp {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise BarRejected(f"non-finite timestamp {value!r}")
        return int(round(value * 1_000_000))
    if not isinstance(value, str) or not value.strip():
        raise BarRejected(f"malformed timestamp {value!r}")
    text = value.strip()
    try:
        return int(round(float(text) * 1_000_000))
    except ValueError:
        pass
    moment = parse_iso(text)
    if moment is None:
        raise BarRejected(f"malformed timestamp {text!r}")
    return utc_micros(moment)


def parse_bar(record: object) -> Bar:
    """Validate one record of canonical fields; raises `BarRejected` naming the first problem.

    Records keyed as a training file was (vendor headers, epochs, day-first dates) are read
    by `formats.BarFormat`, which ends here in `bar_from_fields`.
    """
    if not isinstance(record, dict):
        raise BarRejected(f"malformed record (expected an object, got {type(record).__name__})")
    missing = [k for k in ("timestamp", *PRICE_FIELDS) if record.get(k) in (None, "")]
    if missing:
        raise BarRejected(f"malformed record: missing {', '.join(missing)}")
    return bar_from_fields(parse_timestamp(record["timestamp"]), record)


def bar_from_fields(timestamp_us: int, fields: Mapping[str, object]) -> Bar:
    """A bar from its timestamp and open/high/low/close[/volume] values, checked one by one."""
    values: dict[str, float] = {}
    for name in (*PRICE_FIELDS, "volume"):
        raw = fields.get(name, 0.0)
        if raw in (None, "") and name == "volume":
            raw = 0.0
        if raw in (None, ""):
            raise BarRejected(f"malformed record: missing {name}")
        try:
            number = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BarRejected(f"malformed {name} {raw!r}") from None
        if not math.isfinite(number):
            raise BarRejected(f"non-finite {name} ({number})")
        values[name] = number
    for name in PRICE_FIELDS:
        if values[name] <= 0.0:
            raise BarRejected(f"non-positive {name} ({values[name]})")
    if values["volume"] < 0.0:
        raise BarRejected(f"negative volume ({values['volume']})")
    if values["high"] < values["low"]:
        raise BarRejected(f"high {values['high']} below low {values['low']}")
    return Bar(timestamp_us=timestamp_us, **values)


class BarGate:
    """Orders the stream: refuses duplicate and out-of-order bars, reports gaps.

    A gap (more time since the previous bar than `gap_threshold_us`, by default the longest
    gap seen in training) is reported, not refused: markets close, and refusing the first bar
    after a closure would stall the runner.
    """

    def __init__(
        self, bar_interval_us: int | None = None, gap_threshold_us: int | None = None
    ) -> None:
        self.bar_interval_us = bar_interval_us
        self.gap_threshold_us = gap_threshold_us or (3 * bar_interval_us if bar_interval_us else 0)
        self.last_timestamp_us: int | None = None

    def admit(self, bar: Bar) -> str | None:
        """Raises `BarRejected` for a bar out of sequence; returns a gap note or None."""
        last = self.last_timestamp_us
        if last is not None:
            if bar.timestamp_us == last:
                raise BarRejected(f"duplicate timestamp {bar.iso}")
            if bar.timestamp_us < last:
                raise BarRejected(
                    f"out-of-order timestamp {bar.iso} (last was {format_timestamp(last)})"
                )
        self.last_timestamp_us = bar.timestamp_us
        if last is not None and self.bar_interval_us and self.gap_threshold_us:
            elapsed = bar.timestamp_us - last
            if elapsed > self.gap_threshold_us:
                return f"gap of {elapsed / self.bar_interval_us:.1f} bars before {bar.iso}"
        return None
