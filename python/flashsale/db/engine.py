"""Engines and session factories for SQLite (embedded default) and PostgreSQL.

The database is the source of truth (docs/decisions/0001-database-is-the-source-of-truth.md).
On SQLite, several worker processes share one file: WAL lets readers run beside the
single writer, the busy timeout makes writers queue instead of failing, and write
transactions begin with ``BEGIN IMMEDIATE`` so that two writers never both read and
then deadlock on the upgrade to a write lock. Reads use a second engine whose
transactions begin deferred, so they never wait for the write lock.

A server process writes only through its group-commit writer (:func:`make_writer`:
a synchronous engine, one connection per writer thread) and builds its
:class:`Database` without the async write engine; ``flashsale seed`` and the CLI
keep one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from flashsale.db.writer import GroupCommitWriter
from flashsale.metrics import DB_TRANSACTIONS
from flashsale.settings import Settings


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


#: Driver per backend: (async driver for the service, sync driver for migrations/audit).
_DRIVERS = {
    "sqlite": ("sqlite+aiosqlite", "sqlite"),
    "postgresql": ("postgresql+asyncpg", "postgresql+psycopg"),
}


def _with_driver(url: str, use_async: bool) -> str:
    u = make_url(url)
    backend = u.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")
    driver = _DRIVERS[backend][0 if use_async else 1]
    return u.set(drivername=driver).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """``url`` with the async driver: ``sqlite+aiosqlite`` or ``postgresql+asyncpg``.

    Raises:
        ValueError: neither SQLite nor PostgreSQL.
    """
    return _with_driver(url, use_async=True)


def sync_url(url: str) -> str:
    """``url`` with the sync driver (migrations, audit): ``sqlite`` or ``postgresql+psycopg``.

    Raises:
        ValueError: neither SQLite nor PostgreSQL.
    """
    return _with_driver(url, use_async=False)


def writer_lock_path(url: str) -> str | None:
    """The file the group-commit writers of one SQLite database take turns on
    (``<database>-writer.lock``, beside it); None for PostgreSQL or an in-memory
    database."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return f"{database}-writer.lock"


def _configure_sqlite(engine: Engine, *, immediate: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (SQLAlchemy's pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_sync_engine(url: str, *, immediate: bool = True, busy_timeout_ms: int = 30_000) -> Engine:
    """A sync engine for migrations, the audit and analysis tools.

    ``immediate=False`` for read-only work on SQLite (transactions begin deferred).
    """
    engine = create_engine(sync_url(url))
    if is_sqlite(url):
        _configure_sqlite(engine, immediate=immediate, busy_timeout_ms=busy_timeout_ms)
    return engine


def _count_transactions(engine: Engine) -> None:
    """Count every transaction's end in ``flashsale_db_transactions_total``."""
    commits = DB_TRANSACTIONS.labels(outcome="commit")
    rollbacks = DB_TRANSACTIONS.labels(outcome="rollback")

    @event.listens_for(engine, "commit")
    def _on_commit(_conn: Any) -> None:
        commits.inc()

    @event.listens_for(engine, "rollback")
    def _on_rollback(_conn: Any) -> None:
        rollbacks.inc()


@dataclass
class Database:
    """The async engines of one process: ``read`` for read-only transactions and, when
    built with ``writes=True``, ``write`` for transactions that change data
    (``BEGIN IMMEDIATE`` on SQLite).

    The server builds it without the write engine: every write of a server process
    goes through its :class:`~flashsale.db.writer.GroupCommitWriter` (one write
    connection per process on SQLite, see :func:`make_writer`). ``flashsale seed``, the
    CLI and the tests' helpers write through ``write_session``.
    """

    read_engine: AsyncEngine
    read_session: async_sessionmaker[AsyncSession]
    write_engine: AsyncEngine | None = None
    _write_session: async_sessionmaker[AsyncSession] | None = None

    @property
    def write_session(self) -> async_sessionmaker[AsyncSession]:
        """The factory of write sessions.

        Raises:
            RuntimeError: built with ``writes=False`` (a server process, which writes
                only through its group-commit writer).
        """
        if self._write_session is None:
            raise RuntimeError(
                "this Database has no write engine: the server writes through its "
                "GroupCommitWriter (state.writer)"
            )
        return self._write_session

    @classmethod
    def from_settings(cls, settings: Settings, *, writes: bool = True) -> Database:
        """The engines for ``settings.database_url``; ``writes=False`` leaves out the
        write engine (on SQLite it is a connection of its own, which the server, writing
        through its group-commit writer, does not open)."""
        url = async_url(settings.database_url)
        kwargs: dict[str, Any] = {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_pool_size,
            "pool_timeout": 120,
        }
        write: AsyncEngine | None = None
        if is_sqlite(url):
            read = create_async_engine(url, **kwargs)
            _configure_sqlite(
                read.sync_engine, immediate=False, busy_timeout_ms=settings.db_busy_timeout_ms
            )
            if writes:
                # SQLite has one writer at a time. One write connection per process
                # queues this process's writers in the pool (awaiting, FIFO) instead
                # of in SQLite's busy handler, which sleeps and is unfair.
                write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
                _configure_sqlite(
                    write.sync_engine, immediate=True, busy_timeout_ms=settings.db_busy_timeout_ms
                )
        else:
            read = create_async_engine(url, **kwargs)
            if writes:
                write = read
        db = cls(
            read_engine=read,
            read_session=async_sessionmaker(read, expire_on_commit=False),
            write_engine=write,
            _write_session=(
                async_sessionmaker(write, expire_on_commit=False) if write is not None else None
            ),
        )
        for engine in db.engines:
            _count_transactions(engine.sync_engine)
        return db

    @property
    def engines(self) -> list[AsyncEngine]:
        """The distinct engines: the read engine, and the write engine if built and
        separate (SQLite)."""
        write = self.write_engine
        return [self.read_engine] + ([write] if write not in (None, self.read_engine) else [])

    async def dispose(self) -> None:
        """Close every pooled connection."""
        for engine in self.engines:
            await engine.dispose()


def make_writer(settings: Settings) -> GroupCommitWriter:
    """The group-commit writer of a process for ``settings`` (not started): one thread
    and connection on SQLite, taking turns with the other processes' writers on the
    database's lock file; ``writer_threads`` on PostgreSQL."""
    url = settings.database_url
    return GroupCommitWriter(
        make_sync_engine(url, busy_timeout_ms=settings.db_busy_timeout_ms),
        max_batch=settings.writer_max_batch,
        window_s=settings.writer_window_ms / 1000,
        lock_path=writer_lock_path(url),
        threads=1 if is_sqlite(url) else settings.writer_threads,
    )
