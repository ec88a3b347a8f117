"""The demo's end checks on what was stored: the outbox, the orders, the idempotency keys
and the events the data-platform stand-in received.

- :func:`read_store` reads the demo's database (the SQLite file or the scratch
  PostgreSQL database) with a sync SQLAlchemy engine (read only, while the servers
  run): outbox figures and event ids (order events only: mail jobs never reach the
  data platform), every order's status and every stored
  idempotency key.
- :func:`wait_for_relay` polls every instance's ``/metrics``
  (``flashsale_outbox_backlog_events``) and the stand-in's ``GET /stats`` until every
  event written is delivered and stored, and says how long that took.
- :func:`fetch_stored_events` pages through the stand-in's ``GET /events``.
- :func:`check_events`, :func:`check_orders`, :func:`check_keys` compare those with the
  outbox and with the demo's own account (:class:`~flashsale.demo.world.World`), and
  return findings (empty: all agree).

Delivery is at least once (docs/compatibility.md): the stand-in may receive an event several
times (a lost acknowledgement makes the relay send it again), but must store exactly
one copy of each, and the copies must be exactly the outbox's events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from flashsale.data_platform.client import read_all_events
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import idempotency_keys, orders, outbox
from flashsale.demo.client import ApiClient
from flashsale.demo.world import KeyedRequest, World
from flashsale.mail.outbox import MAIL_JOB

__all__ = [
    "BACKLOG_METRIC",
    "PlatformStats",
    "RelayWait",
    "StoreSnapshot",
    "check_events",
    "check_keys",
    "check_orders",
    "fetch_stored_events",
    "outbox_written",
    "read_store",
    "wait_for_relay",
]

#: The relay's backlog gauge on ``/metrics`` (the largest over live worker processes).
BACKLOG_METRIC = "flashsale_outbox_backlog_events"
#: Seconds between two looks at the relay's progress.
_POLL_S = 0.1
#: At most this many findings per check (the rest are counted).
_MAX_FINDINGS = 20

ORDER_PAID = "order.paid"
ORDER_CANCELLED = "order.cancelled"


@dataclass(frozen=True)
class StoreSnapshot:
    """What the demo's database holds at the end.

    Attributes:
        event_ids: ``outbox.event_id`` of every event written.
        by_type: events written per ``type``.
        undelivered: events without ``delivered_at``.
        attempts: delivery attempts recorded over all events (``Σ outbox.attempts``).
        max_attempts: the most attempts one event needed.
        order_statuses: order id -> status, for every order.
        keys: ``(user_id, key)`` -> ``(status, response_status, response_body)`` of
            every stored idempotency key.
    """

    event_ids: frozenset[str]
    by_type: dict[str, int]
    undelivered: int
    attempts: int
    max_attempts: int
    order_statuses: dict[int, str]
    keys: dict[tuple[int, str], tuple[str, int | None, str | None]]

    @property
    def written(self) -> int:
        """Events written to the outbox."""
        return len(self.event_ids)


#: Order events, the rows the data platform receives (mail jobs go to SMTP instead).
_ORDER_EVENTS = outbox.c.type != MAIL_JOB


def outbox_written(database_url: str) -> int:
    """Number of outbox order events in the database at ``database_url`` (read only;
    mail jobs are not counted)."""
    engine = make_sync_engine(database_url, immediate=False)
    try:
        with engine.connect() as conn:
            count = select(func.count()).select_from(outbox).where(_ORDER_EVENTS)
            return int(conn.execute(count).scalar_one())
    finally:
        engine.dispose()


def read_store(database_url: str) -> StoreSnapshot:
    """Read the outbox, the orders and the idempotency keys in one read transaction.

    Blocking (sync SQLAlchemy): call it from a thread inside an event loop.
    """
    engine = make_sync_engine(database_url, immediate=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    outbox.c.event_id, outbox.c.type, outbox.c.attempts, outbox.c.delivered_at
                ).where(_ORDER_EVENTS)
            ).all()
            statuses = {
                int(i): str(s) for i, s in conn.execute(select(orders.c.id, orders.c.status))
            }
            keys = {
                (int(r.user_id), str(r.key)): (str(r.status), r.response_status, r.response_body)
                for r in conn.execute(
                    select(
                        idempotency_keys.c.user_id,
                        idempotency_keys.c.key,
                        idempotency_keys.c.status,
                        idempotency_keys.c.response_status,
                        idempotency_keys.c.response_body,
                    )
                )
            }
    finally:
        engine.dispose()
    return StoreSnapshot(
        event_ids=frozenset(str(r.event_id) for r in rows),
        by_type=dict(Counter(str(r.type) for r in rows)),
        undelivered=sum(1 for r in rows if r.delivered_at is None),
        attempts=sum(int(r.attempts) for r in rows),
        max_attempts=max((int(r.attempts) for r in rows), default=0),
        order_statuses=statuses,
        keys=keys,
    )


@dataclass(frozen=True)
class PlatformStats:
    """The stand-in's ``GET /stats``: posts received, events stored, duplicate posts,
    posts failed on purpose (``--fail-rate``), stored events per type."""

    received: int
    stored: int
    duplicates: int
    failed: int
    by_type: dict[str, int]

    @classmethod
    def of(cls, body: Any) -> PlatformStats:
        """From the JSON body.

        Raises:
            KeyError / TypeError / ValueError: not a ``/stats`` body.
        """
        return cls(
            received=int(body["received"]),
            stored=int(body["stored"]),
            duplicates=int(body["duplicates"]),
            failed=int(body["failed"]),
            by_type={str(k): int(v) for k, v in body["by_type"].items()},
        )


async def platform_stats(api: ApiClient, platform_url: str) -> PlatformStats | None:
    """The stand-in's counters, or None when it does not answer properly."""
    reply = await api.fetch(f"{platform_url}/stats")
    if not reply.ok:
        return None
    try:
        return PlatformStats.of(reply.body)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def backlog_of(metrics_text: str) -> float | None:
    """The value of :data:`BACKLOG_METRIC` in a Prometheus exposition (None if absent)."""
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name == BACKLOG_METRIC:
            try:
                return float(value.split()[0])
            except (IndexError, ValueError):
                return None
    return None


