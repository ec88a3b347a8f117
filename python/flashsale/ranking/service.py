"""The per-process popularity ranking and how it stays in step with the database.

Each worker process of each instance keeps a C++ :class:`~flashsale.SlidingWindowRanking`:

- at start-up it is rebuilt from PAID orders in the window (``record_many``);
- a sale (or cancellation) this process commits is recorded at once (after commit);
- a follower task reads the order events other processes and instances committed
  to the ``outbox`` table (``order.paid`` adds, ``order.cancelled`` subtracts, in
  the bucket of the order's ``paid_at``) every ``ranking_poll_s`` (≤ 2 s) and
  records them.

Order events travel between instances through the database, not Redis: they are
already written in the order's own transaction (the transactional outbox), so they
exist exactly when the sale does, survive every crash, and need no second system
to stay consistent with the orders (the database is the source of truth; see
docs/decisions/0004-ranking-follower-on-the-outbox.md).

**Following ids that commit out of order.** Outbox ids are never reused, but on
PostgreSQL a transaction that took id 7 may commit after the one that took id 8, so
"the highest id seen" alone would skip 7 for ever. The follower therefore keeps a
cursor (the highest id seen) *and* the gaps below it: ids it has not seen yet,
each remembered for ``gap_timeout_s`` (longer than any order transaction). Every
poll asks for ``id > cursor OR id IN (gaps)``; a gap that appears is recorded then
and dropped from the gaps; a gap never filled belonged to a rolled-back transaction
and expires. On SQLite writers are serialised, ids appear in commit order and the
gap set stays empty. Events this process recorded itself are skipped by
``event_id``, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale import RankEntry, SlidingWindowRanking
from flashsale.db.dialect import dialect_name
from flashsale.db.models import order_items, orders, outbox

log = logging.getLogger(__name__)

#: Order events the ranking follows, and how each counts.
_SIGN = {"order.paid": 1, "order.cancelled": -1}

#: Most unseen ids the follower waits for at once (a larger jump in ids is not waited for).
MAX_GAPS = 10_000

#: ``(product_id, quantity)`` lines of one order.
SaleLines = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Followed:
    """What one :meth:`RankingService.poll` took from other processes' order events."""

    #: Events recorded (paid orders added, cancelled ones subtracted).
    recorded: int
    #: Variants those orders sold or gave back.
    variant_ids: frozenset[int]


def _aggregate(lines: SaleLines) -> dict[int, int]:
    per_product: dict[int, int] = {}
    for product_id, quantity in lines:
        per_product[product_id] = per_product.get(product_id, 0) + quantity
    return per_product


