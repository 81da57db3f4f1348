"""SQLite replay store: every bar, decision and fill, so continuous learning can retrain on it.

WAL journal, one transaction per bar: a bar's rows are all in the store or none are. The
runner acknowledges a bar (prints its line) only after `record_bar` committed, so a process
killed at any moment loses no acknowledged bar. `synchronous=NORMAL` in WAL mode survives a
killed process; pass `durable=True` (`synchronous=FULL`) to also survive power loss, at the
price of an fsync per bar.
"""

from __future__ import annotations

import json
import sqlite3
import time
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
    recorded_at REAL NOT NULL
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
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_time ON fills (timestamp_us);
"""


class ReplayStore:
    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode; transactions are opened explicitly, one per bar.
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.executescript(_SCHEMA)

    def record_bar(
        self,
        bar,
        decision: dict | None = None,
        fills: list[dict] | tuple = (),
        observation: bytes | None = None,
    ) -> None:
        """Writes the bar, its decision (None during warm-up) and fills in one transaction."""
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bar.timestamp_us, bar.open, bar.high, bar.low, bar.close, bar.volume, now),
            )
            for fill in fills:
                db.execute(
                    "INSERT INTO fills (timestamp_us, decided_at_us, price, from_position,"
                    " to_position, cost, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        fill["timestamp_us"],
                        fill["decided_at_us"],
                        fill["price"],
                        fill["from_position"],
                        fill["to_position"],
                        fill["cost"],
                        now,
                    ),
                )
            if decision is not None:
                db.execute(
                    "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        bar.timestamp_us,
                        float(decision["target_position"]),
                        json.dumps(decision.get("action")),
                        json.dumps(decision.get("probabilities")),
                        decision.get("confidence"),
                        observation,
                        decision.get("latency_us"),
                        decision.get("equity"),
                        now,
                    ),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record_rejection(self, reason: str, raw: str = "") -> None:
        self.db.execute(
            "INSERT INTO rejections (reason, raw, recorded_at) VALUES (?, ?, ?)",
            (reason, raw[:1000], time.time()),
        )

    def purge(self, max_age_seconds: float, *, now: float | None = None) -> int:
        """Deletes rows recorded more than `max_age_seconds` ago; returns how many went."""
        cutoff = (time.time() if now is None else now) - max_age_seconds
        removed = 0
        self.db.execute("BEGIN IMMEDIATE")
        for table in ("bars", "decisions", "fills", "rejections"):
            removed += self.db.execute(
                f"DELETE FROM {table} WHERE recorded_at < ?", (cutoff,)
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

    def decision_timestamps(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT timestamp_us FROM decisions ORDER BY 1")]

    def close(self) -> None:
        self.db.close()
