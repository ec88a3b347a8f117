"""``Idempotency-Key`` on the POSTs that create or move money (docs/api.md).

Semantics are Stripe's, stored in the ``idempotency_keys`` table so they hold
across processes and instances:

- same user, same key, same request (method, path and body) → the first
  response's status and body again, with ``Idempotent-Replayed: true``;
- same key, different request → 422 ``IDEMPOTENCY_KEY_REUSED``;
- same key while the first request is still running → 409 ``IDEMPOTENCY_KEY_IN_USE``;
- keys are kept ``idempotency_ttl_s`` (≥ 24 h), then purged by the maintenance loop.

How a request goes (:func:`submit_write`): the group-commit writer inserts the key
as IN_PROGRESS (the unique ``(user_id, key)`` constraint decides who is first, on
any database). A success is stored in the transaction of its effect
(:meth:`IdempotencyGuard.store` in the writer operation), so no crash can leave an
effect without its stored response. A business refusal (404/409) changed nothing,
so it is stored afterwards, through the writer. Anything else (validation errors,
401, 5xx) deletes the key: nothing was done, and the client may retry with the same
key. An IN_PROGRESS key older than ``idempotency_lock_s`` belongs to a request that
died before committing and may be taken over.

Every one of these writes is an operation of the process's writer, like the effect
itself: on SQLite the process keeps its single write connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import Header, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.api.deps import State
from flashsale.api.responses import error_body
from flashsale.api.state import AppState
from flashsale.db.models import idempotency_keys
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.db.writer import Locks, Tx
from flashsale.errors import FlashsaleError, IdempotencyKeyInUse, IdempotencyKeyReused

M = TypeVar("M", bound=BaseModel)

#: Refusals that changed nothing and are final for this request: replayed like successes.
_STORED_ERROR_STATUSES = frozenset({404, 409})

_INSERT_KEY = insert(idempotency_keys).returning(idempotency_keys.c.id)
_FIND_KEY = select(idempotency_keys).where(
    idempotency_keys.c.user_id == bindparam("p_user"), idempotency_keys.c.key == bindparam("p_key")
)
_STORE_RESPONSE = (
    update(idempotency_keys)
    .where(idempotency_keys.c.id == bindparam("p_id"), idempotency_keys.c.status == "IN_PROGRESS")
    .values(status="DONE", response_status=bindparam("p_status"), response_body=bindparam("p_body"))
)
_TAKE_OVER = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.id == bindparam("p_id"),
        idempotency_keys.c.status == "IN_PROGRESS",
        idempotency_keys.c.locked_at == bindparam("p_locked_at"),
    )
    .values(locked_at=bindparam("p_now"))
    .returning(idempotency_keys.c.id)
)
_FORGET = delete(idempotency_keys).where(
    idempotency_keys.c.id == bindparam("p_id"), idempotency_keys.c.status == "IN_PROGRESS"
)


class IdempotentReplay(Exception):
    """Raised before the endpoint runs: answer with the stored response instead."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def response(self) -> Response:
        """The stored status and body, marked ``Idempotent-Replayed: true``."""
        return Response(
            self.body,
            status_code=self.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )


class IdempotencyGuard:
    """The idempotency key of one request (``key is None``: the request sent none)."""

    def __init__(self, key_id: int | None) -> None:
        self.key_id = key_id
        self.stored = False

    def store(self, conn: Connection, result: BaseModel, status: int) -> None:
        """Store ``result`` as the key's response on ``conn``, in the transaction of the
        effect (a writer operation's)."""
        if self.key_id is not None:
            body = result.model_dump_json()
            conn.execute(_STORE_RESPONSE, {"p_id": self.key_id, "p_status": status, "p_body": body})
            self.stored = True


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) identifying a request: same key with another fingerprint is a reuse."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def _claim(state: State, user_id: int, key: str, print_: str, now: datetime) -> int:
    """Insert the key as IN_PROGRESS or decide what its earlier use means; returns its row id.

    Raises:
        IdempotentReplay: the first request finished; its response is replayed.
        IdempotencyKeyReused: the key was used for a different request (422).
        IdempotencyKeyInUse: the first request is still running (409).
    """
    row = {
        "user_id": user_id,
        "key": key,
        "fingerprint": print_,
        "status": "IN_PROGRESS",
        "created_at": now,
        "locked_at": now,
    }
    try:
        key_id: int = await state.writer.submit(
            lambda tx: tx.conn.execute(_INSERT_KEY, row).scalar_one()
        )
        return key_id
    except IntegrityError:
        pass  # the key exists: look at what it holds
    async with transaction(state.db.read_session) as session:
        existing = (await session.execute(_FIND_KEY, {"p_user": user_id, "p_key": key})).first()
    if existing is None:  # purged in between: the client may simply retry
        raise IdempotencyKeyInUse(idempotency_key=key)
    if existing.fingerprint != print_:
        raise IdempotencyKeyReused(idempotency_key=key)
    if existing.status == "DONE":
        raise IdempotentReplay(existing.response_status, existing.response_body)
    if existing.locked_at > now - timedelta(seconds=state.settings.idempotency_lock_s):
        raise IdempotencyKeyInUse(idempotency_key=key)
    # The first request died before committing anything: take the key over.
    params = {"p_id": existing.id, "p_locked_at": existing.locked_at, "p_now": now}
    taken = await state.writer.submit(lambda tx: tx.conn.execute(_TAKE_OVER, params).first())
    if taken is None:
        raise IdempotencyKeyInUse(idempotency_key=key)
    return int(existing.id)


