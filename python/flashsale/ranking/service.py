"""The per-process popularity ranking and how it stays in step with the database.

Each worker process keeps a C++ :class:`~flashsale.SlidingWindowRanking`:

- at start-up it is rebuilt from PAID orders in the window (``record_many``);
- a sale this process commits is recorded at once (after commit);
- a follower task reads orders committed by other processes from the orders
  table every ``ranking_poll_s`` (≤ 2 s, the issue's bound) and records them.

Order ids are never reused (``sqlite_autoincrement``) and, on SQLite, write
transactions are serialised, so ids appear in commit order and the follower can
keep a cursor (the highest id seen). Orders this process recorded itself are
skipped, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flashsale import RankEntry, SlidingWindowRanking
from flashsale.db.models import order_items, orders

log = logging.getLogger(__name__)

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
        #: Order ids this process recorded (or is about to): the follower skips them.
        self._local: set[int] = set()

    # -- this process's own sales ------------------------------------------------
    def claim(self, order_id: int) -> None:
        """Mark ``order_id`` as this process's before its commit (the follower skips it)."""
        self._local.add(order_id)

    def unclaim(self, order_id: int) -> None:
        """The order's transaction rolled back."""
        self._local.discard(order_id)

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
        self._cursor = int(
            (await session.execute(select(func.coalesce(func.max(orders.c.id), 0)))).scalar_one()
        )
        rows = (
            await session.execute(
                select(
                    order_items.c.product_id,
                    func.sum(order_items.c.quantity),
                    orders.c.paid_at,
                )
                .join(orders, orders.c.id == order_items.c.order_id)
                .where(
                    orders.c.status == "PAID",
                    orders.c.paid_at >= since,
                    orders.c.id <= self._cursor,
                )
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
        """Record PAID orders committed by other processes since the cursor; returns how many."""
        rows = (
            await session.execute(
                select(
                    orders.c.id,
                    orders.c.status,
                    orders.c.paid_at,
                    order_items.c.product_id,
                    order_items.c.quantity,
                )
                .join(order_items, order_items.c.order_id == orders.c.id)
                .where(orders.c.id > self._cursor)
                .order_by(orders.c.id)
            )
        ).all()
        seen: dict[int, tuple[str, datetime | None, list[tuple[int, int]]]] = {}
        for order_id, status, paid_at, product_id, quantity in rows:
            seen.setdefault(order_id, (status, paid_at, []))[2].append((product_id, quantity))
        recorded = 0
        for order_id, (status, paid_at, lines) in seen.items():
            self._cursor = max(self._cursor, order_id)
            if order_id in self._local:
                self._local.discard(order_id)
                continue
            if status == "PAID" and paid_at is not None:
                self.record_sale(lines, paid_at)
                recorded += 1
        return recorded

    async def follow(self, factory: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        """Poll forever (a background task of the app's lifespan)."""
        while True:
            try:
                async with factory() as session:
                    await self.poll(session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ranking follower poll failed; retrying")
            await asyncio.sleep(interval_s)

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
