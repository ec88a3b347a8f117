"""The outbox relay against the in-process stand-in (docs/invariants.md#events).

At least once, never dropped, one relay per event at a time, backoff on failure,
lease takeover after a crash, and the backlog metrics.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text, update
from sqlalchemy.dialects import postgresql, sqlite
from starlette.types import Receive, Scope, Send

from flashsale.db.engine import Database, make_writer
from flashsale.db.models import outbox
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter
from flashsale.outbox.relay import (
    MIN_BACKOFF_S,
    OutboxRelay,
    backlog,
    backoff_s,
    claim,
    claim_statement,
    default_relay_id,
)
from flashsale.settings import Settings

from .support import all_platform_events, drain, insert_events, outbox_rows

pytestmark = pytest.mark.anyio

MakeSettings = Callable[..., Settings]


async def configure(client: httpx.AsyncClient, **config: Any) -> None:
    response = await client.put("/config", json=config)
    assert response.status_code == 200, response.text


async def platform_stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, name
    return value


# -- delivery ---------------------------------------------------------------------------


async def test_every_event_is_delivered_once_and_marked(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    event_ids = await insert_events(db, 25)
    delivered_before = sample("flashsale_outbox_deliveries_total", outcome="delivered")
    started = utcnow()

    relay = OutboxRelay(db, writer, make_settings(outbox_batch_size=10), "relay-a", platform_client)
    assert await drain(relay, db) == 25

    rows = await outbox_rows(db)
    assert [r["event_id"] for r in rows] == event_ids
    for row in rows:
        assert row["delivered_at"] is not None and row["delivered_at"] >= started
        assert (row["attempts"], row["last_error"]) == (1, None)
        assert (row["claimed_by"], row["claimed_until"]) == (None, None)
    stats = await platform_stats(platform_client)
    assert stats == {
        "received": 25,
        "stored": 25,
        "duplicates": 0,
        "failed": 0,
        "by_type": {"order.paid": 25},
    }
    stored = await all_platform_events(platform_client)
    # A batch is posted concurrently: the platform's order is not the outbox's.
    assert sorted(e["event_id"] for e in stored) == sorted(event_ids)
    payloads = {r["event_id"]: json.loads(r["payload"]) for r in rows}
    for event in stored:
        # The payload is sent verbatim, with its event_id as the idempotency key.
        assert event["event"] == payloads[event["event_id"]]
        assert event["idempotency_key"] == event["event_id"]
    assert sample("flashsale_outbox_deliveries_total", outcome="delivered") == (
        delivered_before + 25
    )
    # Nothing left: another round claims and posts nothing.
    assert await relay.run_once() == 0
    assert (await platform_stats(platform_client))["received"] == 25


async def test_a_failed_delivery_is_recorded_backed_off_and_retried(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    await insert_events(db, 4)
    await configure(platform_client, fail_rate=1.0)
    # A long backoff, so "not due yet" below holds however slow the machine is.
    settings = make_settings(outbox_backoff_base_s=30.0, outbox_backoff_max_s=30.0)
    failed_before = sample("flashsale_outbox_deliveries_total", outcome="failed")
    relay = OutboxRelay(db, writer, settings, "relay-a", platform_client, rng=random.Random(7))

    before = utcnow()
    assert await relay.run_once() == 0
    after = utcnow()
    for row in await outbox_rows(db):
        assert row["delivered_at"] is None
        assert row["attempts"] == 1
        assert row["last_error"].startswith("HTTP 503: ")
        assert "failure injected" in row["last_error"]
        assert (row["claimed_by"], row["claimed_until"]) == (None, None)
        # Full jitter over [0, base × 2**0], at least the floor.
        assert before + timedelta(seconds=MIN_BACKOFF_S) <= row["available_at"]
        assert row["available_at"] <= after + timedelta(seconds=30.0)
    assert sample("flashsale_outbox_deliveries_total", outcome="failed") == failed_before + 4

    # Not due yet: the next round claims nothing (no post reaches the platform).
    received = (await platform_stats(platform_client))["received"]
    assert await relay.run_once() == 0
    assert (await platform_stats(platform_client))["received"] == received

    await configure(platform_client, fail_rate=0.0)
    async with transaction(db.write_session) as session:  # the backoff has passed
        await session.execute(update(outbox).values(available_at=utcnow()))
    assert await drain(relay, db) == 4
    for row in await outbox_rows(db):
        assert row["delivered_at"] is not None
        assert row["attempts"] == 2
        assert row["last_error"].startswith("HTTP 503")  # the last error is kept


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("connection refused"), "ConnectError: connection refused"),
        (httpx.ReadTimeout("timed out"), "ReadTimeout: timed out"),
        (None, "HTTP 500: boom"),
    ],
)
async def test_transport_errors_and_bad_statuses_are_failed_attempts(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    failure: Exception | None,
    expected: str,
) -> None:
    await insert_events(db, 2)

    def handler(request: httpx.Request) -> httpx.Response:
        if failure is not None:
            raise failure
        return httpx.Response(500, text="boom" + "x" * 1000)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        relay = OutboxRelay(db, writer, make_settings(), "relay-a", client)
        assert await relay.run_once() == 0
    for row in await outbox_rows(db):
        assert row["attempts"] == 1
        assert row["last_error"].startswith(expected)
        assert len(row["last_error"]) <= 500  # short: status and a body excerpt
        assert row["delivered_at"] is None


async def test_a_delivery_never_outlives_the_lease(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    """A post still running when the lease ends could overlap another relay's: it is cut."""
    await insert_events(db, 1)
    await configure(platform_client, latency_ms=2000)
    relay = OutboxRelay(db, writer, make_settings(outbox_lease_s=0.3), "relay-a", platform_client)
    with anyio.fail_after(1.5):
        assert await relay.run_once() == 0
    (row,) = await outbox_rows(db)
    assert row["last_error"].startswith("TimeoutError")
    assert (row["attempts"], row["claimed_by"]) == (1, None)


