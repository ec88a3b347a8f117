"""Fixtures shared by the test folders: the async backend and a migrated database per test.

The database backend comes from ``FLASHSALE_TEST_DATABASE``:

- ``sqlite`` (default): one file is migrated per session and copied into each
  test's ``tmp_path`` (a copy takes a millisecond, a migration a second);
- ``postgresql``: one database is migrated per session on the server named by
  ``FLASHSALE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
  and each test gets ``CREATE DATABASE ... TEMPLATE`` of it, dropped afterwards.

Tests that exercise several server instances need PostgreSQL whatever the backend:
they take ``postgres_url``. When the server is unreachable those tests fail; they
never skip (``scripts/test.sh`` starts PostgreSQL first).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from flashsale.db.engine import sync_url
from flashsale.db.migrate import upgrade
from flashsale.db.provision import create_database, drop_database

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def database_backend() -> str:
    """``sqlite`` or ``postgresql`` (``FLASHSALE_TEST_DATABASE``)."""
    backend = os.environ.get("FLASHSALE_TEST_DATABASE", "sqlite").lower()
    if backend not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"FLASHSALE_TEST_DATABASE must be sqlite or postgresql: {backend}")
    return backend


def pytest_report_header() -> str:
    return f"flashsale test database: {database_backend()}"


@pytest.fixture(scope="session")
def database_kind() -> str:
    """The test backend: ``sqlite`` or ``postgresql``."""
    return database_backend()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL server the tests create their databases on; fails when unreachable."""
    url = os.environ.get("FLASHSALE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {url} is unreachable (start it; see README): {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> Iterator[str]:
    """Name of a migrated PostgreSQL database the tests' databases are copied from."""
    name = f"flashsale_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(postgres_server_url, name)
    try:
        upgrade(url)
        yield name
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture
def postgres_url(postgres_server_url: str, postgres_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for this test (whatever the backend)."""
    name = f"flashsale_t_{secrets.token_hex(6)}"
    url = create_database(postgres_server_url, name, template=postgres_template)
    try:
        yield url
    finally:
        drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "flashsale.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh migrated database of the test backend: ``sqlite:///<tmp_path>/flashsale.db``
    or ``postgresql://.../flashsale_t_<hex>``."""
    if database_backend() == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    template: Path = request.getfixturevalue("template_db")
    path = tmp_path / "flashsale.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"
