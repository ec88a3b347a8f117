"""Re-running a request whose transaction the database aborted (deadlock, serialization).

PostgreSQL breaks a deadlock by aborting one of the transactions (SQLSTATE
``40P01``); nothing of it was applied. :class:`TransactionRetryMiddleware` runs
such a request again, up to ``attempts`` times with a short random backoff, so the
client never sees the abort (issue: "no deadlock or serialization error reaches a
client"). It is pure ASGI and sits inside the observability middleware, so a
retried request is logged and timed once.

Why the whole request and not one function: re-running the endpoint also re-runs
what it decided from what it read (the request's reads, and the writer operation
it submits). The group-commit writer already runs an aborted batch again, whole,
up to its ``attempts``; this middleware is the net behind it. It is safe because
an aborted transaction changed nothing, its after-rollback hooks already gave back
the gate reservations, and :func:`flashsale.api.idempotency.idempotent` forgets a
key whose request failed with a server error, so the retry claims it afresh.

A request is retried only while no byte of the response has been sent; the body
is read once and replayed to every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsale.db.dialect import retryable_sqlstate
from flashsale.metrics import DB_RETRIES

__all__ = ["TransactionRetryMiddleware"]

log = logging.getLogger(__name__)

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class TransactionRetryMiddleware:
    """ASGI middleware: re-run a write request the database aborted as retryable.

    Args:
        app: the wrapped ASGI app.
        attempts: runs at most (the first one included); the last failure is raised.
        backoff_s: before attempt ``n`` (2, 3, ...) sleep uniformly in
            ``[0, backoff_s × 2**(n-2)]`` (full jitter), so the transactions that
            deadlocked do not meet again in step.
    """

    def __init__(self, app: ASGIApp, attempts: int = 5, backoff_s: float = 0.01) -> None:
        self.app = app
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        for attempt in range(1, self.attempts + 1):
            started = False

            async def tracked_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            try:
                await self.app(scope, _replay(body, receive), tracked_send)
                return
            except Exception as exc:
                sqlstate = retryable_sqlstate(exc)
                if sqlstate is None or started or attempt == self.attempts:
                    raise
                DB_RETRIES.labels(sqlstate=sqlstate).inc()
                log.info(
                    "%s %s: transaction aborted (SQLSTATE %s), run %d of %d",
                    scope["method"],
                    scope["path"],
                    sqlstate,
                    attempt + 1,
                    self.attempts,
                )
                await asyncio.sleep(random.uniform(0, self.backoff_s * 2 ** (attempt - 1)))


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then waits on the real one (which
    then only reports a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()

    return replayed
