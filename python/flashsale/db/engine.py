"""Engines and session factories for SQLite (embedded default) and PostgreSQL.

The database is the source of truth (DESIGN §2). On SQLite, several worker
processes share one file: WAL lets readers run beside the single writer, the
busy timeout makes writers queue instead of failing, and write transactions
begin with ``BEGIN IMMEDIATE`` so that two writers never both read and then
deadlock on the upgrade to a write lock. Reads use a second engine whose
transactions begin deferred, so they never wait for the write lock.
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
    """The async engines of one process: ``write`` for transactions that change data
    (``BEGIN IMMEDIATE`` on SQLite), ``read`` for read-only requests."""

    write_engine: AsyncEngine
    read_engine: AsyncEngine
    write_session: async_sessionmaker[AsyncSession]
    read_session: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        url = async_url(settings.database_url)
        kwargs: dict[str, Any] = {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_pool_size,
            "pool_timeout": 120,
        }
        if is_sqlite(url):
            # SQLite has one writer at a time. One write connection per process
            # queues this process's writers in the pool (awaiting, FIFO) instead
            # of in SQLite's busy handler, which sleeps and is unfair.
            write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
            read = create_async_engine(url, **kwargs)
            _configure_sqlite(
                write.sync_engine, immediate=True, busy_timeout_ms=settings.db_busy_timeout_ms
            )
            _configure_sqlite(
                read.sync_engine, immediate=False, busy_timeout_ms=settings.db_busy_timeout_ms
            )
        else:
            write = read = create_async_engine(url, **kwargs)
        for engine in {write, read}:
            _count_transactions(engine.sync_engine)
        return cls(
            write_engine=write,
            read_engine=read,
            write_session=async_sessionmaker(write, expire_on_commit=False),
            read_session=async_sessionmaker(read, expire_on_commit=False),
        )

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
