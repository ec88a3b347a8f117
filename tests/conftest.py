"""Fixtures shared by the test folders: the async backend and a migrated SQLite file per test.

One database is migrated per session and copied into each test's ``tmp_path``
(a copy takes a millisecond, a migration a second).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flashsale.db.migrate import upgrade


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "flashsale.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(template_db: Path, tmp_path: Path) -> str:
    """A fresh copy of the migrated database: ``sqlite:///<tmp_path>/flashsale.db``."""
    path = tmp_path / "flashsale.db"
    shutil.copyfile(template_db, path)
    return f"sqlite:///{path}"
