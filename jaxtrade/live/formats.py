"""Reading bars the way training read them: the manifest's `bars` section applied to raw input.

`jaxtrade.data.formats.describe_bars` records how the training file was read: its layout
(generic, yahoo, binance), separator, whether it has a header, the `columns=` mapping the user
gave, the header aliases, the timestamp rule and the Adj Close column of `adjust=True`.
`BarFormat` applies that record here with the standard library only:

  header   explicit columns first, then kline positions (`column_0`...) for a file or JSON
           array without header, then the aliases (names compared in lower case, letters and
           digits only), exactly the order of `formats._resolve_columns`;
  time     "epoch" numbers in s / ms / us / ns judged by magnitude as `formats.epoch_unit`
           does (so a feed that moved from ms to us still reads right), "text" with the
           strptime format that parsed the training file (None: ISO 8601), "datetime" objects
           from Parquet; naive times are local times of the recorded `timezone`. A value that
           the recorded rule cannot read is tried as ISO 8601 or an epoch, which are
           unambiguous, so canonical JSON feeds work with every bundle;
  prices   scaled by Adj Close / Close when training adjusted them.

Bundles written before this section existed read canonical columns with ISO or epoch-second
timestamps, as the runner always did.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .bars import Bar, bar_from_fields, checked_micros, parse_iso, shown, utc_micros
from .errors import BarRejected, BundleError

CANONICAL = ("timestamp", "open", "high", "low", "close", "volume")
REQUIRED = CANONICAL  # what training requires of a header; JSON objects may omit volume
_ADJ = "adj_close"

# Epoch units by magnitude (jaxtrade.data.formats.epoch_unit): microseconds per unit.
_EPOCH_SCALE = ((1e11, 1_000_000.0), (1e14, 1_000.0), (1e17, 1.0), (math.inf, 1e-3))

# chrono (polars) strptime directives that Python spells differently or lacks.
_DIRECTIVES = {"%.3f": ".%f", "%.6f": ".%f", "%.9f": ".%f", "%3f": "%f", "%6f": "%f",
               "%9f": "%f", "%:z": "%z", "%#z": "%z", "%T": "%H:%M:%S", "%R": "%H:%M",
               "%F": "%Y-%m-%d", "%D": "%m/%d/%y"}


class HeaderError(BundleError):
    """A source whose columns cannot be mapped onto bars: the runner stops at once (exit 2)."""


def norm(name: str) -> str:
    """Header names compared as jaxtrade.data.formats compares them."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _python_format(fmt: str) -> str:
    for chrono, python in _DIRECTIVES.items():
        fmt = fmt.replace(chrono, python)
    return fmt


def _epoch_micros(number: float) -> int:
    if not math.isfinite(number):
        raise BarRejected(f"non-finite timestamp {number!r}")
    magnitude = abs(number)
    scale = next(s for limit, s in _EPOCH_SCALE if magnitude < limit)
    return checked_micros(number * scale)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def default_spec() -> dict[str, Any]:
    """What a bundle without a `bars` section reads: canonical columns, ISO or epochs."""
    return {
        "format": "generic",
        "header": True,
        "separator": None,
        "columns": {c: c for c in CANONICAL},
        "explicit_columns": {},
        "aliases": {c: [c] for c in CANONICAL},
        "timestamp": {"kind": "text", "unit": None, "format": None, "timezone": "UTC"},
        "adjust": None,
    }


