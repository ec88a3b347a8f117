"""FastAPI dependencies: the read transaction, the caller, pagination.

There is no write session: every write of the server is an operation of the
process's group-commit writer (``state.writer.submit``, or
:func:`flashsale.api.idempotency.submit_write` for the POSTs that honour an
``Idempotency-Key``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from flashsale.api.state import AppState
from flashsale.auth.security import Principal, decode_access_token
from flashsale.db.session import transaction
from flashsale.db.types import MAX_ID
from flashsale.errors import Forbidden, InvalidCursor, Unauthenticated


async def get_state(request: Request) -> AppState:
    # async: a sync dependency would cost a thread-pool hop on every request.
    state: AppState = request.app.state.flashsale
    return state


State = Annotated[AppState, Depends(get_state)]


def app_state(request: Request) -> AppState:
    """This process's :class:`AppState`, for routes that take ``request`` instead of the
    :data:`State` dependency (the hot routes: one dependency less to solve)."""
    state: AppState = request.app.state.flashsale
    return state


async def read_session(state: State) -> AsyncIterator[AsyncSession]:
    """A read-only transaction (never waits for SQLite's write lock), closed before the
    response is sent (``scope="function"``)."""
    async with transaction(state.db.read_session) as session:
        yield session


ReadSession = Annotated[AsyncSession, Depends(read_session, scope="function")]


class BearerPrincipal(OAuth2PasswordBearer):
    """``Authorization: Bearer <JWT>`` → the caller's :class:`Principal`.

    One dependency that reads the header and verifies the token: FastAPI solves it
    with nothing but the request, so the hot routes (coupon issue, orders) pay one
    dependency for authentication. It stays an OAuth2 security scheme, so the
    OpenAPI document and ``/docs`` show which routes need a token.

    Raises:
        Unauthenticated: no token, or an invalid or expired one (401).
    """

    async def __call__(self, request: HTTPConnection) -> Principal:  # type: ignore[override]
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if not token or scheme.lower() != "bearer":
            raise Unauthenticated()
        state: AppState = request.app.state.flashsale
        return decode_access_token(token, state.settings.jwt_secret.get_secret_value())


current_principal = BearerPrincipal(tokenUrl="/api/v1/auth/token")

CurrentUser = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentUser) -> Principal:
    """The caller, who must have the admin role (403 otherwise)."""
    if not principal.is_admin:
        raise Forbidden("Admin role required")
    return principal


AdminUser = Annotated[Principal, Depends(admin_principal)]

#: A path id: positive and within 64 bits (larger numbers are a 422, never a 500).
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100)]


def encode_cursor(last_id: int) -> str:
    """Opaque cursor for keyset pagination after row ``last_id``."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The row id a cursor points after, or ``None`` for the first page.

    Raises:
        InvalidCursor: not a cursor this service made (422).
    """
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(cursor=cursor) from exc
    if not 0 < value <= MAX_ID:
        raise InvalidCursor(cursor=cursor)
    return value


Cursor = Annotated[str | None, Query(max_length=64)]