@dataclass(frozen=True)
class RelayWait:
    """The outcome of :func:`wait_for_relay`.

    Attributes:
        seconds: from ``since`` until the relay had caught up (None: it had not by
            the timeout).
        backlog: the last backlog read from ``/metrics``, the largest over the
            instances (None: not read from every instance).
        stats: the stand-in's last ``/stats`` (None: not read).
    """

    seconds: float | None
    backlog: float | None
    stats: PlatformStats | None


async def wait_for_relay(
    api: ApiClient,
    server_urls: Sequence[str],
    platform_url: str,
    *,
    written: int,
    since: float,
    timeout_s: float,
) -> RelayWait:
    """Poll until the relays have delivered every event: the backlog gauge is 0 on every
    instance and the stand-in stores ``written`` events.

    Every instance runs a relay and refreshes its gauge from the shared outbox, so the
    wait ends only when none of them still sees a backlog.

    Args:
        server_urls / platform_url: base URLs of the instances and the stand-in.
        written: events in the outbox (none is written once the traffic stopped).
        since: ``time.perf_counter()`` when the traffic stopped; the wait is timed
            from it.
        timeout_s: give up this many seconds after ``since``.
    """
    backlog: float | None = None
    stats: PlatformStats | None = None
    while True:
        backlogs: list[float | None] = []
        for server_url in server_urls:
            metrics = await api.fetch(f"{server_url}/metrics")
            ok = metrics.ok and isinstance(metrics.body, str)
            backlogs.append(backlog_of(metrics.body) if ok else None)
        known = [b for b in backlogs if b is not None]
        backlog = max(known) if known and len(known) == len(backlogs) else None
        stats = await platform_stats(api, platform_url)
        elapsed = time.perf_counter() - since
        if backlog == 0 and stats is not None and stats.stored >= written:
            return RelayWait(elapsed, backlog, stats)
        if elapsed > timeout_s:
            return RelayWait(None, backlog, stats)
        await asyncio.sleep(_POLL_S)


async def fetch_stored_events(api: ApiClient, platform_url: str) -> list[dict[str, Any]]:
    """Every event the stand-in stores (``GET /events`` page by page), in storage order.

    Raises:
        RuntimeError: a page was refused or malformed.
    """

    async def get_page(params: dict[str, int]) -> object:
        reply = await api.fetch(f"{platform_url}/events", params=params)
        if not reply.ok:
            raise RuntimeError(f"GET /events {params}: {reply.status} {reply.body!r:.200}")
        return reply.body

    try:
        return await read_all_events(get_page)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


def _capped(findings: list[str]) -> list[str]:
    if len(findings) <= _MAX_FINDINGS:
        return findings
    return [*findings[:_MAX_FINDINGS], f"... and {len(findings) - _MAX_FINDINGS} more"]