class BarFormat:
    """The manifest's `bars` section: header resolution and field parsing for every source."""

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        spec = dict(spec or default_spec())
        self.spec = spec
        self.layout = str(spec.get("format") or "generic")
        self.separator = spec.get("separator")
        self.trained_columns = dict(spec.get("columns") or {})
        self.explicit = {str(k): str(v) for k, v in (spec.get("explicit_columns") or {}).items()}
        aliases = spec.get("aliases") or default_spec()["aliases"]
        self.aliases = {str(c): [norm(a) for a in names] for c, names in aliases.items()}
        rule = dict(spec.get("timestamp") or {})
        self.kind = rule.get("kind") or "text"
        self.fmt = rule.get("format")
        self.adjust = spec.get("adjust")
        self.zone: dt.tzinfo | None = None
        zone = rule.get("timezone") or "UTC"
        if zone != "UTC":
            try:
                from zoneinfo import ZoneInfo

                self.zone = ZoneInfo(zone)
            except Exception as err:  # noqa: BLE001 - ZoneInfoNotFoundError, missing tzdata
                raise BundleError(f"the bundle reads times in zone {zone!r}, which this "
                                  f"machine does not know ({err})") from None
        self.zone_name = zone
        self._resolved: dict[tuple[str, ...], tuple[dict[str, int], list[str]]] = {}

    # --- headers ------------------------------------------------------------------------------
    @property
    def expected(self) -> str:
        trained = [self.trained_columns[c] for c in CANONICAL if c in self.trained_columns]
        text = ", ".join(CANONICAL)
        if self.layout == "binance":
            return f"{text} (a kline file without header: open time, open, high, low, close, "\
                   "volume, ...)"
        if trained and trained != list(CANONICAL):
            text += f" (training read {', '.join(map(str, trained))})"
        return text

    def resolve(self, names: Sequence[str]) -> tuple[dict[str, int], list[str]]:
        """(canonical name -> index into `names`, the required columns not found)."""
        key = tuple(str(n) for n in names)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(key)
        return self._resolved[key]

    def _resolve(self, names: tuple[str, ...]) -> tuple[dict[str, int], list[str]]:
        index = {name: i for i, name in enumerate(names)}
        mapping = {canon: index[col] for canon, col in self.explicit.items() if col in index}
        if names and names[0] == "column_0":
            for i, canon in enumerate(CANONICAL[: len(names)]):
                mapping.setdefault(canon, i)
        by_norm: dict[str, int] = {}
        for i, name in enumerate(names):
            by_norm.setdefault(norm(name), i)
        for canon, aliases in self.aliases.items():
            if canon in mapping or canon in self.explicit:
                continue
            for alias in aliases:
                if alias in by_norm and by_norm[alias] not in mapping.values():
                    mapping[canon] = by_norm[alias]
                    break
        missing = [c for c in REQUIRED if c not in mapping]
        if self.adjust:
            if "adjclose" in by_norm:
                mapping[_ADJ] = by_norm["adjclose"]
            else:
                missing.append("Adj Close")
        canonical = {c: index[c] for c in CANONICAL if c in index}
        if missing and all(c in canonical for c in REQUIRED[:5]):
            # Canonical names (what `jaxtrade data convert` writes, what feeds send) always
            # read, as prices already adjusted, whatever the training file's header was.
            return canonical, [c for c in REQUIRED if c not in canonical]
        return mapping, missing

    def check_header(self, names: Sequence[str], where: str) -> dict[str, int]:
        """The mapping of a file's header, or `HeaderError` naming the file and the columns."""
        mapping, missing = self.resolve(names)
        if missing:
            headerless = bool(names) and names[0] == "column_0"
            found = f"{len(names)} unnamed columns" if headerless else list(names)
            needs = " and Adj Close (adjust=True)" if self.adjust else ""
            raise HeaderError(f"{where}: cannot map its columns onto bars: found {found}; "
                              f"expected {self.expected}{needs}")
        return mapping

    # --- records ------------------------------------------------------------------------------
    def bar(self, record: object) -> Bar:
        """A raw record (object keyed like the training file or canonically, or an array of
        kline fields) -> a validated bar; `BarRejected` names the problem."""
        if isinstance(record, Bar):
            return record
        if isinstance(record, Mapping):
            names = [str(k) for k in record.keys()]
            values = list(record.values())
        elif isinstance(record, list | tuple):
            values = list(record)
            names = [f"column_{i}" for i in range(len(values))]
        else:
            raise BarRejected(
                f"malformed record (expected an object, got {type(record).__name__})")
        mapping, missing = self.resolve(names)
        missing = [c for c in missing if c != "volume"]  # a feed may leave volume out
        if missing:
            shown = f"{len(names)} fields" if isinstance(record, list | tuple) else \
                f"keys {names[:12]}"
            raise BarRejected(f"malformed record: missing {', '.join(missing)} ({shown}; "
                              f"expected {self.expected})")
        return self.bar_from_values(values, mapping)

    def bar_from_values(self, values: Sequence[object], mapping: Mapping[str, int]) -> Bar:
        fields = {c: values[i] for c, i in mapping.items()}
        for name in ("timestamp", "open", "high", "low", "close"):
            value = fields.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise BarRejected(f"malformed record: missing {name}")
        fields = {c: v.strip() if isinstance(v, str) else v for c, v in fields.items()}
        bar = bar_from_fields(self.timestamp_us(fields["timestamp"]), fields)
        if _ADJ in mapping:
            bar = self._adjusted(bar, fields[_ADJ])
        return bar

    def _adjusted(self, bar: Bar, adj: object) -> Bar:
        try:
            factor = float(adj) / bar.close  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BarRejected(f"malformed adj close {adj!r}") from None
        if not (math.isfinite(factor) and factor > 0.0):
            raise BarRejected(f"adj close {adj!r} gives the scale factor {factor}")
        return Bar(bar.timestamp_us, bar.open * factor, bar.high * factor, bar.low * factor,
                   bar.close * factor, bar.volume)

    # --- timestamps ---------------------------------------------------------------------------
    def timestamp_us(self, value: object) -> int:
        """Microseconds since the epoch (UTC) of one timestamp cell, by the recorded rule."""
        if isinstance(value, bool) or value is None:
            raise BarRejected(f"malformed timestamp {shown(value, 80)}")
        if isinstance(value, dt.datetime):
            return self._local(value)
        if isinstance(value, dt.date):
            return self._local(dt.datetime(value.year, value.month, value.day))
        if isinstance(value, int | float):
            if not -1e20 < value < 1e20:  # beyond any epoch unit; 10**400 overflows a float
                raise BarRejected("timestamp out of range (years 1 to 9999)")
            if self._compact_date(str(int(value)) if float(value).is_integer() else ""):
                return self._text(str(int(value)))
            return _epoch_micros(float(value))
        if not isinstance(value, str) or not value.strip():
            raise BarRejected(f"malformed timestamp {shown(value, 80)}")
        return self._text(value.strip())

    def _compact_date(self, text: str) -> bool:
        """yyyymmdd read as a date, not an epoch, where training read it so."""
        return (len(text) == 8 and text.isdigit() and 19_000_101 <= int(text) <= 21_001_231
                and self.kind == "text" and str(self.fmt or "").startswith("%Y%m%d"))

    def _text(self, text: str) -> int:
        number = _number(text)
        if number is not None and not self._compact_date(text):
            return _epoch_micros(number)
        if self.fmt:
            moment = self._strptime(text)
            if moment is not None:
                return self._local(moment)
        moment = parse_iso(text)
        if moment is None:
            rule = f" (expected format {self.fmt!r})" if self.fmt else ""
            raise BarRejected(f"malformed timestamp {shown(text, 80)}{rule}")
        return self._local(moment)

    def _strptime(self, text: str) -> dt.datetime | None:
        fmt = str(self.fmt)
        # chrono's %.f is an optional dot and fraction; Python's %f takes up to 6 digits.
        trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text)
        tries = [fmt.replace("%.f", ".%f"), fmt.replace("%.f", "")] if "%.f" in fmt else [fmt]
        for candidate in tries:
            try:
                return dt.datetime.strptime(trimmed, _python_format(candidate))
            except ValueError:
                continue
        return None

    def _local(self, moment: dt.datetime) -> int:
        """UTC microseconds; a naive time is a local time of the recorded zone."""
        if moment.tzinfo is not None or self.zone is None:
            return utc_micros(moment)
        early = moment.replace(tzinfo=self.zone, fold=0)
        late = moment.replace(tzinfo=self.zone, fold=1)
        if early.utcoffset() != late.utcoffset():
            raise BarRejected(f"local time {moment.isoformat()} does not exist or is ambiguous "
                              f"in {self.zone_name}")
        return utc_micros(early)


def sniff_header(first_line: str, separator: str | None) -> tuple[str, list[str]]:
    """(separator, header names) of a CSV's first line; a line of numbers is no header, and
    its columns are named column_0, column_1, ... as jaxtrade.data.formats names them."""
    line = first_line.lstrip("\ufeff").strip()
    if separator is None:
        separator = max((",", ";", "\t", "|"), key=line.count)
    fields = [f.strip() for f in next(csv.reader([line], delimiter=separator), [])]
    if all(_number(f) is not None for f in fields if f):
        return separator, [f"column_{i}" for i in range(len(fields))]
    return separator, fields
