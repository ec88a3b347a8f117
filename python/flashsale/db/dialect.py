"""Where SQLite and PostgreSQL differ, in one place.

- Upserts: both dialects support ``INSERT ... ON CONFLICT``; SQLAlchemy exposes it
  through each dialect's own ``insert`` construct, chosen here from the session's bind.
- Claiming rows: PostgreSQL's ``FOR UPDATE SKIP LOCKED`` (see
  :func:`flashsale.outbox.relay.claim_statement`); SQLite's ``BEGIN IMMEDIATE``
  serialises claimers instead.
- Aborted transactions: PostgreSQL may abort a transaction to break a deadlock
  (SQLSTATE ``40P01``) or, above READ COMMITTED, a serialization conflict
  (``40001``). Nothing of it was applied, so the whole transaction may simply run
  again: :func:`retryable_sqlstate` recognises those errors and
  :class:`flashsale.api.retry.TransactionRetryMiddleware` re-runs the request. The
  service locks rows in one order (order lines sorted by variant id, then the coupon,
  then the wallet) so deadlocks stay rare; the retry is the safety net. SQLite has
  one writer at a time and never deadlocks (its ``database is locked`` past the busy
  timeout is answered 503 ``SERVICE_BUSY`` instead).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(bind: AsyncSession | Connection) -> str:
    """``"sqlite"`` or ``"postgresql"``: the dialect of a session's bind, or of a
    (writer operation's) connection."""
    if isinstance(bind, Connection):
        return bind.dialect.name
    return bind.get_bind().dialect.name


def upsert(
    bind: AsyncSession | Connection, table: Table, keys: list[str], update_columns: list[str]
) -> Any:
    """``INSERT INTO table ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col``, for
    the dialect of ``bind`` (a session, or a writer operation's connection).

    Raises:
        NotImplementedError: a database other than SQLite or PostgreSQL.
    """
    name = dialect_name(bind)
    if name == "sqlite":
        stmt: Any = sqlite.insert(table)
    elif name == "postgresql":
        stmt = postgresql.insert(table)
    else:
        raise NotImplementedError(f"upsert on {name}")
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={c: stmt.excluded[c] for c in update_columns}
    )


#: SQLSTATEs after which the whole transaction may run again: deadlock detected,
#: serialization failure (PostgreSQL error codes, class 40 "Transaction Rollback").
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def retryable_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE if ``exc`` (or an exception it was raised from) is a database
    error after which the transaction may run again, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError):
            code = getattr(seen.orig, "sqlstate", None) or getattr(seen.orig, "pgcode", None)
            if code in RETRYABLE_SQLSTATES:
                return str(code)
        seen = seen.__cause__ or seen.__context__
    return None
