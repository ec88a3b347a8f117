"""The per-process popularity ranking and how it stays in step with the database.

Each worker process keeps a C++ :class:`~flashsale.SlidingWindowRanking`:

- at start-up it is rebuilt from PAID orders in the window (``record_many``);
- a sale (or cancellation) this process commits is recorded at once (after commit);
- a follower task reads the order events other processes committed to the
  ``outbox`` table (``order.paid`` adds, ``order.cancelled`` subtracts, in the
  bucket of the order's ``paid_at``) every ``ranking_poll_s`` (≤ 2 s) and
  records them.

Outbox ids are never reused (``sqlite_autoincrement``) and, on SQLite, write
transactions are serialised, so ids appear in commit order and the follower can
keep a cursor (the highest id seen). Events this process recorded itself are
skipped by ``event_id``, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flashsale import RankEntry, SlidingWindowRanking
from flashsale.db.models import order_items, orders, outbox

log = logging.getLogger(__name__)

#: Order events the ranking follows, and how each counts.
_SIGN = {"order.paid": 1, "order.cancelled": -1}

#: ``(product_id, quantity)`` lines of one order.
SaleLines = Sequence[tuple[int, int]]


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
    """

    def __init__(self, window_s: int, bucket_s: int) -> None:
        self.ranking = SlidingWindowRanking(window_s, bucket_s)
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._cursor = 0
        #: Event ids this process recorded (or is about to): the follower skips them.
        self._local: set[str] = set()

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
        for product_id, quantity in _aggregate(lines).items():
            self.ranking.record(product_id, sign * quantity, sign, ts)

    # -- rebuilding and following the database -----------------------------------
    async def rebuild(self, session: AsyncSession, now: float | None = None) -> int:
        """Load the window from PAID orders; returns the number of (order, product) rows."""
        now = time.time() if now is None else now
        since = datetime.fromtimestamp(now - self.window_s, UTC)
        # Same read transaction (one snapshot): the orders below and the cursor agree.
        self._cursor = int(
            (await session.execute(select(func.coalesce(func.max(outbox.c.id), 0)))).scalar_one()
        )
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

    async def poll(self, session: AsyncSession) -> int:
        """Record order events committed by other processes since the cursor; returns how many."""
        rows = (
            await session.execute(
                select(
                    outbox.c.id,
                    outbox.c.event_id,
                    outbox.c.type,
                    orders.c.paid_at,
                    order_items.c.product_id,
                    order_items.c.quantity,
                )
                .join(orders, orders.c.id == outbox.c.order_id)
                .join(order_items, order_items.c.order_id == orders.c.id)
                .where(outbox.c.id > self._cursor, outbox.c.type.in_(_SIGN))
                .order_by(outbox.c.id)
            )
        ).all()
        seen: dict[int, tuple[str, str, datetime | None, list[tuple[int, int]]]] = {}
        for outbox_id, event_id, event_type, paid_at, product_id, quantity in rows:
            entry = seen.setdefault(outbox_id, (event_id, event_type, paid_at, []))
            entry[3].append((product_id, quantity))
        recorded = 0
        for outbox_id, (event_id, event_type, paid_at, lines) in seen.items():
            self._cursor = max(self._cursor, outbox_id)
            if event_id in self._local:
                self._local.discard(event_id)
                continue
            if paid_at is not None:
                self.record_sale(lines, paid_at, _SIGN[event_type])
                recorded += 1
        return recorded

    async def poll_with(self, factory: async_sessionmaker[AsyncSession]) -> int:
        """One :meth:`poll` in a fresh read session (the follower's periodic step)."""
        async with factory() as session:
            return await self.poll(session)

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