async def _finish(state: State, key_id: int, error: BaseException | None) -> None:
    """Store a business refusal as the key's response, or forget the key (a writer
    operation: the refusals of a rush share commits with its winners)."""
    if isinstance(error, FlashsaleError) and error.status in _STORED_ERROR_STATUSES:
        body = json.dumps(error_body(error.code, error.message, error.details))
        params: dict[str, object] = {"p_id": key_id, "p_status": error.status, "p_body": body}
        await state.writer.submit(lambda tx: tx.conn.execute(_STORE_RESPONSE, params))
    else:
        await state.writer.submit(lambda tx: tx.conn.execute(_FORGET, {"p_id": key_id}))


@asynccontextmanager
async def idempotent(
    request: Request, state: AppState, user_id: int, key: str | None
) -> AsyncIterator[IdempotencyGuard]:
    """The request's :class:`IdempotencyGuard`, around the writer operation of its
    effect (:func:`submit_write`): the key is claimed on entry; on exit a refusal is
    stored, and a key whose response was not stored is forgotten.

    Raises:
        IdempotentReplay, IdempotencyKeyReused (422), IdempotencyKeyInUse (409).
    """
    if key is None:
        yield IdempotencyGuard(None)
        return
    print_ = fingerprint(request.method, request.url.path, await request.body())
    guard = IdempotencyGuard(await _claim(state, user_id, key, print_, utcnow()))
    assert guard.key_id is not None
    try:
        yield guard
    except BaseException as exc:
        await _finish(state, guard.key_id, exc)
        raise
    if not guard.stored:  # e.g. the body failed validation after the key was claimed
        await _finish(state, guard.key_id, None)


async def submit_write(
    request: Request,
    state: AppState,
    user_id: int,
    key: str | None,
    op: Callable[[Tx], M],
    status: int,
    locks: Locks | None = None,
) -> M:
    """Run the writer operation ``op`` for a request, its ``Idempotency-Key`` honoured:
    a success is stored as the key's response in the same transaction as its effect
    (:meth:`IdempotencyGuard.store`), a refusal after it (:func:`idempotent`).
    ``locks``: the rows ``op`` will lock (:class:`flashsale.db.writer.Locks`).

    Raises:
        what ``op`` raises, and what :func:`idempotent` raises.
    """
    async with idempotent(request, state, user_id, key) as idem:

        def write(tx: Tx) -> M:
            result = op(tx)
            idem.store(tx.conn, result, status)
            return result

        return await state.writer.submit(write, locks)


#: The ``Idempotency-Key`` header (1–255 characters), documented in the OpenAPI schema.
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]


async def has_expired_keys(session: AsyncSession, cutoff: datetime) -> bool:
    """Whether any key was created before ``cutoff`` (UTC)."""
    stmt = select(idempotency_keys.c.id).where(idempotency_keys.c.created_at < cutoff).limit(1)
    return (await session.execute(stmt)).first() is not None


def purge_expired_keys(tx: Tx, *, cutoff: datetime) -> int:
    """Delete keys created before ``cutoff`` (UTC; kept ≥ 24 h); returns how many (a
    writer operation)."""
    result = tx.conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
