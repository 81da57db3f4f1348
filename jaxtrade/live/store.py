"""SQLite replay store: every bar, decision and fill, so continuous learning can retrain on it.

WAL journal, one transaction per bar: a bar's rows are all in the store or none are. The
runner acknowledges a bar (prints its line) only after `record_bar` committed, so a process
killed at any moment loses no acknowledged bar. `synchronous=NORMAL` in WAL mode survives a
killed process; pass `durable=True` (`synchronous=FULL`) to also survive power loss, at the
price of an fsync per bar.

A decision's printed line is stored with it and marked emitted once the sinks took it, so a
decision stored but not yet printed when the process died is printed after the restart (at
least once: a kill between printing and marking prints it twice). Rejections are stored with
the timestamp of the bar before them, so that a restart replaying the same input does not
count them again. Webhook alerts wait in `alerts` until delivered. `events` records what
happened to the runner itself (a promoted bundle taking over or refused, drift and
degradation alerts), each with the timestamp of the bar before it.

A multi-asset runner (multi.py) writes one transaction per timestamp instead: each symbol's
bar there into `symbol_bars` (a symbol without a bar at that timestamp has no row), the
decision into `decisions` (`target_position` holds the net target, the sum over symbols)
with one row per symbol in `targets`, and fills with their `symbol`. The `bars` table stays
the single-symbol runner's; one store serves one kind of runner.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bars (
    timestamp_us INTEGER PRIMARY KEY,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    timestamp_us INTEGER PRIMARY KEY,
    target_position REAL NOT NULL,
    action TEXT NOT NULL,
    probabilities TEXT,
    confidence REAL,
    observation BLOB,
    latency_us REAL,
    equity REAL,
    recorded_at REAL NOT NULL,
    line TEXT,
    emitted INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp_us INTEGER NOT NULL,
    decided_at_us INTEGER NOT NULL,
    price REAL NOT NULL,
    from_position REAL NOT NULL,
    to_position REAL NOT NULL,
    cost REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL,
    raw TEXT,
    recorded_at REAL NOT NULL,
    after_us INTEGER
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    delivered_at REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    after_us INTEGER,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS symbol_bars (
    timestamp_us INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (timestamp_us, symbol)
);
CREATE TABLE IF NOT EXISTS targets (
    timestamp_us INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    target_position REAL NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (timestamp_us, symbol)
);
CREATE INDEX IF NOT EXISTS fills_time ON fills (timestamp_us);
"""
# Columns added since the first stores were written: (table, column, declaration).
_ADDED = (
    ("decisions", "line", "TEXT"),
    ("decisions", "emitted", "INTEGER NOT NULL DEFAULT 1"),
    ("rejections", "after_us", "INTEGER"),
    ("fills", "symbol", "TEXT"),
)
# Tables whose rows `purge` deletes by age.
_AGED = ("bars", "symbol_bars", "decisions", "targets", "fills", "rejections")
RAW_CHARS = 1000