class RankingService:
    """Sliding-window sales ranking of one process.

    Args:
        window_s: seconds kept in memory (the longest window served; 7 days).
        bucket_s: bucket width in seconds (``FLASHSALE_RANKING_BUCKET_S``).
        gap_timeout_s: how long an unseen outbox id below the cursor is waited for
            (``FLASHSALE_RANKING_GAP_TIMEOUT_S``); see the module docstring.
    """

    def __init__(self, window_s: int, bucket_s: int, gap_timeout_s: float = 60.0) -> None:
        self.ranking = SlidingWindowRanking(window_s, bucket_s)
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.gap_timeout_s = gap_timeout_s
        self._cursor = 0
        #: Outbox ids below the cursor not seen yet -> monotonic time they are given up.
        self._gaps: dict[int, float] = {}
        #: Event ids this process recorded (or is about to): the follower skips them.
        self._local: set[str] = set()
        #: Called with the product ids of every sale or cancellation recorded, this
        #: process's own or followed (the catalog read cache listens).
        self.on_record: list[Callable[[Collection[int]], None]] = []

    # -- this process's own sales ------------------------------------------------
    def claim(self, event_id: str) -> None:
        """Mark an outbox event as this process's before its commit (the follower skips it)."""
        self._local.add(event_id)

    def unclaim(self, event_id: str) -> None:
        """The event's transaction rolled back."""
        self._local.discard(event_id)

    def record_sale(self, lines: SaleLines, paid_at: datetime, sign: int = 1) -> None:
        """Record a committed sale (``sign=-1`` subtracts a cancelled one).

        ``lines`` are ``(product_id, quantity)``; each product counts one order.
        """
        ts = paid_at.timestamp()
        per_product = _aggregate(lines)
        for product_id, quantity in per_product.items():
            self.ranking.record(product_id, sign * quantity, sign, ts)
        for listener in self.on_record:
            listener(per_product.keys())

    # -- rebuilding and following the database -----------------------------------
    async def rebuild(self, session: AsyncSession, now: float | None = None) -> int:
        """Load the window from PAID orders; returns the number of (order, product) rows.

        Runs in one snapshot (``REPEATABLE READ`` on PostgreSQL; a SQLite read
        transaction is one already): the orders read and the follower's cursor and
        gaps agree, so an order committed meanwhile is picked up by :meth:`poll`
        exactly once.
        """
        if dialect_name(session) == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        now = time.time() if now is None else now
        since = datetime.fromtimestamp(now - self.window_s, UTC)
        # Ids missing after the newest event older than the gap timeout may belong to
        # transactions still running: they become the follower's gaps.
        recent_since = datetime.fromtimestamp(now - self.gap_timeout_s, UTC)
        last_id = func.coalesce(func.max(outbox.c.id), 0)
        settled = (
            await session.execute(select(last_id).where(outbox.c.created_at < recent_since))
        ).scalar_one()
        recent = (await session.execute(select(outbox.c.id).where(outbox.c.id > settled))).scalars()
        self._cursor = int(settled)
        self._gaps.clear()
        self._advance(sorted(recent), time.monotonic())
        rows = (
            await session.execute(
                select(
                    order_items.c.product_id,
                    func.sum(order_items.c.quantity),
                    orders.c.paid_at,
                )
                .join(orders, orders.c.id == order_items.c.order_id)
                .where(orders.c.status == "PAID", orders.c.paid_at >= since)
                .group_by(orders.c.id, order_items.c.product_id, orders.c.paid_at)
            )
        ).all()
        self.ranking.clear()
        if rows:
            self.ranking.record_many(
                [r[0] for r in rows],
                [int(r[1]) for r in rows],
                [1] * len(rows),
                [r[2].timestamp() for r in rows],
            )
        return len(rows)

    def _advance(self, ids: Sequence[int], now: float) -> None:
        """Take note of outbox ``ids`` (ascending) seen: fill gaps, open new ones (ids
        skipped above the cursor), move the cursor."""
        deadline = now + self.gap_timeout_s
        previous = self._cursor
        for outbox_id in ids:
            if outbox_id <= self._cursor:
                self._gaps.pop(outbox_id, None)
                continue
            missing = outbox_id - previous - 1
            if 0 < missing <= MAX_GAPS:
                for gap in range(previous + 1, outbox_id):
                    self._gaps[gap] = deadline
            elif missing > MAX_GAPS:
                log.warning(
                    "outbox ids jump by %d after %d: not waiting for them", missing, previous
                )
            previous = self._cursor = outbox_id
        for gap in [g for g, until in self._gaps.items() if until <= now]:
            del self._gaps[gap]  # a rolled-back transaction's id: never coming
        if len(self._gaps) > MAX_GAPS:
            for gap in sorted(self._gaps)[: len(self._gaps) - MAX_GAPS]:
                del self._gaps[gap]

    async def poll(self, session: AsyncSession) -> Followed:
        """Record order events committed by other processes since the last poll (ids
        above the cursor and gaps filled meanwhile).

        Returns how many were recorded and the variants they sold or gave back, whose
        stock the caller may re-read for its gate.
        """
        seen_where = outbox.c.id > self._cursor
        if self._gaps:
            seen_where = or_(seen_where, outbox.c.id.in_(sorted(self._gaps)))
        rows = (
            await session.execute(
                select(
                    outbox.c.id,
                    outbox.c.event_id,
                    outbox.c.type,
                    orders.c.paid_at,
                    order_items.c.product_id,
                    order_items.c.quantity,
                    order_items.c.variant_id,
                )
                .outerjoin(orders, orders.c.id == outbox.c.order_id)
                .outerjoin(order_items, order_items.c.order_id == orders.c.id)
                .where(seen_where)
                .order_by(outbox.c.id)
            )
        ).all()
        events: dict[int, tuple[str, str, datetime | None, list[tuple[int, int, int]]]] = {}
        for outbox_id, event_id, event_type, paid_at, product_id, quantity, variant_id in rows:
            entry = events.setdefault(outbox_id, (event_id, event_type, paid_at, []))
            if product_id is not None:
                entry[3].append((product_id, quantity, variant_id))
        self._advance(list(events), time.monotonic())
        recorded = 0
        variant_ids: set[int] = set()
        for event_id, event_type, paid_at, lines in events.values():
            if event_id in self._local:
                self._local.discard(event_id)
                continue
            if event_type in _SIGN and paid_at is not None and lines:
                self.record_sale([(p, q) for p, q, _ in lines], paid_at, _SIGN[event_type])
                variant_ids.update(v for _, _, v in lines)
                recorded += 1
        return Followed(recorded, frozenset(variant_ids))

    @property
    def pending_gaps(self) -> int:
        """Outbox ids below the cursor the follower is still waiting for."""
        return len(self._gaps)

    # -- reading -------------------------------------------------------------------
    def top(self, k: int, *, days: int, metric: str, now: float | None = None) -> list[RankEntry]:
        """Top ``k`` products over the last ``days`` days by ``metric`` ("quantity"|"orders")."""
        now = time.time() if now is None else now
        return self.ranking.top(k, now, metric, days * 86400)

    def window_bounds(self, days: int, now: float | None = None) -> tuple[datetime, datetime]:
        """The UTC ``[start, end)`` covered by :meth:`top` (whole buckets)."""
        now = time.time() if now is None else now
        end_bucket = int(now // self.bucket_s) + 1
        start_bucket = end_bucket - (days * 86400) // self.bucket_s
        return (
            datetime.fromtimestamp(start_bucket * self.bucket_s, UTC),
            datetime.fromtimestamp(end_bucket * self.bucket_s, UTC),
        )