def _ids(values: Iterable[int]) -> str:
    shown = sorted(values)
    return ", ".join(map(str, shown[:10])) + (" ..." if len(shown) > 10 else "")


def check_events(
    snapshot: StoreSnapshot,
    stored: list[dict[str, Any]],
    stats: PlatformStats | None,
    world: World,
) -> list[str]:
    """The stand-in holds exactly one copy of every outbox event, and the events are
    exactly the demo's paid and cancelled-after-paid orders.

    Checks: every outbox event delivered; the stored ids, once each, equal the
    outbox's ids; ``order.paid`` events name exactly the orders ever paid and
    ``order.cancelled`` exactly those cancelled after payment; ``/stats`` agrees.
    """
    findings: list[str] = []
    if snapshot.undelivered:
        findings.append(f"{snapshot.undelivered} outbox events are not delivered")
    ids = [str(e.get("event_id")) for e in stored]
    copies = Counter(ids)
    doubled = [i for i, n in copies.items() if n > 1]
    if doubled:
        findings.append(f"{len(doubled)} events are stored more than once, e.g. {doubled[:3]}")
    missing = snapshot.event_ids - copies.keys()
    extra = copies.keys() - snapshot.event_ids
    if missing:
        findings.append(f"{len(missing)} outbox events never reached the data platform")
    if extra:
        findings.append(f"the data platform stores {len(extra)} events the outbox does not hold")
    if stats is None:
        findings.append("the data platform's /stats did not answer")
    else:
        if stats.stored != len(ids):
            findings.append(f"/stats says {stats.stored} stored, GET /events lists {len(ids)}")
        if stats.by_type != snapshot.by_type:
            findings.append(f"/stats by type {stats.by_type} != outbox {snapshot.by_type}")

    by_type: dict[str, set[int]] = {ORDER_PAID: set(), ORDER_CANCELLED: set()}
    for event in stored:
        order = (event.get("event") or {}).get("order") or {}
        if event.get("type") in by_type and isinstance(order.get("order_id"), int):
            by_type[str(event["type"])].add(order["order_id"])
    expected = {
        ORDER_PAID: {o.order_id for o in world.orders.values() if o.was_paid},
        ORDER_CANCELLED: {
            o.order_id for o in world.orders.values() if o.was_paid and o.status == "CANCELLED"
        },
    }
    for kind, want in expected.items():
        if snapshot.by_type.get(kind, 0) != len(want):
            findings.append(f"{snapshot.by_type.get(kind, 0)} {kind} events, expected {len(want)}")
        got = by_type[kind]
        if got != want:
            findings.append(
                f"{kind} events: missing for orders [{_ids(want - got)}], "
                f"unexpected for [{_ids(got - want)}]"
            )
    return _capped(findings)


def check_orders(snapshot: StoreSnapshot, world: World) -> list[str]:
    """The database holds exactly the orders the demo saw created, each in the status
    the demo expects: no order created twice by a retried request, every abandoned one
    EXPIRED, every cancelled one CANCELLED."""
    findings: list[str] = []
    expected = world.expected_statuses()
    stored = snapshot.order_statuses
    extra = stored.keys() - expected.keys()
    missing = expected.keys() - stored.keys()
    if extra:
        findings.append(f"{len(extra)} orders the demo never saw created: [{_ids(extra)}]")
    if missing:
        findings.append(f"{len(missing)} orders answered 201 are not stored: [{_ids(missing)}]")
    for order_id in sorted(expected.keys() & stored.keys()):
        if expected[order_id] != stored[order_id]:
            findings.append(
                f"order {order_id} is {stored[order_id]}, expected {expected[order_id]}"
            )
    return _capped(findings)


def check_keys(snapshot: StoreSnapshot, keyed: list[KeyedRequest]) -> list[str]:
    """Every key the demo retried is stored DONE with the first answer's status and body
    (so each key stands for exactly one order, or one refusal)."""
    findings: list[str] = []
    for request in keyed:
        row = snapshot.keys.get((request.user_id, request.key))
        if row is None:
            findings.append(f"key {request.key} of user {request.user_id} is not stored")
            continue
        status, response_status, response_body = row
        try:
            body = json.loads(response_body) if response_body is not None else None
        except ValueError:
            body = response_body
        if (status, response_status, body) != ("DONE", request.status, request.body):
            findings.append(
                f"key {request.key} of user {request.user_id}: stored {status} "
                f"{response_status}, first answer {request.status}"
            )
    return _capped(findings)