async def test_lost_acknowledgements_leave_exactly_one_copy_of_each_event(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    event_ids = await insert_events(db, 60)
    await configure(platform_client, fail_rate=0.3)
    relay = OutboxRelay(db, writer, make_settings(outbox_batch_size=20), "relay-a", platform_client)

    assert await drain(relay, db, timeout_s=20) == 60

    stats = await platform_stats(platform_client)
    assert stats["stored"] == 60
    assert stats["received"] > stats["stored"]
    assert stats["failed"] > 0
    # Lost acknowledgements: the platform had the event, the relay sent it again.
    assert stats["duplicates"] > 0
    stored = await all_platform_events(platform_client)
    assert sorted(e["event_id"] for e in stored) == sorted(event_ids)
    rows = await outbox_rows(db)
    assert all(r["delivered_at"] is not None for r in rows)
    assert sum(r["attempts"] for r in rows) == stats["received"]
    assert any(r["attempts"] > 1 and r["last_error"] for r in rows)


# -- several relays ---------------------------------------------------------------------


class InFlightProbe:
    """ASGI wrapper recording event ids posted while a post of the same id is in flight."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        self.posts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = dict(scope.get("headers", [])).get(b"idempotency-key", b"").decode()
        if scope["type"] != "http" or not key:
            await self.app(scope, receive, send)
            return
        self.posts += 1
        if key in self.in_flight:
            self.overlaps.append(key)
        self.in_flight.add(key)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.discard(key)


async def test_two_relays_claim_disjoint_events(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform: FastAPI,
    platform_client: httpx.AsyncClient,
) -> None:
    event_ids = await insert_events(db, 40)
    await configure(platform_client, latency_ms=20)
    probe = InFlightProbe(platform)
    settings = make_settings(outbox_batch_size=5)
    # A second read engine and writer on the same database: as another process would be.
    other_db = Database.from_settings(settings)
    other_writer = make_writer(settings)
    other_writer.start()
    # Both relays connected before the race: a first connection (PostgreSQL's
    # handshake and type introspection) would otherwise hand the whole backlog to one.
    for database in (db, other_db):
        async with database.read_session() as session:
            await session.execute(text("SELECT 1"))
    delivered: dict[str, int] = {}

    async def relay_loop(name: str, database: Database, its_writer: GroupCommitWriter) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=probe)) as client:
            relay = OutboxRelay(database, its_writer, settings, name, client)
            delivered[name] = await drain(relay, database)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(relay_loop, "relay-a", db, writer)
            group.start_soon(relay_loop, "relay-b", other_db, other_writer)
    finally:
        await other_writer.stop()
        await other_db.dispose()

    assert probe.overlaps == []
    assert probe.posts == 40  # no event was sent twice at all
    assert delivered["relay-a"] + delivered["relay-b"] == 40
    assert delivered["relay-a"] > 0 and delivered["relay-b"] > 0
    stats = await platform_stats(platform_client)
    assert (stats["stored"], stats["duplicates"]) == (40, 0)
    assert sorted(e["event_id"] for e in await all_platform_events(platform_client)) == sorted(
        event_ids
    )


async def test_a_claim_takes_only_due_unleased_events_in_id_order(
    db: Database, writer: GroupCommitWriter
) -> None:
    ids = await insert_events(db, 6)
    now = utcnow()
    first = await writer.submit(lambda tx: claim(tx, "relay-a", now, 30.0, 4))
    second = await writer.submit(lambda tx: claim(tx, "relay-b", now, 30.0, 4))
    third = await writer.submit(lambda tx: claim(tx, "relay-c", now, 30.0, 4))
    assert [e.event_id for e in first] == ids[:4]
    assert [e.event_id for e in second] == ids[4:]
    assert third == []
    rows = await outbox_rows(db)
    assert [r["claimed_by"] for r in rows] == ["relay-a"] * 4 + ["relay-b"] * 2
    assert all(r["claimed_until"] > now for r in rows)


async def test_an_expired_lease_is_taken_over(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    """A relay that died after claiming holds its events only until its lease ends."""
    ids = await insert_events(db, 6)
    now = utcnow()
    async with transaction(db.write_session) as session:
        await session.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(ids[:2]))
            .values(claimed_by="dead-relay", claimed_until=now - timedelta(seconds=1))
        )
        await session.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(ids[2:4]))
            .values(claimed_by="busy-relay", claimed_until=now + timedelta(seconds=60))
        )
    relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
    assert await relay.run_once() == 4

    rows = {r["event_id"]: r for r in await outbox_rows(db)}
    for event_id in ids[:2] + ids[4:]:
        assert rows[event_id]["delivered_at"] is not None
        assert rows[event_id]["claimed_by"] is None
    for event_id in ids[2:4]:  # still leased by a live relay: left alone
        assert rows[event_id]["delivered_at"] is None
        assert rows[event_id]["claimed_by"] == "busy-relay"
        assert rows[event_id]["attempts"] == 0


async def test_a_crashed_relays_batch_is_delivered_after_its_lease(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    ids = await insert_events(db, 5)
    now = utcnow()
    claimed = await writer.submit(lambda tx: claim(tx, "crashed-relay", now, 30.0, 100))
    assert len(claimed) == 5  # ... and then the process died

    relay = OutboxRelay(db, writer, make_settings(), "relay-b", platform_client)
    assert await relay.run_once() == 0  # the lease still holds
    async with transaction(db.write_session) as session:  # ... until it runs out
        await session.execute(update(outbox).values(claimed_until=utcnow()))
    assert await drain(relay, db) == 5
    stored = await all_platform_events(platform_client)
    assert sorted(e["event_id"] for e in stored) == sorted(ids)


async def test_stopping_the_relay_releases_its_claims(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    """Cancelled mid-delivery (app shutdown), the relay hands its events back at once."""
    await insert_events(db, 3)
    await configure(platform_client, latency_ms=5000)
    relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
    task = asyncio.create_task(relay.run())
    with anyio.fail_after(5):  # polls the database: the claim is the relay's own business
        while True:
            if any(r["claimed_by"] for r in await outbox_rows(db)):
                break
            await anyio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for row in await outbox_rows(db):
        assert (row["claimed_by"], row["claimed_until"]) == (None, None)
        assert (row["attempts"], row["delivered_at"]) == (0, None)  # not attempted


async def test_run_delivers_until_stopped(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    """The lifespan's way: ``run(stop)`` ends after the current round once stopped."""
    await insert_events(db, 12)
    settings = make_settings(outbox_batch_size=5, outbox_poll_s=5.0)
    relay = OutboxRelay(db, writer, settings, "relay-a", platform_client)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    with anyio.fail_after(5):  # full batches follow each other without the 5 s poll
        while True:
            if all(r["delivered_at"] is not None for r in await outbox_rows(db)):
                break
            await anyio.sleep(0.01)
    stop.set()
    with anyio.fail_after(1):  # the idle pause ends at once
        await task
    assert not platform_client.is_closed  # an injected client is the caller's to close


# -- metrics ----------------------------------------------------------------------------


async def test_backlog_reports_count_and_oldest_age(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    async with db.read_session() as session:
        assert await backlog(session) == (0, 0.0)
    await insert_events(db, 3, created_at=utcnow() - timedelta(seconds=10))
    await insert_events(db, 2)
    async with db.read_session() as session:
        count, age = await backlog(session)
    assert count == 5
    assert 10.0 <= age < 15.0

    # Without a data platform: nothing is claimed or sent, the gauges still move.
    idle = OutboxRelay(db, writer, make_settings(data_platform_url=None), "relay-idle")
    assert await idle.run_once() == 0
    await idle.aclose()
    assert sample("flashsale_outbox_backlog_events") == 5
    assert sample("flashsale_outbox_oldest_age_seconds") >= 10.0
    assert all(r["claimed_by"] is None and r["attempts"] == 0 for r in await outbox_rows(db))

    relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
    assert await relay.run_once() == 5
    assert sample("flashsale_outbox_backlog_events") == 0
    assert sample("flashsale_outbox_oldest_age_seconds") == 0


# -- pieces -----------------------------------------------------------------------------


def test_backoff_is_full_jitter_capped_with_a_floor() -> None:
    rng = random.Random(3)
    for attempts in range(12):
        ceiling = min(8.0, 0.5 * 2**attempts)
        draws = [backoff_s(attempts, 0.5, 8.0, rng) for _ in range(200)]
        assert all(MIN_BACKOFF_S <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # spread over the whole range (full jitter)
    # A long-failing event neither overflows nor waits past the cap.
    assert MIN_BACKOFF_S <= backoff_s(10_000, 0.5, 60.0) <= 60.0
    # A base below the floor is its own floor.
    assert backoff_s(0, 0.001, 0.001) == 0.001


def test_the_claim_skips_locked_rows_on_postgresql_only() -> None:
    now = utcnow()
    pg = str(claim_statement("postgresql", "r", now, 30, 10).compile(dialect=postgresql.dialect()))
    lite = str(claim_statement("sqlite", "r", now, 30, 10).compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in pg and "RETURNING" in pg
    assert "FOR UPDATE" not in lite and "RETURNING" in lite


def test_relay_ids_fit_the_column(make_settings: MakeSettings) -> None:
    assert len(default_relay_id()) <= 64
    assert default_relay_id() != default_relay_id()
    with pytest.raises(ValueError, match="64"):
        OutboxRelay(None, None, make_settings(), "x" * 65)  # type: ignore[arg-type]


# -- through the group-commit writer ----------------------------------------------------


class WriterSpy:
    """Records the operations submitted to a writer (they still run)."""

    def __init__(self, writer: GroupCommitWriter) -> None:
        self.ops: list[Any] = []
        self.submitted = asyncio.Event()
        self._submit = writer.submit
        writer.submit = self._spy  # type: ignore[method-assign]

    async def _spy(self, op: Any, locks: Any = None) -> Any:
        self.ops.append(op)
        self.submitted.set()
        return await self._submit(op, locks)


async def test_claims_and_outcomes_are_writer_operations(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    spy = WriterSpy(writer)
    relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
    assert await relay.run_once() == 0
    assert spy.ops == []  # an idle relay takes no write lock
    await insert_events(db, 3)
    batches = REGISTRY.get_sample_value("flashsale_writer_batch_size_count") or 0.0
    assert await relay.run_once() == 3
    assert len(spy.ops) == 2  # the claim, then the outcomes
    assert REGISTRY.get_sample_value("flashsale_writer_batch_size_count") == batches + 2
    assert all(r["delivered_at"] is not None for r in await outbox_rows(db))


async def test_a_claim_still_queued_when_the_relay_is_cancelled_is_handed_back(
    db: Database, make_settings: MakeSettings, platform_client: httpx.AsyncClient
) -> None:
    """Cancelled while its claim waits in the writer's queue, the relay waits for the
    claim to commit and releases it at once (nothing is posted, no lease to wait for)."""
    await insert_events(db, 3)
    # One writer thread (PostgreSQL's default is several), so one busy batch holds the queue.
    writer = make_writer(make_settings(writer_threads=1))
    writer.start()
    busy, release = threading.Event(), threading.Event()
    try:

        def block(_tx: Any) -> None:  # the writer's thread is busy with another batch
            busy.set()
            release.wait(10)

        blocker = asyncio.ensure_future(writer.submit(block))
        await anyio.to_thread.run_sync(busy.wait, 10)
        spy = WriterSpy(writer)
        relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
        task = asyncio.create_task(relay.run_once())
        with anyio.fail_after(5):
            await spy.submitted.wait()  # the claim is queued behind the busy batch
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting for the claim's outcome
        release.set()
        with anyio.fail_after(5), pytest.raises(asyncio.CancelledError):
            await task
        await blocker
    finally:
        release.set()
        await writer.stop()
    assert len(spy.ops) == 2  # the claim, then its release
    for row in await outbox_rows(db):
        assert (row["claimed_by"], row["claimed_until"]) == (None, None)
        assert (row["attempts"], row["delivered_at"]) == (0, None)
    assert (await platform_stats(platform_client))["received"] == 0
