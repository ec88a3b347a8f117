"""A server killed mid-delivery loses no event (docs/invariants.md#events).

The server-level twin of ``tests/outbox/test_relay_process.py``: a real
``flashsale serve --workers 2`` delivers the ``order.paid`` / ``order.cancelled``
events of real orders to a ``flashsale data-platform`` stand-in that answers
slowly, so deliveries are in flight when the whole server (master and workers)
is SIGKILLed. A new server on the same database takes the dead relays' claims
over once their (short) lease has passed. The stand-in ends with exactly one copy
of every outbox event, and every outbox row is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from sqlalchemy import Engine, select

from flashsale.data_platform.client import read_all_events_sync
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import outbox
from flashsale.demo.server import free_port

if TYPE_CHECKING:
    from .conftest import ServerFactory


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

USERS = 40
#: Orders cancelled after payment (each adds an ``order.cancelled`` event).
CANCELLED = 10
PRICE = 10_000
#: Each post to the stand-in first sleeps this long: deliveries stay in flight.
LATENCY_MS = 1_000
LEASE_S = 2.5
#: Events a relay claims per round (two workers: two relays share the backlog).
BATCH = 16
#: Seconds any wait of this test may take before it fails.
WAIT_S = 30.0


@contextlib.contextmanager
def data_platform(tmp_path: Path) -> Iterator[str]:
    """``flashsale data-platform`` (one process, ``LATENCY_MS``) on a free port; yields its
    base URL once healthy; killed on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "platform.log"
    args = [
        sys.executable, "-m", "flashsale", "data-platform", "--port", str(port),
        "--database", str(tmp_path / "platform.db"), "--latency-ms", str(LATENCY_MS),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        with httpx.Client(timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the data platform did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def outbox_rows(engine: Engine) -> list[Any]:
    """Every outbox row, by id (read straight from the database file)."""
    with engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def stored_event_ids(http: httpx.Client) -> list[str]:
    """``event_id`` of every event the stand-in stored, one per stored copy."""

    def get_page(params: dict[str, int]) -> object:
        return http.get("/events", params=params).raise_for_status().json()

    return [item["event_id"] for item in read_all_events_sync(get_page)]


async def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Poll the blocking ``check`` (in a thread) until it is true; fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not await anyio.to_thread.run_sync(check):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")
        await anyio.sleep(0.02)


async def test_a_server_killed_mid_delivery_loses_no_event(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        platform_url = stack.enter_context(data_platform(tmp_path))
        http = stack.enter_context(httpx.Client(base_url=platform_url, timeout=10.0))
        metrics_dir = tmp_path / "metrics-killed"  # a killed server cannot remove its own
        metrics_dir.mkdir()
        env = {
            "FLASHSALE_DATA_PLATFORM_URL": f"{platform_url}/events",
            "FLASHSALE_OUTBOX_LEASE_S": str(LEASE_S),
            "FLASHSALE_OUTBOX_BATCH_SIZE": str(BATCH),
            "FLASHSALE_OUTBOX_POLL_S": "0.05",
            "FLASHSALE_OUTBOX_BACKOFF_BASE_S": "0.05",
            "FLASHSALE_OUTBOX_BACKOFF_MAX_S": "0.2",
        }
        first = await anyio.to_thread.run_sync(
            lambda: server_factory.start({**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        )
        engine = make_sync_engine(first.database_url, immediate=False)
        stack.callback(engine.dispose)

        with anyio.fail_after(120):
            async with first.client(connections=USERS) as client:
                admin = await first.admin_headers(client)
                product = await first.create_product(
                    client,
                    admin,
                    name="Relay Tee",
                    variants=[{"sku": "RT", "name": "One", "price": PRICE, "stock": USERS}],
                )
                variant_id = product["variants"][0]["id"]
                users = await first.seed_users(client, USERS, prefix="kill", charge=PRICE)
                body = {"items": [{"variant_id": variant_id, "quantity": 1}], "pay": True}
                placed = await asyncio.gather(
                    *(client.post("/orders", headers=u.headers, json=body) for u in users)
                )
                orders = [first.expect(r, 201) for r in placed]
                cancelled = await asyncio.gather(
                    *(
                        client.post(f"/orders/{o['order_id']}/cancel", headers=u.headers)
                        for u, o in zip(users[:CANCELLED], orders[:CANCELLED], strict=True)
                    )
                )
                assert [first.expect(r, 200)["status"] for r in cancelled] == [
                    "CANCELLED"
                ] * CANCELLED

            def mid_delivery() -> bool:
                # A claimed event the stand-in has not stored yet is in flight (the
                # stand-in sleeps LATENCY_MS first): killing now cuts it off.
                stored = set(stored_event_ids(http))
                held = {r.event_id for r in outbox_rows(engine) if r.claimed_by is not None}
                return bool(stored) and bool(held - stored)

            await wait_for("the server to be mid-delivery", mid_delivery)
            first.kill()

            at_kill = outbox_rows(engine)
            assert len(at_kill) == USERS + CANCELLED
            held = {r.event_id: r.claimed_until for r in at_kill if r.claimed_by is not None}
            assert held, "the server died holding no claim: the test proves nothing"
            assert any(r.delivered_at is None for r in at_kill)
            # The posts cut off by the kill still reach the stand-in (it does not notice
            # that the sender is gone): their acknowledgements are lost, so the new
            # server sends them again and the stand-in must keep one copy.

            second = await anyio.to_thread.run_sync(lambda: server_factory.start(env))
            await wait_for(
                "the new server to deliver every event",
                lambda: all(r.delivered_at is not None for r in outbox_rows(engine)),
            )

            final = outbox_rows(engine)
            stored = stored_event_ids(http)
            stats = http.get("/stats").json()
            # Exactly one copy of every outbox event, and nothing else.
            assert len(stored) == len(set(stored))
            assert sorted(stored) == sorted(r.event_id for r in final)
            assert stats["stored"] == len(final)
            assert stats["by_type"] == dict(Counter(r.type for r in final))
            assert Counter(r.type for r in final) == {
                "order.paid": USERS,
                "order.cancelled": CANCELLED,
            }
            assert all(r.delivered_at is not None and r.claimed_by is None for r in final)
            for r in final:
                if r.event_id in held:
                    # Taken over only once the dead relay's lease had passed.
                    assert r.delivered_at >= held[r.event_id], r

            # The orders themselves survived the kill, and the new server serves them.
            async with second.client(connections=8) as client:
                got = await asyncio.gather(
                    *(
                        client.get(f"/orders/{o['order_id']}", headers=u.headers)
                        for u, o in zip(users, orders, strict=True)
                    )
                )
                assert [second.expect(r, 200)["status"] for r in got] == [
                    "CANCELLED" if i < CANCELLED else "PAID" for i in range(USERS)
                ]

            await second.assert_audit_clean(cli=False, ranking=True)
