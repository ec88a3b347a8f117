"""Helpers of the outbox tests: outbox rows in, the stand-in's events out."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
from sqlalchemy import insert, select

from flashsale.data_platform.client import read_all_events
from flashsale.db.engine import Database
from flashsale.db.models import outbox
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.outbox.events import ORDER_PAID
from flashsale.outbox.relay import OutboxRelay, backlog

#: The relay posts here; the in-process transport routes it to the stand-in.
PLATFORM_URL = "http://platform.test/events"

#: Settings of a relay that retries fast (tests wait for backoffs).
FAST = {
    "outbox_poll_s": 0.01,
    "outbox_backoff_base_s": 0.01,
    "outbox_backoff_max_s": 0.05,
    "data_platform_timeout_s": 2.0,
}


def event_payload(event_id: str, event_type: str = ORDER_PAID, **extra: Any) -> str:
    """An event's JSON text, shaped like :func:`flashsale.outbox.events.order_event`."""
    return json.dumps(
        {"event_id": event_id, "type": event_type, "occurred_at": "2026-01-01T00:00:00+00:00"}
        | extra,
        separators=(",", ":"),
    )


async def insert_events(
    db: Database, count: int, *, created_at: datetime | None = None, **columns: Any
) -> list[str]:
    """Insert ``count`` undelivered ``order.paid`` rows; returns their event ids in id order."""
    now = created_at or utcnow()
    event_ids = [str(uuid.uuid4()) for _ in range(count)]
    rows = [
        {
            "event_id": event_id,
            "type": ORDER_PAID,
            "order_id": None,
            "payload": event_payload(event_id, seq=i),
            "created_at": now,
            "available_at": now,
            "attempts": 0,
            **columns,
        }
        for i, event_id in enumerate(event_ids)
    ]
    async with transaction(db.write_session) as session:
        await session.execute(insert(outbox), rows)
    return event_ids


async def outbox_rows(db: Database) -> list[dict[str, Any]]:
    """Every outbox row as a dict, in id order."""
    async with db.read_session() as session:
        result = await session.execute(select(outbox).order_by(outbox.c.id))
        return [dict(row._mapping) for row in result]


async def all_platform_events(client: httpx.AsyncClient, page: int = 50) -> list[dict[str, Any]]:
    """Every event the stand-in stored, following ``next_after``."""

    async def get_page(params: dict[str, int]) -> object:
        response = await client.get("/events", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    return await read_all_events(get_page, limit=page)


def soon(seconds: float) -> datetime:
    """``now + seconds`` (UTC)."""
    return utcnow() + timedelta(seconds=seconds)


async def drain(relay: OutboxRelay, db: Database, *, timeout_s: float = 10.0) -> int:
    """Run ``relay`` round after round until no event is undelivered; returns the
    events it delivered. Fails the test after ``timeout_s``."""
    delivered = 0
    with anyio.fail_after(timeout_s):
        while True:
            delivered += await relay.run_once()
            async with db.read_session() as session:
                waiting, _ = await backlog(session)
            if not waiting:
                return delivered
            await anyio.sleep(0.005)  # let backoffs pass without spinning
