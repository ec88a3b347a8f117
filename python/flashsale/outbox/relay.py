"""The outbox relay: delivers order events to the data platform and mail jobs to the
SMTP server, each at least once.

The event contract is described in docs/compatibility.md, the outbox's design in
docs/decisions/0002-transactional-outbox.md, mail in docs/operations.md#mail.

The outbox holds two kinds of rows, routed by ``type``: order events
(``order.paid``, ``order.cancelled``) go to ``data_platform_url`` only; mail jobs
(``type = "mail"``, :mod:`flashsale.mail.outbox`) go to the SMTP server of
``smtp_url`` only (:mod:`flashsale.mail.smtp`), with a ``Message-ID`` derived from the
job's ``event_id``. A kind whose destination is not configured is not claimed: it
waits in the outbox (for mail, a warning says so every few minutes). Claims,
leases, retries and backoff below are the same for both kinds.

Every instance runs one relay as a background task; any number of relays may
share a database. A relay repeats:

1. **Claim** (one operation of the process's group-commit writer, so one short
   savepoint of a batched write transaction): up to ``outbox_batch_size`` events
   that are undelivered, due (``available_at <= now``) and not leased by another
   relay get ``claimed_by = <relay id>``, ``claimed_until = now + outbox_lease_s``.
   The conditional ``UPDATE ... RETURNING`` tells which rows this relay got.
2. **Deliver** (no transaction open): ``POST`` each event's stored ``payload``
   verbatim (``Content-Type: application/json``, ``Idempotency-Key: <event_id>``)
   to ``data_platform_url``, and send each mail job over SMTP, concurrently (bounded).
3. **Record** (one writer operation): a 2xx (for mail: the SMTP server accepted the
   message) sets ``delivered_at``; anything
   else (status, SMTP refusal, timeout, connection error) sets ``last_error`` and pushes
   ``available_at`` back by an exponential backoff with full jitter. Both count
   ``attempts`` and clear the claim -- only where this relay still holds it.

A database transaction is never held during an HTTP call: the writer's connection
(on SQLite the single write connection of the process) is shared with every write of
the process, so that would stall them. An operation's result (the claimed events) is
returned only once its batch has committed.
If a relay dies, its claims expire after ``outbox_lease_s`` and another relay (or
the restarted one) takes the events over. Delivery is therefore at least once:
the data platform deduplicates by ``event_id``. No event is ever dropped or
deleted; a failing one is retried forever, at least every ``outbox_backoff_max_s``.

Leases compare the clocks of the relays' machines (UTC); keep them in sync
(NTP) and the lease well above the skew.

``data_platform_url`` is the full URL of the events endpoint, e.g.
``http://127.0.0.1:9000/events`` for ``flashsale data-platform --port 9000``.
Without it the relay delivers nothing and only keeps the backlog metrics fresh.

Starting and stopping it in the app lifespan (``flashsale.api.app``), with the
lifespan's ``stop`` event and ``stop_tasks`` of :mod:`flashsale.api.background`::

    relay = OutboxRelay(state.db, state.writer, settings)
    tasks.append(asyncio.create_task(relay.run(stop), name="outbox relay"))
    try:
        yield
    finally:
        await stop_tasks(stop, tasks, grace_s=10.0)  # before the writer and engines go
        await state.writer.stop()
        await state.db.dispose()

``run(stop)`` returns after the current round once ``stop`` is set; it may also
be cancelled (``run()`` without an event runs until cancelled). Either way it
closes its HTTP client. Cancelled in the middle of a round, it records the
outcome of the deliveries that finished and releases the rest of its claims (also
those of a claim that was still queued in the writer when the cancel came), so a
restarted instance need not wait for the lease.

Metrics (defined in :mod:`flashsale.metrics` with the service's others): gauges
``flashsale_outbox_backlog_events`` and ``flashsale_outbox_oldest_age_seconds`` (order
events), ``flashsale_mail_backlog_jobs`` and ``flashsale_mail_oldest_age_seconds`` (mail
jobs), counters ``flashsale_outbox_deliveries_total{outcome="delivered"|"failed"}`` and
``flashsale_mail_deliveries_total{outcome="sent"|"failed"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self

import httpx
from sqlalchemy import Update, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.db.dialect import retryable_sqlstate
from flashsale.db.engine import Database
from flashsale.db.models import outbox
from flashsale.db.types import UTCDateTime, utcnow
from flashsale.db.writer import GroupCommitWriter, Tx
from flashsale.mail.config import parse_mail_from, parse_smtp_url
from flashsale.mail.outbox import MAIL_JOB, MailJob
from flashsale.mail.smtp import MailSender, SmtpSender, build_message
from flashsale.metrics import (
    MAIL_BACKLOG,
    MAIL_DELIVERIES,
    MAIL_OLDEST_AGE,
    OUTBOX_BACKLOG,
    OUTBOX_DELIVERIES,
    OUTBOX_OLDEST_AGE,
)
from flashsale.settings import Settings

__all__ = [
    "Backlogs",
    "ClaimedEvent",
    "Kinds",
    "OutboxRelay",
    "backlog",
    "backlogs",
    "backoff_s",
    "claim",
    "claim_statement",
    "default_relay_id",
    "record_outcomes",
]

log = logging.getLogger(__name__)

#: Deliveries in flight per relay; the data platform sees at most this many at once.
DEFAULT_CONCURRENCY: Final = 16
#: Mails in flight per relay (one SMTP connection each).
MAIL_CONCURRENCY: Final = 4
#: At most one warning about mail waiting without ``smtp_url`` per this many seconds.
_MAIL_OFF_LOG_INTERVAL_S: Final = 300.0
#: Smallest delay before a retry: full jitter may draw ~0, which would hammer a
#: platform that just failed.
MIN_BACKOFF_S: Final = 0.05
#: Largest exponent of the backoff; beyond it the cap applies anyway (and 2**n stays a float).
_MAX_BACKOFF_EXPONENT: Final = 60
#: A delivery is not started with less time than this left on the lease.
_MIN_REQUEST_S: Final = 0.05
#: ``last_error`` keeps this many characters (status and the start of the body).
_ERROR_CHARS: Final = 500
_BODY_EXCERPT_CHARS: Final = 200
#: At most one summary warning about failed deliveries per this many seconds.
_FAILURE_LOG_INTERVAL_S: Final = 30.0
#: ``claimed_by`` is a ``String(64)``.
_RELAY_ID_CHARS: Final = 64


def default_relay_id() -> str:
    """``<hostname>-<pid>-<8 hex>``, at most 64 characters: unique per relay instance."""
    suffix = f"-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return socket.gethostname()[: _RELAY_ID_CHARS - len(suffix)] + suffix


def backoff_s(
    attempts: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before the next attempt, after ``attempts`` earlier failed ones.

    Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"):
    ``uniform(0, min(max_s, base_s × 2**attempts))``, but at least
    ``min(MIN_BACKOFF_S, base_s)`` so that a failing platform is never hammered.
    """
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempts, 0), _MAX_BACKOFF_EXPONENT))
    draw = (rng or random).uniform(0.0, ceiling)
    return max(min(MIN_BACKOFF_S, base_s), draw)


