"""Background tasks every instance runs in its lifespan.

- Expiry sweeper: every ``order_expiry_sweep_s`` seconds, PENDING orders past
  ``expires_at`` become EXPIRED and release stock and coupon. Each batch is one
  short write transaction; the conditional status change makes concurrent
  sweepers in several instances (and payments racing them) safe.
- Idempotency-key purge: keys older than ``idempotency_ttl_s`` are deleted about
  once a minute; so are the refresh tokens past their ``expires_at``.

:func:`run_every` drives these and the other periodic tasks (ranking follower,
outbox relay) and stops them between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

from flashsale.api.idempotency import has_expired_keys, purge_expired_keys
from flashsale.api.state import AppState
from flashsale.auth.repository import has_expired_tokens
from flashsale.auth.sessions import purge_expired_op
from flashsale.db.dialect import retryable_sqlstate
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.orders.service import expire_overdue_op, has_overdue

log = logging.getLogger(__name__)

#: Seconds between idempotency-key purges.
PURGE_INTERVAL_S = 60.0
#: Orders expired per transaction (keeps the write lock short).
EXPIRY_BATCH = 50


async def sweep_once(state: AppState) -> int:
    """Expire every overdue PENDING order, ``EXPIRY_BATCH`` per writer operation;
    returns how many.

    A read looks first, so an instance with nothing to expire never takes the
    write lock (on SQLite one writer at a time serves the whole machine). The
    expiries go through the group-commit writer with the orders.
    """
    total = 0
    async with transaction(state.db.read_session) as session:
        if not await has_overdue(session):
            return 0
    op = partial(expire_overdue_op, gate=state.stock_gate, limit=EXPIRY_BATCH)
    while True:
        expired = await state.writer.submit(op)
        total += len(expired)
        if len(expired) < EXPIRY_BATCH:
            return total


class Maintenance:
    """The expiry sweep and the key purge as one periodic step."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.db = state.db
        self.ttl_s = state.settings.idempotency_ttl_s
        self._next_purge = 0.0

    async def step(self) -> None:
        """Sweep overdue orders; purge old idempotency keys and expired refresh tokens
        when due."""
        expired = await sweep_once(self.state)
        if expired:
            log.info("expired %d unpaid orders", expired)
        if time.monotonic() >= self._next_purge:
            now = utcnow()
            cutoff = now - timedelta(seconds=self.ttl_s)
            async with transaction(self.db.read_session) as session:
                due = await has_expired_keys(session, cutoff)
                tokens_due = await has_expired_tokens(session, now)
            if due:
                await self.state.writer.submit(partial(purge_expired_keys, cutoff=cutoff))
            if tokens_due:
                await self.state.writer.submit(partial(purge_expired_op, now=now))
            self._next_purge = time.monotonic() + PURGE_INTERVAL_S


async def follow_order_events(state: AppState) -> int:
    """One step of the follower: record the order events other processes and instances
    committed (:meth:`RankingService.poll`) and re-read the stock of the variants they
    sold or gave back, so this process's gate learns a sell-out (or a cancellation's
    units) elsewhere without waiting for a refusal. Recording an event also drops the
    read cache's entries for its products and its popular answers (the ranking's
    ``on_record`` listener, wired in ``build_state``). Returns the events recorded."""
    async with state.db.read_session() as session:
        followed = await state.ranking.poll(session)
        if followed.variant_ids:
            await session.run_sync(
                lambda sync: state.stock_gate.refresh(sync.connection(), followed.variant_ids)
            )
    return followed.recorded


async def run_every(
    interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]], name: str
) -> None:
    """Run ``step`` every ``interval_s`` seconds until ``stop`` is set.

    A failing step is logged and retried next time. Stopping waits for the
    current step: cancelling one in the middle of a database call would leave
    its connection unclosed.
    """
    while not stop.is_set():
        try:
            await step()
        except Exception as exc:
            if sqlstate := retryable_sqlstate(exc):  # aborted by the database, nothing changed
                log.info("%s aborted (SQLSTATE %s); retrying in %.1f s", name, sqlstate, interval_s)
            else:
                log.exception("%s failed; retrying in %.1f s", name, interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Ask the tasks to stop, wait up to ``grace_s`` seconds, then cancel the rest."""
    stop.set()
    _done, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
