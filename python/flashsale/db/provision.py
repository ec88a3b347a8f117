"""Create and drop whole databases on a PostgreSQL server (tests, the demo).

A test or a demo run gets a database of its own, so several can share one server
and nothing they write survives them. ``CREATE DATABASE ... TEMPLATE`` copies an
already migrated database in a fraction of the time a migration takes.

The connection used here goes to the server's maintenance database (the one the
given URL names; ``postgres`` if none), in autocommit mode: PostgreSQL refuses
``CREATE DATABASE`` inside a transaction.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flashsale.db.engine import sync_url

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain PostgreSQL database name: {name!r}")
    return name


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` (same host, user, password, driver)."""
    return (
        make_url(server_url).set(database=_check_name(name)).render_as_string(hide_password=False)
    )


def _admin_execute(server_url: str, statement: str) -> None:
    engine = create_engine(sync_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def create_database(
    server_url: str, name: str | None = None, *, template: str | None = None
) -> str:
    """Create a new, empty (or ``template``-copied) database; returns its URL.

    Args:
        server_url: any ``postgresql://`` URL on the server; its credentials are used.
        name: the new database's name (lower-case identifier); random ``flashsale_<hex>``
            when omitted.
        template: copy this database (it must have no other connections meanwhile).

    Raises:
        ValueError: a name that is not a plain identifier.
        sqlalchemy.exc.OperationalError / ProgrammingError: the server refused (no
            privilege to create databases, the name exists, the template is busy).
    """
    name = _check_name(name or f"flashsale_{secrets.token_hex(6)}")
    statement = f'CREATE DATABASE "{name}"'
    if template is not None:
        statement += f' TEMPLATE "{_check_name(template)}"'
    _admin_execute(server_url, statement)
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing its remaining connections first
    (``WITH (FORCE)``, PostgreSQL ≥ 13)."""
    _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{_check_name(name)}" WITH (FORCE)')


def databases_named(server_url: str, prefix: str) -> set[str]:
    """Names of the server's databases that start with ``prefix`` (e.g. a tool's
    scratch databases, ``flashsale_demo_``), to check that none was left behind."""
    engine = create_engine(sync_url(server_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                {"p": prefix},
            )
            return {str(row[0]) for row in rows}
    finally:
        engine.dispose()
