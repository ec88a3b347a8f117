"""Where SQLite and PostgreSQL differ, in one place.

Both dialects support ``INSERT ... ON CONFLICT``; SQLAlchemy exposes it through
each dialect's own ``insert`` construct, chosen here from the session's bind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(session: AsyncSession) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return session.get_bind().dialect.name


def upsert(session: AsyncSession, table: Table, keys: list[str], update_columns: list[str]) -> Any:
    """``INSERT INTO table ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col``.

    Raises:
        NotImplementedError: a database other than SQLite or PostgreSQL.
    """
    name = dialect_name(session)
    if name == "sqlite":
        stmt: Any = sqlite.insert(table)
    elif name == "postgresql":
        stmt = postgresql.insert(table)
    else:
        raise NotImplementedError(f"upsert on {name}")
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={c: stmt.excluded[c] for c in update_columns}
    )