@dataclass(frozen=True)
class ClaimedEvent:
    """An outbox row this relay has claimed.

    Attributes:
        id: ``outbox.id``.
        event_id: the event's UUID, sent as ``Idempotency-Key`` (of a mail job: in its
            ``Message-ID``).
        payload: the event's JSON text, sent verbatim (a mail job's: its
            :class:`~flashsale.mail.outbox.MailJob`).
        attempts: delivery attempts before this one.
        type: ``outbox.type``: ``order.paid``, ``order.cancelled`` or ``mail``.
    """

    id: int
    event_id: str
    payload: str
    attempts: int
    type: str


#: Which rows a claim takes: ``"events"`` (order events, for the data platform),
#: ``"mail"`` (mail jobs, for the SMTP server) or ``"all"``.
Kinds = Literal["all", "events", "mail"]


def claim_statement(
    dialect: str,
    relay_id: str,
    now: datetime,
    lease_s: float,
    batch: int,
    kinds: Kinds = "all",
) -> Update:
    """``UPDATE outbox ... RETURNING`` that claims up to ``batch`` due, unleased events.

    The only place where the backends differ. On PostgreSQL the candidates are
    selected ``FOR UPDATE SKIP LOCKED``, so concurrent relays pass over each
    other's rows instead of queueing on them. On SQLite the write transaction
    (``BEGIN IMMEDIATE``) already serialises claimers. The claim condition is
    repeated on the UPDATE itself, so a row claimed meanwhile is never taken.

    Args:
        dialect: ``engine.dialect.name`` (``"sqlite"`` or ``"postgresql"``).
        now: the current time, timezone-aware UTC.
        lease_s: seconds the claim holds.
        kinds: which rows: order events, mail jobs or both (:data:`Kinds`).
    """
    claimable = and_(
        outbox.c.delivered_at.is_(None),
        outbox.c.available_at <= now,
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
    )
    if kinds == "events":
        claimable = and_(claimable, outbox.c.type != MAIL_JOB)
    elif kinds == "mail":
        claimable = and_(claimable, outbox.c.type == MAIL_JOB)
    candidates = select(outbox.c.id).where(claimable).order_by(outbox.c.id).limit(batch)
    if dialect == "postgresql":
        # A materialized CTE runs the locking SELECT exactly once. Inside ``IN (...)``
        # PostgreSQL may re-run a LIMIT ... SKIP LOCKED subquery while updating and
        # so claim more than ``batch`` rows.
        locked = (
            candidates.with_for_update(skip_locked=True)
            .cte("candidates")
            .prefix_with("MATERIALIZED")
        )
        chosen: Any = outbox.c.id.in_(select(locked.c.id))
    else:
        chosen = outbox.c.id.in_(candidates.scalar_subquery())
    return (
        update(outbox)
        .where(chosen, claimable)
        .values(claimed_by=relay_id, claimed_until=now + timedelta(seconds=lease_s))
        .returning(
            outbox.c.id, outbox.c.event_id, outbox.c.payload, outbox.c.attempts, outbox.c.type
        )
    )