def stored_text(text: str) -> str:
    """What the store keeps of raw input: cut, and lone surrogates (undecodable bytes read
    with surrogateescape, JSON escapes like \\ud800) written as escapes SQLite can encode."""
    return text[:RAW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


def take_stored(stored: Counter | None, after_us: int | None, raw: str) -> bool:
    """True when a rejection (after the bar stamped `after_us`, of `raw` text) was stored
    before a restart and not matched yet (`stored` from `ReplayStore.rejection_counts`); it
    is then used up, so the same input replayed is not counted again. Shared by the single-
    and the multi-asset runner."""
    key = (after_us, stored_text(raw))
    if stored is None or stored[key] <= 0:
        return False
    stored[key] -= 1
    return True


def emit_unemitted(store: ReplayStore | None, sink) -> int:
    """Hands `sink` the decision lines stored but not emitted before a restart, in order,
    marking each emitted; returns how many. Shared by the single- and multi-asset runner."""
    if store is None or sink is None:
        return 0
    rows = store.unemitted_lines()
    for timestamp_us, line in rows:
        sink.emit(json.loads(line))
        store.mark_emitted(timestamp_us)
    return len(rows)


class ReplayStore:
    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode; transactions are opened explicitly, one per bar.
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.executescript(_SCHEMA)
        for table, column, declaration in _ADDED:
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def record_bar(
        self,
        bar,
        decision: dict | None = None,
        fills: list[dict] | tuple = (),
        observation: bytes | None = None,
        line: str | None = None,
    ) -> None:
        """Writes the bar, its decision (None during warm-up) and fills in one transaction;
        `line` is the decision as the sinks will get it (None: it goes to no sink)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bar.timestamp_us, bar.open, bar.high, bar.low, bar.close, bar.volume, now),
            )
            self._insert_fills(fills, now)
            if decision is not None:
                self._insert_decision(bar.timestamp_us, float(decision["target_position"]),
                                      decision, observation, line, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record_timestamp(
        self,
        timestamp_us: int,
        bars: dict[str, object],
        decision: dict | None = None,
        fills: list[dict] | tuple = (),
        line: str | None = None,
    ) -> None:
        """A multi-asset timestamp in one transaction: the bars that came ({symbol: bar}),
        the decision (None during warm-up) with its `target_positions` {symbol: weight},
        and the fills (each with its `symbol`); `line` as in `record_bar`."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO symbol_bars VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(timestamp_us, symbol, b.open, b.high, b.low, b.close, b.volume, now)
                 for symbol, b in bars.items()],
            )
            self._insert_fills(fills, now)
            if decision is not None:
                targets = decision["target_positions"]
                self._insert_decision(timestamp_us, float(sum(targets.values())), decision,
                                      None, line, now)
                db.executemany(
                    "INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?)",
                    [(timestamp_us, symbol, float(w), now) for symbol, w in targets.items()],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_fills(self, fills, now: float) -> None:
        for fill in fills:
            self.db.execute(
                "INSERT INTO fills (timestamp_us, decided_at_us, price, from_position,"
                " to_position, cost, recorded_at, symbol) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fill["timestamp_us"],
                    fill["decided_at_us"],
                    fill["price"],
                    fill["from_position"],
                    fill["to_position"],
                    fill["cost"],
                    now,
                    fill.get("symbol"),
                ),
            )

    def _insert_decision(self, timestamp_us: int, target: float, decision: dict,
                         observation: bytes | None, line: str | None, now: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO decisions (timestamp_us, target_position, action,"
            " probabilities, confidence, observation, latency_us, equity, recorded_at, line,"
            " emitted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                timestamp_us,
                target,
                json.dumps(decision.get("action")),
                json.dumps(decision.get("probabilities")),
                decision.get("confidence"),
                observation,
                decision.get("latency_us"),
                decision.get("equity"),
                now,
                line,
                int(line is None),
            ),
        )

    def record_rejection(self, reason: str, raw: str = "", after_us: int | None = None) -> None:
        """One rejected record; `after_us`: the timestamp of the last bar before it."""
        self.db.execute(
            "INSERT INTO rejections (reason, raw, recorded_at, after_us) VALUES (?, ?, ?, ?)",
            (stored_text(reason), stored_text(raw), time.time(), after_us),
        )

    def record_event(self, kind: str, payload: dict, after_us: int | None = None) -> None:
        """One runner event (JSON payload) after the bar stamped `after_us`."""
        self.db.execute(
            "INSERT INTO events (kind, payload, after_us, recorded_at) VALUES (?, ?, ?, ?)",
            (kind, json.dumps(payload, default=str), after_us, time.time()),
        )

    def events(self, kind: str | None = None) -> list[tuple[str, dict, int | None]]:
        """(kind, payload, after_us) of the stored events, oldest first."""
        rows = self.db.execute(
            "SELECT kind, payload, after_us FROM events ORDER BY id").fetchall()
        return [(k, json.loads(p), a) for k, p, a in rows if kind is None or k == kind]

    def rejections(self) -> list[tuple[int | None, str]]:
        """(after_us, raw) of every stored rejection."""
        return self.db.execute("SELECT after_us, raw FROM rejections").fetchall()

    def rejection_counts(self) -> Counter:
        """How often each (after_us, raw) rejection is stored (for `take_stored`)."""
        return Counter((after, stored_text(raw or "")) for after, raw in self.rejections())

    def mark_emitted(self, timestamp_us: int) -> None:
        self.db.execute("UPDATE decisions SET emitted = 1 WHERE timestamp_us = ?", (timestamp_us,))

    def unemitted_lines(self) -> list[tuple[int, str]]:
        """(timestamp_us, line) of decisions stored but not yet handed to the sinks, in order."""
        return self.db.execute(
            "SELECT timestamp_us, line FROM decisions WHERE emitted = 0 AND line IS NOT NULL"
            " ORDER BY timestamp_us"
        ).fetchall()

    # --- the webhook outbox -------------------------------------------------------------------
    def add_alert(self, payload: str) -> int:
        cursor = self.db.execute(
            "INSERT INTO alerts (payload, recorded_at) VALUES (?, ?)", (payload, time.time())
        )
        return int(cursor.lastrowid)

    def pending_alerts(self) -> list[tuple[int, str]]:
        """(id, payload) of alerts not yet delivered, oldest first."""
        return self.db.execute(
            "SELECT id, payload FROM alerts WHERE delivered_at IS NULL ORDER BY id"
        ).fetchall()

    def alert_delivered(self, alert_id: int) -> None:
        self.db.execute(
            "UPDATE alerts SET delivered_at = ? WHERE id = ?", (time.time(), alert_id)
        )

    def last_alert(self) -> str | None:
        row = self.db.execute("SELECT payload FROM alerts ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else row[0]

    def purge(self, max_age_seconds: float, *, now: float | None = None) -> int:
        """Deletes rows recorded more than `max_age_seconds` ago; returns how many went."""
        cutoff = (time.time() if now is None else now) - max_age_seconds
        removed = 0
        self.db.execute("BEGIN IMMEDIATE")
        for table in _AGED:
            removed += self.db.execute(
                f"DELETE FROM {table} WHERE recorded_at < ?", (cutoff,)
            ).rowcount
        # Undelivered alerts stay, however old: they are still owed.
        removed += self.db.execute(
            "DELETE FROM alerts WHERE recorded_at < ? AND delivered_at IS NOT NULL", (cutoff,)
        ).rowcount
        self.db.execute("COMMIT")
        return removed

    def last_bars(self, count: int) -> list[tuple]:
        """The most recent `count` bars in time order (for warm start after a restart)."""
        rows = self.db.execute(
            "SELECT timestamp_us, open, high, low, close, volume FROM bars"
            " ORDER BY timestamp_us DESC LIMIT ?",
            (count,),
        ).fetchall()
        return rows[::-1]

    def symbol_bars(self) -> list[tuple[int, dict[str, tuple]]]:
        """Every stored multi-asset timestamp in time order, with its bars
        {symbol: (open, high, low, close, volume)} (for the rebuild after a restart)."""
        out: list[tuple[int, dict[str, tuple]]] = []
        for ts, symbol, *ohlcv in self.db.execute(
            "SELECT timestamp_us, symbol, open, high, low, close, volume FROM symbol_bars"
            " ORDER BY timestamp_us, symbol"
        ):
            if not out or out[-1][0] != ts:
                out.append((int(ts), {}))
            out[-1][1][symbol] = tuple(ohlcv)
        return out

    def has_rows(self, table: str) -> bool:
        return self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None

    def decision_timestamps(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT timestamp_us FROM decisions ORDER BY 1")]

    def close(self) -> None:
        self.db.close()
