"""API test fixtures: the app in-process on a fresh SQLite file per test.

One database is migrated per session and copied into each test's ``tmp_path``
(a copy takes a millisecond, a migration a second). ``api`` is a running app
with an ``httpx.AsyncClient`` under ``/api/v1``, an admin and the helpers of
:mod:`.support`. ``start_app`` starts more instances on the same file
(restarts, a second process sharing the database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest

from flashsale.api.app import create_app
from flashsale.api.state import AppState
from flashsale.auth.security import hash_password
from flashsale.auth.service import ensure_admin_op
from flashsale.settings import Settings

from .support import ADMIN_EMAIL, ADMIN_PASSWORD, Api, StartApp, User

#: The admin's password hash (cost 4), made once.
_ADMIN_HASH = hash_password(ADMIN_PASSWORD, 4)


@pytest.fixture
def start_app(db_url: str) -> StartApp:
    """``async with start_app(**settings) as api``: an app instance on the test's database."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Api]:
        settings = Settings(
            database_url=db_url, password_hash_cost=4, environment="test", **overrides
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            state: AppState = app.state.flashsale
            admin_id, _ = await state.writer.submit(
                partial(ensure_admin_op, email=ADMIN_EMAIL, password_hash=_ADMIN_HASH)
            )
            # Unhandled errors are answered (500), as a server would, not raised here.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                api = Api(client, state, db_url, User(admin_id, ADMIN_EMAIL, {}))
                token = await api.token(ADMIN_EMAIL, ADMIN_PASSWORD)
                api.admin = User(admin_id, ADMIN_EMAIL, {"Authorization": f"Bearer {token}"})
                yield api

    return start


@pytest.fixture
async def api(start_app: StartApp) -> AsyncIterator[Api]:
    async with start_app() as running:
        yield running


@pytest.fixture
def client(api: Api) -> httpx.AsyncClient:
    return api.client
