"""A relay killed mid-delivery loses nothing: real processes, real HTTP.

``flashsale data-platform`` runs with latency, so a batch is in flight for a
while; the first relay process is SIGKILLed while it holds claims, and a second
one takes them over once the (short) lease has passed. The stand-in ends with
exactly one copy of every event and every outbox row is delivered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from flashsale.data_platform.client import read_all_events_sync
from flashsale.db.engine import make_sync_engine
from flashsale.db.migrate import upgrade
from flashsale.db.models import outbox
from flashsale.demo.server import free_port

from .support import event_payload

pytestmark = pytest.mark.e2e

EVENTS = 40
BATCH = 10
LATENCY_MS = 300
LEASE_S = 1.5
#: Seconds any wait of this test may take before it fails.
WAIT_S = 30.0

RELAY_SCRIPT = """
import asyncio, faulthandler, signal, sys
from flashsale.db.engine import Database, make_writer
from flashsale.outbox.relay import OutboxRelay
from flashsale.settings import Settings

faulthandler.register(signal.SIGUSR1, all_threads=True)  # every thread's stack, on demand

async def main() -> None:
    settings = Settings()
    db = Database.from_settings(settings, writes=False)
    writer = make_writer(settings)
    writer.start()
    stop = asyncio.Event()
    # Stopped as the app lifespan stops it: the round in progress ends, then run() returns.
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    try:
        await OutboxRelay(db, writer, settings, sys.argv[1]).run(stop)
    finally:
        await writer.stop()
        await db.dispose()

asyncio.run(main())
"""


@contextlib.contextmanager
def child(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (own session) with output in ``log_path``, killed on exit."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def wait_for(what: str, check: Callable[[], bool], logs: list[Path]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs
            )
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.02)


def test_a_relay_killed_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'flashsale.db'}"
    upgrade(database_url)
    engine = make_sync_engine(database_url, immediate=False)
    now = datetime.now(UTC)
    event_ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    with engine.begin() as conn:
        conn.execute(
            insert(outbox),
            [
                {
                    "event_id": event_id,
                    "type": "order.paid",
                    "payload": event_payload(event_id),
                    "created_at": now,
                    "available_at": now,
                    "attempts": 0,
                }
                for event_id in event_ids
            ],
        )

    def rows() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(select(outbox).order_by(outbox.c.id)))

    port = free_port()
    platform_url = f"http://127.0.0.1:{port}"
    platform_log, relay1_log, relay2_log = (tmp_path / f"{n}.log" for n in ("platform", "r1", "r2"))
    logs = [platform_log, relay1_log, relay2_log]
    relay_env = {
        "FLASHSALE_ENVIRONMENT": "test",
        "FLASHSALE_DATABASE_URL": database_url,
        "FLASHSALE_DATA_PLATFORM_URL": f"{platform_url}/events",
        "FLASHSALE_OUTBOX_BATCH_SIZE": str(BATCH),
        "FLASHSALE_OUTBOX_LEASE_S": str(LEASE_S),
        "FLASHSALE_OUTBOX_POLL_S": "0.05",
        "FLASHSALE_OUTBOX_BACKOFF_BASE_S": "0.05",
        "FLASHSALE_OUTBOX_BACKOFF_MAX_S": "0.2",
    }
    platform_args = [
        sys.executable, "-m", "flashsale", "data-platform", "--port", str(port),
        "--database", str(tmp_path / "platform.db"), "--latency-ms", str(LATENCY_MS),
    ]  # fmt: skip
    relay_args = [sys.executable, "-c", RELAY_SCRIPT]

    with (
        httpx.Client(base_url=platform_url, timeout=10) as http,
        child(platform_args, platform_log),
    ):

        def platform_up() -> bool:
            try:
                return http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        def stats() -> dict[str, Any]:
            body: dict[str, Any] = http.get("/stats").json()
            return body

        wait_for("the data platform", platform_up, logs)

        with child([*relay_args, "relay-1"], relay1_log, relay_env) as relay1:

            def mid_delivery() -> bool:
                # Claimed events the platform has not stored yet are in flight (it sleeps
                # LATENCY_MS on each): killing now cuts deliveries off in the middle.
                stored = {item["event_id"] for item in http.get("/events").json()["items"]}
                held = {r.event_id for r in rows() if r.claimed_by == "relay-1"}
                return len(stored) >= BATCH and bool(held - stored)

            wait_for("relay-1 to be mid-delivery", mid_delivery, logs)
            relay1.send_signal(signal.SIGKILL)
            relay1.wait(timeout=10)

        at_kill = rows()
        held = {r.event_id: r.claimed_until for r in at_kill if r.claimed_by == "relay-1"}
        assert held, "relay-1 died holding no claim: the test proves nothing"
        assert any(r.delivered_at is None for r in at_kill)

        with child([*relay_args, "relay-2"], relay2_log, relay_env) as relay2:
            wait_for(
                "relay-2 to deliver everything",
                lambda: all(r.delivered_at is not None for r in rows()),
                logs,
            )
            relay2.send_signal(signal.SIGINT)  # graceful: sets run()'s stop event
            try:
                relay2.wait(timeout=10)
            except subprocess.TimeoutExpired:
                relay2.send_signal(signal.SIGUSR1)  # faulthandler: where is it stuck?
                time.sleep(1.0)
                stacks = relay2_log.read_text(errors="replace")[-6000:]
                pytest.fail(f"relay-2 did not stop within 10 s of SIGINT\n{stacks}")

        final = rows()
        body = stats()
        pages = read_all_events_sync(
            lambda params: http.get("/events", params=params).raise_for_status().json(),
            limit=100,
        )
        stored = [item["event_id"] for item in pages]
    engine.dispose()

    assert sorted(stored) == sorted(event_ids)  # exactly one copy of each
    assert body["stored"] == EVENTS
    assert all(r.delivered_at is not None and r.claimed_by is None for r in final)
    for r in final:
        if r.event_id in held:
            # Taken over only once relay-1's lease had passed.
            assert r.delivered_at >= held[r.event_id]
