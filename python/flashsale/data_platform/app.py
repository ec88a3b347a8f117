"""The stand-in data platform as a FastAPI app (``flashsale data-platform``).

Endpoints:

- ``POST /events`` -- body: an event (JSON object with at least ``event_id`` and
  ``type``, 422 otherwise; an ``Idempotency-Key`` header, if sent, must equal the
  ``event_id``). 201 ``{"event_id", "duplicate": false}`` on first receipt, 200
  ``{"event_id", "duplicate": true}`` for a repeat (the stored copy is kept).
  With failure injection on, a fraction ``fail_rate`` of posts is answered 503:
  half of them before storing, half after storing -- a lost acknowledgement,
  which makes the sender retry an event this side already has.
- ``GET /events?type=&limit=&after=`` -- stored events in storage order:
  ``{"items": [{id, event_id, type, received_at, idempotency_key, event}],
  "next_after": <id to pass as after> | null}``; ``limit`` ≤ 1000. Read every page with
  :func:`~flashsale.data_platform.client.read_all_events`.
- ``GET /stats`` -- ``{received, stored, duplicates, failed, by_type: {type: n}}``,
  persisted in the database file (see :class:`~flashsale.data_platform.store.Stats`).
- ``GET /config``, ``PUT /config {fail_rate?, latency_ms?}`` -- failure injection
  and latency of this process, changeable at runtime.
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from flashsale.data_platform.client import MAX_PAGE
from flashsale.data_platform.store import EventStore, StoredEvent


class EventIn(BaseModel):
    """The fields the stand-in needs from an event; the rest is stored as received."""

    model_config = ConfigDict(extra="allow")

    event_id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=255)


class Receipt(BaseModel):
    """The answer to ``POST /events``."""

    event_id: str
    duplicate: bool


class FaultConfig(BaseModel):
    """Failure injection: ``fail_rate`` in [0, 1] of posts fail; each post first sleeps
    ``latency_ms`` milliseconds."""

    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_ms: int = Field(default=0, ge=0, le=600_000)


class FaultConfigUpdate(BaseModel):
    """``PUT /config``: the fields to change."""

    fail_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    latency_ms: int | None = Field(default=None, ge=0, le=600_000)


class EventOut(BaseModel):
    """A stored event; ``event`` is its JSON as first received."""

    id: int
    event_id: str
    type: str
    received_at: str
    idempotency_key: str | None
    event: dict[str, Any]

    @classmethod
    def of(cls, stored: StoredEvent) -> EventOut:
        return cls(
            id=stored.id,
            event_id=stored.event_id,
            type=stored.type,
            received_at=stored.received_at,
            idempotency_key=stored.idempotency_key,
            event=json.loads(stored.body),
        )


class EventPage(BaseModel):
    """A page of ``GET /events``; ``next_after`` is None on the last page."""

    items: list[EventOut]
    next_after: int | None


class StatsOut(BaseModel):
    """``GET /stats``."""

    received: int
    stored: int
    duplicates: int
    failed: int
    by_type: dict[str, int]


def _injected_failure() -> HTTPException:
    return HTTPException(503, "failure injected by --fail-rate", headers={"Retry-After": "1"})


def create_app(
    database_path: Path | str,
    fail_rate: float = 0.0,
    latency_ms: int = 0,
    seed: int | None = None,
) -> FastAPI:
    """The stand-in receiver storing events in the SQLite file ``database_path``.

    Args:
        database_path: created with its tables if missing; reused (events and
            counters kept) otherwise.
        fail_rate: fraction of posts answered 503, in [0, 1].
        latency_ms: milliseconds each post sleeps before it is handled.
        seed: seed of the failure draws (None: unpredictable).

    Raises:
        pydantic.ValidationError: ``fail_rate`` or ``latency_ms`` out of range.
        sqlite3.Error: the database file cannot be created.
    """
    config = FaultConfig(fail_rate=fail_rate, latency_ms=latency_ms)
    store = EventStore(database_path)
    rng = random.Random(seed)

    app = FastAPI(title="Flashsale data platform (stand-in)")

    @app.post(
        "/events",
        status_code=201,
        responses={200: {"model": Receipt, "description": "duplicate"}, 503: {}},
    )
    async def receive(
        event: EventIn,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Receipt:
        """Store an event once per ``event_id``."""
        if idempotency_key is not None and idempotency_key != event.event_id:
            raise HTTPException(422, "Idempotency-Key must equal the event's event_id")
        current = config  # a PUT /config during the sleep applies to the next post
        if current.latency_ms:
            await asyncio.sleep(current.latency_ms / 1000)
        draw = rng.random()
        if draw < current.fail_rate / 2:
            await anyio.to_thread.run_sync(store.record_failure)
            raise _injected_failure()
        fail_after = draw < current.fail_rate
        body = (await request.body()).decode()
        new = await anyio.to_thread.run_sync(
            lambda: store.store(
                event.event_id, event.type, body, idempotency_key, failed=fail_after
            )
        )
        if fail_after:
            raise _injected_failure()
        if not new:
            response.status_code = 200
        return Receipt(event_id=event.event_id, duplicate=not new)

    @app.get("/events")
    async def list_events(
        event_type: Annotated[str | None, Query(alias="type", max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> EventPage:
        """Stored events with ``id > after``, in storage order."""
        rows = await anyio.to_thread.run_sync(
            lambda: store.events(event_type=event_type, after=after, limit=limit)
        )
        items = [EventOut.of(row) for row in rows]
        return EventPage(items=items, next_after=items[-1].id if len(items) == limit else None)

    @app.get("/stats")
    async def stats() -> StatsOut:
        """Counters since the database file was created."""
        current = await anyio.to_thread.run_sync(store.stats)
        return StatsOut(
            received=current.received,
            stored=current.stored,
            duplicates=current.duplicates,
            failed=current.failed,
            by_type=current.by_type,
        )

    @app.get("/config")
    async def get_config() -> FaultConfig:
        """The failure injection of this process."""
        return config

    @app.put("/config")
    async def put_config(change: FaultConfigUpdate) -> FaultConfig:
        """Change the failure injection of this process (other workers keep theirs)."""
        nonlocal config
        config = config.model_copy(update=change.model_dump(exclude_none=True))
        return config

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    return app
