"""Outbox fixtures: a fresh migrated database per test, its engines and a started
group-commit writer (the relay's writes), the stand-in data platform in-process, and
relay settings (helpers: :mod:`.support`).

One database is migrated per session and copied into each test's ``tmp_path``
(as in ``tests/api``). Rows are inserted directly (``order_id`` NULL), so the
relay is tested without the order service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from flashsale.data_platform import create_app
from flashsale.db.engine import Database, make_writer
from flashsale.db.writer import GroupCommitWriter
from flashsale.settings import Settings

from .support import FAST, PLATFORM_URL


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: test settings on the test's database, fast retries."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "environment": "test",
            "data_platform_url": PLATFORM_URL,
            **FAST,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def db(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    database = Database.from_settings(make_settings())
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def writer(make_settings: Callable[..., Settings]) -> AsyncIterator[GroupCommitWriter]:
    """The group-commit writer of the relay's process (claims and outcomes go through it),
    started on the test's loop and stopped after the test."""
    started = make_writer(make_settings())
    started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def platform(tmp_path: Path) -> FastAPI:
    """The stand-in data platform on ``tmp_path/platform.db`` (seeded failure draws)."""
    return create_app(tmp_path / "platform.db", seed=1234)


@pytest.fixture
async def platform_client(platform: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client into the stand-in (the relay's and the test's)."""
    transport = httpx.ASGITransport(app=platform)
    async with httpx.AsyncClient(transport=transport, base_url="http://platform.test") as client:
        yield client