def claim(
    tx: Tx,
    relay_id: str,
    now: datetime,
    lease_s: float,
    batch: int,
    kinds: Kinds = "all",
) -> list[ClaimedEvent]:
    """Claim up to ``batch`` rows of ``kinds`` for ``relay_id`` (a writer operation: the
    claim holds once its batch has committed).

    Returns the claimed events in ``id`` order (oldest first); empty if none is due.
    """
    statement = claim_statement(tx.conn.dialect.name, relay_id, now, lease_s, batch, kinds)
    events = [
        ClaimedEvent(r.id, r.event_id, r.payload, r.attempts, r.type)
        for r in tx.conn.execute(statement)
    ]
    events.sort(key=lambda e: e.id)  # RETURNING promises no order
    return events


_IS_MAIL = (outbox.c.type == MAIL_JOB).label("is_mail")
_BACKLOGS = (
    select(_IS_MAIL, func.count(), func.min(outbox.c.created_at))
    .where(outbox.c.delivered_at.is_(None))
    .group_by(_IS_MAIL)
)


@dataclass(frozen=True)
class Backlogs:
    """Undelivered outbox rows by kind: counts, and the age of the oldest in seconds
    (0 if none)."""

    events: int = 0
    events_age_s: float = 0.0
    mail: int = 0
    mail_age_s: float = 0.0


async def backlogs(session: AsyncSession, now: datetime | None = None) -> Backlogs:
    """Order events and mail jobs not yet delivered, with the age of the oldest of each.

    One aggregate over the ``(delivered_at, available_at)`` index; runs on a read session.
    """
    now = now or utcnow()
    found: dict[bool, tuple[int, float]] = {}
    for is_mail, count, oldest in (await session.execute(_BACKLOGS)).all():
        if count and oldest is not None:
            found[bool(is_mail)] = (int(count), max(0.0, (now - oldest).total_seconds()))
    events, events_age = found.get(False, (0, 0.0))
    mail, mail_age = found.get(True, (0, 0.0))
    return Backlogs(events, events_age, mail, mail_age)


