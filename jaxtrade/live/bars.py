"""One OHLCV bar, how raw records become bars, and the checks every bar passes before use.

A record is whatever a source delivers (a CSV row dict, a decoded JSON object). `parse_bar`
turns it into a `Bar` or raises `BarRejected` with the reason; `BarGate` then rejects bars that
are well-formed but unusable in sequence (duplicate or out-of-order timestamps, stamped too far
ahead of the clock or of the previous bar) and reports gaps. Nothing here raises anything
else, so a bad bar can never stop the runner.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import BarRejected

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
PRICE_FIELDS = ("open", "high", "low", "close")
# Timestamps a datetime can hold (years 1 to 9999); anything else is a rejected bar.
MIN_TIMESTAMP_US = -62_135_596_800_000_000
MAX_TIMESTAMP_US = 253_402_300_799_999_999


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


def checked_micros(micros: float | int) -> int:
    """Microseconds since the epoch as an int, or `BarRejected` outside years 1 to 9999."""
    if isinstance(micros, float) and math.isnan(micros):
        raise BarRejected("non-finite timestamp nan")
    if not MIN_TIMESTAMP_US <= micros <= MAX_TIMESTAMP_US:
        raise BarRejected("timestamp out of range (years 1 to 9999)")
    return int(round(micros))


def shown(value: object, limit: int = 40) -> str:
    """repr of a value cut to `limit` characters (an int of 5,000 digits has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        raise BarRejected(f"malformed timestamp {shown(value, 80)}")
    if isinstance(value, int | float):
        return checked_micros(value * 1_000_000)
    if not isinstance(value, str) or not value.strip():
        raise BarRejected(f"malformed timestamp {shown(value, 80)}")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return checked_micros(seconds * 1_000_000)
    moment = parse_iso(text)
    if moment is None:
        raise BarRejected(f"malformed timestamp {shown(text, 80)}")
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
    timestamp_us = checked_micros(timestamp_us)
    values: dict[str, float] = {}
    for name in (*PRICE_FIELDS, "volume"):
        raw = fields.get(name, 0.0)
        if raw in (None, "") and name == "volume":
            raw = 0.0
        if raw in (None, ""):
            raise BarRejected(f"malformed record: missing {name}")
        try:
            number = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # 10**400 overflows a float
            raise BarRejected(f"malformed {name} {shown(raw)}") from None
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


def _duration(us: int) -> str:
    seconds = us / 1e6
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3_600:
        return f"{seconds / 3_600:.1f} hours"
    return f"{seconds:.0f} s"


class BarGate:
    """Orders the stream: refuses duplicate, out-of-order and future bars, reports gaps.

    A gap (more time since the previous bar than `gap_threshold_us`, by default the longest
    gap seen in training) is reported, not refused: markets close, and refusing the first bar
    after a closure would stall the runner.

    Two rules keep one mis-stamped bar (a 2099 date) from moving the stream's position past
    real data, after which every real bar would be out of order:
      * a bar stamped more than `max_ahead_us` after the clock is rejected;
      * a bar more than `max_jump_us` after the previous bar (or the first bar of a stream)
        is held, not used: the next bar confirms it (it follows the held bar by at most
        `max_jump_us`; both are then admitted, a pause after a closure or a restart costs one
        bar of delay) or drops it (the held bar is rejected and the next one judged alone).
    `finish()` drops a bar still held when the stream ends. None or 0 turns a rule off.
    """

    def __init__(
        self,
        bar_interval_us: int | None = None,
        gap_threshold_us: int | None = None,
        *,
        max_ahead_us: int | None = None,
        max_jump_us: int | None = None,
        clock=time.time,
    ) -> None:
        self.bar_interval_us = bar_interval_us
        self.gap_threshold_us = gap_threshold_us or (3 * bar_interval_us if bar_interval_us else 0)
        self.max_ahead_us = max_ahead_us or None
        self.max_jump_us = max_jump_us or None
        self.clock = clock
        self.last_timestamp_us: int | None = None
        self.held: Bar | None = None

    def admit(self, bar: Bar) -> tuple[list[tuple[Bar, str | None]], list[tuple[Bar, str]]]:
        """(bars to use now, in order, each with a gap note or None; held bars dropped, each
        with the reason). Raises `BarRejected` for `bar` itself when it cannot be used."""
        if self.max_ahead_us is not None:
            ahead = bar.timestamp_us - int(self.clock() * 1e6)
            if ahead > self.max_ahead_us:
                raise BarRejected(
                    f"timestamp {bar.iso} is {_duration(ahead)} ahead of this machine's clock "
                    f"(at most {_duration(self.max_ahead_us)} allowed)"
                )
        last = self.last_timestamp_us
        if last is not None:
            if bar.timestamp_us == last:
                raise BarRejected(f"duplicate timestamp {bar.iso}")
            if bar.timestamp_us < last:
                raise BarRejected(
                    f"out-of-order timestamp {bar.iso} (last was {format_timestamp(last)})"
                )
        dropped: list[tuple[Bar, str]] = []
        held = self.held
        if held is not None:
            if bar.timestamp_us == held.timestamp_us:
                raise BarRejected(f"duplicate timestamp {bar.iso}")
            if 0 < bar.timestamp_us - held.timestamp_us <= self.max_jump_us:
                self.held = None
                return [(held, self._advance(held)), (bar, self._advance(bar))], dropped
            self.held = None
            dropped.append((held, self._unconfirmed(held, f"the next bar is {bar.iso}")))
        if self.max_jump_us is not None and (
            last is None or bar.timestamp_us - last > self.max_jump_us
        ):
            self.held = bar
            return [], dropped
        return [(bar, self._advance(bar))], dropped

    def resume(self, timestamp_us: int) -> None:
        """Continue after a bar already used (the last one in the replay store)."""
        self.last_timestamp_us, self.held = timestamp_us, None

    def finish(self, why: str = "the stream ended") -> list[tuple[Bar, str]]:
        """Drops the bar still held (at the end of a stream: it was never confirmed)."""
        held, self.held = self.held, None
        return [] if held is None else [(held, self._unconfirmed(held, why))]

    def _unconfirmed(self, held: Bar, why: str) -> str:
        last = self.last_timestamp_us
        after = "as the first bar" if last is None else \
            f"{_duration(held.timestamp_us - last)} after {format_timestamp(last)}"
        return (f"timestamp {held.iso} ({after}) not confirmed by a following bar within "
                f"{_duration(self.max_jump_us)}: {why}")

    def _advance(self, bar: Bar) -> str | None:
        last, self.last_timestamp_us = self.last_timestamp_us, bar.timestamp_us
        if last is not None and self.bar_interval_us and self.gap_threshold_us:
            elapsed = bar.timestamp_us - last
            if elapsed > self.gap_threshold_us:
                return f"gap of {elapsed / self.bar_interval_us:.1f} bars before {bar.iso}"
        return None
