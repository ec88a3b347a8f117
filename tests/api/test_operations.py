"""``/healthz`` and ``/readyz`` (docs/operations.md)."""

from __future__ import annotations

import pytest

from flashsale.db.engine import Database
from flashsale.settings import Settings

from .support import Api, expect

pytestmark = pytest.mark.anyio


async def test_healthz(api: Api) -> None:
    assert expect(await api.client.get("/healthz"), 200) == {"status": "ok"}


async def test_readyz(api: Api) -> None:
    assert expect(await api.client.get("/readyz"), 200) == {"status": "ok"}


async def test_readyz_without_a_database(api: Api) -> None:
    """Nothing answers where the database should be: 503, on either backend's pass.

    PostgreSQL on a port where nothing listens: the connection is refused at once
    (and no aiosqlite thread outlives the test's event loop, as a failed SQLite
    open's would).
    """
    unreachable = Settings(
        database_url="postgresql://flashsale@127.0.0.1:1/absent", environment="test"
    )
    db = api.state.db
    api.state.db = Database.from_settings(unreachable)
    try:
        r = await api.client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable"}
    finally:
        await api.state.db.dispose()
        api.state.db = db