async def backlog(session: AsyncSession, now: datetime | None = None) -> tuple[int, float]:
    """``(order events not yet delivered, age of the oldest of them in seconds)``; age 0
    if none. Mail jobs are not counted (:func:`backlogs` has them)."""
    found = await backlogs(session, now)
    return found.events, found.events_age_s


# Outcome updates (executemany). Each applies only where this relay still holds the
# claim: after a lease expired, the row may belong to another relay.
_STILL_OURS = and_(outbox.c.id == bindparam("b_id"), outbox.c.claimed_by == bindparam("b_relay"))
_MARK_DELIVERED = (
    update(outbox)
    .where(_STILL_OURS)
    .values(
        delivered_at=bindparam("b_now", type_=UTCDateTime()),
        attempts=outbox.c.attempts + 1,
        claimed_by=None,
        claimed_until=None,
    )
)
_MARK_FAILED = (
    update(outbox)
    .where(_STILL_OURS)
    .values(
        available_at=bindparam("b_available_at", type_=UTCDateTime()),
        last_error=bindparam("b_error"),
        attempts=outbox.c.attempts + 1,
        claimed_by=None,
        claimed_until=None,
    )
)
_RELEASE = update(outbox).where(_STILL_OURS).values(claimed_by=None, claimed_until=None)


