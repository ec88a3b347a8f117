"""The stand-in's storage: events keyed by ``event_id`` and its counters, in one SQLite file.

Blocking (plain :mod:`sqlite3`): the app calls it from worker threads. Every call
opens its own connection, so any number of threads and processes (several
stand-in workers, or a restart) share the file; writes begin ``IMMEDIATE`` and
update the event and the counters in one transaction, so the counters always
match the events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    idempotency_key TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_type_id ON events (type, id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value)
VALUES ('received', 0), ('duplicates', 0), ('failed', 0);
"""

#: Seconds a writer waits for another (thread, worker process) before failing.
_BUSY_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class StoredEvent:
    """One stored event.

    Attributes:
        id: storage order (1, 2, ...), the ``after`` cursor of :meth:`EventStore.events`.
        event_id / type: from the event.
        body: the event's JSON text as received (first copy).
        idempotency_key: the ``Idempotency-Key`` header of the first copy, if any.
        received_at: when the first copy was stored, ISO 8601 UTC.
    """

    id: int
    event_id: str
    type: str
    body: str
    idempotency_key: str | None
    received_at: str


@dataclass(frozen=True)
class Stats:
    """Counters since the file was created.

    Attributes:
        received: valid events posted (answered or failed on purpose).
        stored: distinct events stored.
        duplicates: posts of an event already stored.
        failed: posts answered 503 by the failure injection (before or after storing).
        by_type: stored events per ``type``.
    """

    received: int
    stored: int
    duplicates: int
    failed: int
    by_type: dict[str, int]


class EventStore:
    """Events deduplicated by ``event_id`` in the SQLite file ``path`` (created if missing).

    Raises:
        sqlite3.Error: the file cannot be opened or is locked past the busy timeout.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        with closing(
            sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        ) as conn:
            # WAL with NORMAL sync survives a crash of the process (not of the machine),
            # which is all a stand-in needs, without an fsync per event.
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _bump(conn: sqlite3.Connection, **deltas: int) -> None:
        conn.executemany(
            "UPDATE counters SET value = value + ? WHERE name = ?",
            [(delta, name) for name, delta in deltas.items() if delta],
        )

    def record_failure(self) -> None:
        """Count a post that failed before storing (``received`` and ``failed``)."""
        with self._write() as conn:
            self._bump(conn, received=1, failed=1)

    def store(
        self,
        event_id: str,
        event_type: str,
        body: str,
        idempotency_key: str | None,
        *,
        failed: bool = False,
    ) -> bool:
        """Store an event unless its ``event_id`` is already stored.

        ``failed=True`` also counts the post as failed (stored, then the
        acknowledgement is lost). Returns True when the event was new.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO events (event_id, type, body, idempotency_key, received_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, event_type, body, idempotency_key, datetime.now(UTC).isoformat()),
            )
            new = cursor.rowcount == 1
            self._bump(conn, received=1, duplicates=0 if new else 1, failed=int(failed))
        return new

    def events(
        self, *, event_type: str | None = None, after: int = 0, limit: int = 100
    ) -> list[StoredEvent]:
        """Stored events with ``id > after`` in ``id`` order, at most ``limit``, of one type
        if ``event_type`` is given."""
        sql = (
            "SELECT id, event_id, type, body, idempotency_key, received_at FROM events WHERE id > ?"
        )
        params: list[object] = [after]
        if event_type is not None:
            sql += " AND type = ?"
            params.append(event_type)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._connect() as conn:
            return [StoredEvent(*row) for row in conn.execute(sql, params)]

    def stats(self) -> Stats:
        """The counters and the stored events per type (one read transaction)."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            by_type = dict(
                conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
            )
            conn.execute("COMMIT")
        return Stats(
            received=counters["received"],
            stored=sum(by_type.values()),
            duplicates=counters["duplicates"],
            failed=counters["failed"],
            by_type=by_type,
        )
