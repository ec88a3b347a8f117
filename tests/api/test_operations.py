"""``/healthz`` and ``/readyz`` (DESIGN §5 "Operations")."""

from __future__ import annotations

import pytest

from .support import Api, expect

pytestmark = pytest.mark.anyio


async def test_healthz(api: Api) -> None:
    assert expect(await api.client.get("/healthz"), 200) == {"status": "ok"}


async def test_readyz(api: Api) -> None:
    assert expect(await api.client.get("/readyz"), 200) == {"status": "ok"}


async def test_readyz_without_a_database(api: Api) -> None:
    await api.state.db.dispose()
    api.sql("SELECT 1")  # the file is there; make the engine point nowhere instead
    from flashsale.db.engine import Database
    from flashsale.settings import Settings

    broken = Settings(database_url="sqlite:////nonexistent-dir/x.db", environment="test")
    db = api.state.db
    api.state.db = Database.from_settings(broken)
    try:
        r = await api.client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable"}
    finally:
        await api.state.db.dispose()
        api.state.db = db