def record_outcomes(
    tx: Tx,
    delivered: list[dict[str, object]],
    failed: list[dict[str, object]],
    released: list[dict[str, object]],
) -> None:
    """Record a round's outcomes (a writer operation), each row only where the relay
    (``b_relay``) still holds its claim: ``delivered`` rows (``b_id``, ``b_now``) get
    ``delivered_at``; ``failed`` ones (``b_error``, ``b_available_at``) their error and
    next attempt; ``released`` ones (not attempted) lose the claim only."""
    for statement, params in (
        (_MARK_DELIVERED, delivered),
        (_MARK_FAILED, failed),
        (_RELEASE, released),
    ):
        if params:
            tx.conn.execute(statement, params)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _run_to_completion(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` even if the caller is cancelled meanwhile, then pass the cancel on.

    ``asyncio.shield`` alone would let the caller return while ``work`` still holds
    a database connection: the process would then dispose its engines (or exit)
    under a transaction in flight. A second cancellation stops the waiting.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("outbox: recording outcomes failed during shutdown", exc_info=error)
        raise


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    error: str | None = None


class _FailureLog:
    """Failed deliveries summarised in at most one warning per interval (no log storm)."""

    def __init__(self, interval_s: float, what: str = "outbox: %d deliveries failed") -> None:
        self._what = what
        self._interval_s = interval_s
        self._last_emit = -math.inf
        self._failures = 0
        self._max_attempts = 0
        self._sample = ""

    def note(self, event: ClaimedEvent, error: str) -> None:
        self._failures += 1
        self._max_attempts = max(self._max_attempts, event.attempts + 1)
        self._sample = f"event {event.event_id} attempt {event.attempts + 1}: {error}"

    def flush(self, now: float) -> None:
        if not self._failures or now - self._last_emit < self._interval_s:
            return
        log.warning(
            self._what + " since the last report (most attempts of one: %d); latest: %s",
            self._failures,
            self._max_attempts,
            self._sample,
        )
        self._last_emit = now
        self._failures = self._max_attempts = 0


class OutboxRelay:
    """Delivers the order events of ``db``'s outbox to ``settings.data_platform_url`` and
    its mail jobs to the SMTP server of ``settings.smtp_url``.

    Args:
        db: the process's engines: the backlog query uses ``db.read_session``.
        writer: the process's (started) group-commit writer: claims and outcomes are
            its operations (:func:`claim`, :func:`record_outcomes`).
        settings: ``data_platform_url`` (full events endpoint, or None: deliver no
            event), ``data_platform_timeout_s``, ``smtp_url`` (or None: send no mail
            unless ``mailer`` is given), ``smtp_timeout_s``, ``mail_from``, ``outbox_*``.
        relay_id: written to ``claimed_by`` (≤ 64 chars); default
            :func:`default_relay_id`. Must be unique among running relays.
        client: an ``httpx.AsyncClient`` to post with (tests inject one with an
            ``ASGITransport``); the caller closes it. By default the relay opens
            its own and closes it in :meth:`aclose` (and when :meth:`run` ends).
        mailer: what sends the mail (tests inject one); default an
            :class:`~flashsale.mail.smtp.SmtpSender` for ``smtp_url`` when it is set.
        concurrency: deliveries in flight at once.
        rng: randomness of the backoff jitter (seeded in tests).

    Raises:
        ValueError: ``relay_id`` longer than 64 characters, ``concurrency`` < 1, or an
            ``smtp_url`` / ``mail_from`` that does not parse (the settings check them
            already).
    """

    def __init__(
        self,
        db: Database,
        writer: GroupCommitWriter,
        settings: Settings,
        relay_id: str | None = None,
        client: httpx.AsyncClient | None = None,
        *,
        mailer: MailSender | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rng: random.Random | None = None,
    ) -> None:
        relay_id = relay_id or default_relay_id()
        if len(relay_id) > _RELAY_ID_CHARS:
            raise ValueError(f"relay_id longer than {_RELAY_ID_CHARS} characters: {relay_id!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.relay_id = relay_id
        self._db = db
        self._writer = writer
        self._settings = settings
        self._client = client
        self._owns_client = client is None
        self._limiter = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()
        self._failure_log = _FailureLog(_FAILURE_LOG_INTERVAL_S)
        self._mail_failure_log = _FailureLog(_FAILURE_LOG_INTERVAL_S, "mail: %d sends failed")
        self._last_claimed = 0
        if mailer is None and settings.smtp_url is not None:
            mailer = SmtpSender(parse_smtp_url(settings.smtp_url.get_secret_value()))
        self._mailer = mailer
        self._mail_from, self._mail_sender = parse_mail_from(settings.mail_from)
        self._mail_limiter = asyncio.Semaphore(min(concurrency, MAIL_CONCURRENCY))
        self._mail_off_warned = -math.inf

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the relay opened it (an injected one is left open)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.data_platform_timeout_s)
        return self._client

    @property
    def sends_mail(self) -> bool:
        """Whether this relay sends mail jobs (``smtp_url`` set, or a mailer given)."""
        return self._mailer is not None

    async def update_metrics(self) -> tuple[int, float]:
        """Refresh the backlog gauges from the database; returns :func:`backlog`'s pair
        (order events; the mail gauges are set too)."""
        found = await self._update_metrics()
        return found.events, found.events_age_s

    async def _update_metrics(self) -> Backlogs:
        async with self._db.read_session() as session:
            found = await backlogs(session)
        OUTBOX_BACKLOG.set(found.events)
        OUTBOX_OLDEST_AGE.set(found.events_age_s)
        MAIL_BACKLOG.set(found.mail)
        MAIL_OLDEST_AGE.set(found.mail_age_s)
        return found

    def _warn_mail_off(self, found: Backlogs) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._mail_off_warned >= _MAIL_OFF_LOG_INTERVAL_S:
            self._mail_off_warned = now
            log.warning(
                "mail is not configured (FLASHSALE_SMTP_URL is unset): %d mail jobs wait in "
                "the outbox, the oldest for %.0f s; they are sent once it is set",
                found.mail,
                found.mail_age_s,
            )

    async def run_once(self) -> int:
        """One round: refresh the gauges, claim a batch, deliver it, record the outcomes.

        Returns the number of rows delivered in this round (events answered 2xx, mails
        accepted by the SMTP server). Claims order events only when
        ``data_platform_url`` is set and mail jobs only when mail is configured, and
        nothing when none of those is waiting (so an idle relay takes no write lock).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed; claimed events stay
                leased until ``outbox_lease_s`` passes, then are taken over.
        """
        self._last_claimed = 0
        found = await self._update_metrics()
        url = self._settings.data_platform_url
        if found.mail and self._mailer is None:
            self._warn_mail_off(found)
        events_due = url is not None and found.events > 0
        mail_due = self._mailer is not None and found.mail > 0
        if not (events_due or mail_due):
            return 0
        kinds: Kinds = "all" if events_due and mail_due else "events" if events_due else "mail"
        loop = asyncio.get_running_loop()
        # Measured before claiming: the lease in the database starts no earlier.
        lease_ends = loop.time() + self._settings.outbox_lease_s
        events = await self._claim(kinds)
        self._last_claimed = len(events)
        if not events:
            return 0
        # Leave time to record the outcome before the lease ends.
        margin = min(1.0, 0.1 * self._settings.outbox_lease_s)
        delivered = await self._deliver_batch(url, events, lease_ends - margin)
        await self.update_metrics()
        return delivered

    async def _claim(self, kinds: Kinds) -> list[ClaimedEvent]:
        """Claim a batch through the writer.

        Cancelled while the claim waits for its batch, it still waits for the claim's
        outcome (the operation is queued and may commit) and hands what it got back
        before passing the cancellation on, so no event waits for the lease.
        """
        now = utcnow()
        lease_s, batch = self._settings.outbox_lease_s, self._settings.outbox_batch_size
        pending = asyncio.ensure_future(
            self._writer.submit(lambda tx: claim(tx, self.relay_id, now, lease_s, batch, kinds))
        )
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            await _run_to_completion(self._release_claim(pending))
            raise

    async def _release_claim(self, pending: asyncio.Future[list[ClaimedEvent]]) -> None:
        await asyncio.wait([pending])
        if pending.cancelled() or pending.exception() is not None:
            return  # nothing was claimed
        await self._record(pending.result(), {})

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until ``stop`` is set or the task is cancelled (the app lifespan's
        background task).

        Rounds follow each other at once while full batches are claimed (a backlog
        drains at full speed), and every ``outbox_poll_s`` otherwise. A failing
        round (database busy or down) is logged and retried after a growing pause
        (≤ 30 s). Setting ``stop`` ends the loop after the current round. Closes
        its own HTTP client on exit.
        """
        poll_s = self._settings.outbox_poll_s
        errors = 0
        task = asyncio.current_task()
        try:
            while stop is None or not stop.is_set():
                if task is not None and task.cancelling():
                    # A cancellation that a library swallowed (seen on Python 3.11 while
                    # deliveries were in flight) must still end the loop.
                    raise asyncio.CancelledError
                try:
                    await self.run_once()
                except Exception as exc:
                    errors += 1
                    if sqlstate := retryable_sqlstate(exc):  # aborted, nothing changed
                        log.info("outbox relay round aborted (SQLSTATE %s); retrying", sqlstate)
                    elif errors & (errors - 1) == 0:  # 1st, 2nd, 4th, 8th ... in a row
                        log.exception("outbox relay round failed (%d in a row); retrying", errors)
                    await _pause(min(30.0, poll_s * 2.0 ** min(errors, 10)), stop)
                    continue
                errors = 0
                if self._last_claimed < self._settings.outbox_batch_size:
                    await _pause(poll_s, stop)
        finally:
            await self.aclose()

    async def _deliver_batch(
        self, url: str | None, events: list[ClaimedEvent], deadline: float
    ) -> int:
        outcomes: dict[int, _Outcome] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for event in events:
                    if event.type == MAIL_JOB:
                        if self._mailer is not None:
                            group.create_task(self._send_mail(event, deadline, outcomes))
                    elif url is not None:
                        group.create_task(self._deliver(url, event, deadline, outcomes))
                    # else: claimed by no route (cannot happen: the claim filters by
                    # kind); released unattempted by _record.
        finally:
            # Also when cancelled (shutdown): keep what was learnt and release the
            # rest, so that no event waits for the lease to expire.
            await _run_to_completion(self._record(events, outcomes))
        return sum(o.ok for o in outcomes.values())

    async def _deliver(
        self, url: str, event: ClaimedEvent, deadline: float, outcomes: dict[int, _Outcome]
    ) -> None:
        async with self._limiter:
            # Never post past the lease: by then another relay may be sending it too.
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining < _MIN_REQUEST_S:
                return  # released unattempted; the next round claims it again
            timeout = min(self._settings.data_platform_timeout_s, remaining)
            try:
                # httpx's timeouts bound each network operation, not the whole request
                # (a server trickling bytes never trips them): bound the total too.
                async with asyncio.timeout(timeout):
                    response = await self._http().post(
                        url,
                        content=event.payload.encode(),
                        headers={
                            "Content-Type": "application/json",
                            "Idempotency-Key": event.event_id,
                        },
                        timeout=timeout,
                    )
            except TimeoutError:
                error = f"TimeoutError: no answer within {timeout:.3g} s"
            except Exception as exc:  # any failure is one failed attempt, never a lost event
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    outcomes[event.id] = _Outcome(ok=True)
                    OUTBOX_DELIVERIES.labels(outcome="delivered").inc()
                    return
                error = f"HTTP {response.status_code}: {response.text[:_BODY_EXCERPT_CHARS]}"
            error = error[:_ERROR_CHARS]
            outcomes[event.id] = _Outcome(ok=False, error=error)
            OUTBOX_DELIVERIES.labels(outcome="failed").inc()
            self._failure_log.note(event, error)
            log.debug("outbox: delivery of %s failed: %s", event.event_id, error)

    async def _send_mail(
        self, event: ClaimedEvent, deadline: float, outcomes: dict[int, _Outcome]
    ) -> None:
        """Send one mail job over SMTP; record its outcome in ``outcomes``."""
        assert self._mailer is not None
        async with self._mail_limiter:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining < _MIN_REQUEST_S:
                return  # released unattempted
            timeout = min(self._settings.smtp_timeout_s, remaining)
            try:
                job = MailJob.from_payload(event.payload)
                message = build_message(job, event.event_id, self._mail_from)
                # aiosmtplib's timeout bounds each command; bound the whole exchange too.
                async with asyncio.timeout(timeout):
                    await self._mailer.send(message, self._mail_sender, job.to, timeout)
            except TimeoutError:
                error = f"TimeoutError: no answer within {timeout:.3g} s"
            except Exception as exc:  # any failure is one failed attempt, never a lost mail
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                outcomes[event.id] = _Outcome(ok=True)
                MAIL_DELIVERIES.labels(outcome="sent").inc()
                return
            error = error[:_ERROR_CHARS]
            outcomes[event.id] = _Outcome(ok=False, error=error)
            MAIL_DELIVERIES.labels(outcome="failed").inc()
            self._mail_failure_log.note(event, error)
            log.debug("mail: sending job %s failed: %s", event.event_id, error)

    async def _record(self, events: list[ClaimedEvent], outcomes: dict[int, _Outcome]) -> None:
        now = utcnow()
        delivered: list[dict[str, object]] = []
        failed: list[dict[str, object]] = []
        released: list[dict[str, object]] = []
        for event in events:
            outcome = outcomes.get(event.id)
            key = {"b_id": event.id, "b_relay": self.relay_id}
            if outcome is None:
                released.append(key)
            elif outcome.ok:
                delivered.append({**key, "b_now": now})
            else:
                delay = backoff_s(
                    event.attempts,
                    self._settings.outbox_backoff_base_s,
                    self._settings.outbox_backoff_max_s,
                    self._rng,
                )
                failed.append(
                    {
                        **key,
                        "b_error": outcome.error,
                        "b_available_at": now + timedelta(seconds=delay),
                    }
                )
        if delivered or failed or released:
            await self._writer.submit(lambda tx: record_outcomes(tx, delivered, failed, released))
        now_s = asyncio.get_running_loop().time()
        self._failure_log.flush(now_s)
        self._mail_failure_log.flush(now_s)
