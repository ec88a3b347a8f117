"""Per-process admission gates in front of the database (docs/architecture.md#gates).

:class:`StockGate` wraps the C++ :class:`~flashsale.StockPool` and
:class:`CouponIssueGate` the C++ :class:`~flashsale.CouponGate`. They turn away
the hopeless majority of a flash crowd (sold out, already issued) without a
database round trip and admit only requests that can still succeed; the
database then confirms every grant with a conditional write. Rules:

- A grant by the gate is never final: the database's answer is. When the
  database refuses what the gate admitted, the caller corrects the gate from the
  database (:meth:`StockGate.learn`, :meth:`CouponIssueGate.learn_sold_out`).
- Freshness: a local "sold out" may be stale only for ``freshness_s``
  (default 1 s). A rejection based on an older value is re-checked against the
  database first, so a restock, cancellation or expiry in another process is
  never hidden for longer than the bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flashsale import CouponGate, IssueResult, StockPool
from flashsale.db.models import coupons, user_coupons, variants
from flashsale.errors import CouponNotFound, VariantNotFound
from flashsale.metrics import GATE_REJECTIONS

Line = tuple[int, int]
CouponTerms = tuple[datetime | None, datetime | None, int]
#: A refusal a coupon gate can give from memory (:meth:`CouponIssueGate.refusal`).
Refusal = Literal["ALREADY_ISSUED", "SOLD_OUT", "STALE"]

# Rejections answered by a gate, before any database write (bound once: hot path).
_STOCK_SHORT = GATE_REJECTIONS.labels(gate="stock", reason="out_of_stock")
_STOCK_CONTENDED = GATE_REJECTIONS.labels(gate="stock", reason="contended")
_COUPON_SOLD_OUT = GATE_REJECTIONS.labels(gate="coupon", reason="sold_out")
_COUPON_HELD = GATE_REJECTIONS.labels(gate="coupon", reason="already_issued")


class _SingleFlight:
    """One database re-read per key at a time: callers that need the same re-read
    while it runs await that one instead of starting their own.

    In a rush thousands of requests per second meet the same stale "sold out"; without
    this each would read the database at once, every freshness period.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[None]] = {}

    async def run(self, key: Hashable, read: Callable[[], Awaitable[None]]) -> None:
        """Run ``read()`` for ``key`` unless one is running; await it either way.

        Raises:
            whatever ``read()`` raised, to every caller that awaited it.
        """
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(read())
            self._running[key] = running
            running.add_done_callback(lambda _done: self._running.pop(key, None))
        # Shielded: a caller that goes away does not cancel the others' re-read.
        await asyncio.shield(running)


Reader = async_sessionmaker[AsyncSession]

_STOCK_OF_VARIANTS = select(variants.c.id, variants.c.stock).where(
    variants.c.id.in_(bindparam("p_ids", expanding=True))
)


class StockGate:
    """Stock admission for order lines ``[(variant_id, quantity), ...]``."""

    def __init__(self, freshness_s: float = 1.0) -> None:
        self.pool = StockPool()
        self.freshness_s = freshness_s
        self._synced_at: dict[int, float] = {}
        self._rereads = _SingleFlight()
        #: Called with product ids by :meth:`stock_changed` (the catalog read cache listens).
        self.on_change: list[Callable[[Collection[int]], None]] = []

    def stock_changed(self, product_ids: Collection[int]) -> None:
        """A committed transaction of this process changed the stock of these products:
        tell the :attr:`on_change` listeners (call it after commit)."""
        for listener in self.on_change:
            listener(product_ids)

    def learn(self, variant_id: int, stock: int) -> None:
        """Learn the database's stock of a variant (units, ≥ 0)."""
        self.pool.set(variant_id, stock)
        self._synced_at[variant_id] = time.monotonic()

    async def load_all(self, session: AsyncSession) -> int:
        """Load every variant's stock from the database; returns how many."""
        rows = (await session.execute(select(variants.c.id, variants.c.stock))).all()
        for variant_id, stock in rows:
            self.learn(variant_id, stock)
        return len(rows)

    def refresh(self, conn: Connection, variant_ids: Iterable[int]) -> set[int]:
        """Re-read the given variants from the database; returns the ids that exist."""
        ids = sorted(set(variant_ids))
        rows = conn.execute(_STOCK_OF_VARIANTS, {"p_ids": ids}).all()
        for variant_id, stock in rows:
            self.learn(variant_id, stock)
        return {row[0] for row in rows}

    def _stale_shortfalls(self, lines: Sequence[Line]) -> list[int]:
        now = time.monotonic()
        stale = []
        for variant_id, quantity in lines:
            if (
                self.pool.available(variant_id) < quantity
                and now - self._synced_at.get(variant_id, 0.0) > self.freshness_s
            ):
                stale.append(variant_id)
        return stale

    def reserve(self, conn: Connection, lines: Sequence[Line]) -> Line | None:
        """Try to hold ``lines`` in the gate.

        Returns ``None`` when admitted (the caller must :meth:`release` if the
        database refuses or the transaction fails), or the first
        ``(variant_id, available)`` that is short. Variants unknown to the gate,
        and short ones whose local value is older than the freshness bound, are
        re-read from ``conn`` before the answer.

        Raises:
            flashsale.errors.VariantNotFound: a variant does not exist.
        """
        unknown = [variant_id for variant_id, _ in lines if variant_id not in self.pool]
        if unknown:
            # Created by another process since start-up, or not a variant at all.
            found = self.refresh(conn, unknown)
            missing = [v for v in unknown if v not in found]
            if missing:
                raise VariantNotFound(variant_id=missing[0])
        if self.pool.try_reserve(lines):
            return None
        stale = self._stale_shortfalls(lines)
        if stale:
            self.refresh(conn, stale)
            if self.pool.try_reserve(lines):
                return None
        for variant_id, quantity in lines:
            available = self.pool.available(variant_id)
            if available < quantity:
                _STOCK_SHORT.inc()
                return variant_id, available
        # Lost a race against concurrent reservations of the same units.
        _STOCK_CONTENDED.inc()
        return lines[0][0], self.pool.available(lines[0][0])

    def shortfall(self, lines: Sequence[Line]) -> Line | Literal["STALE"] | None:
        """What this process knows of ``lines`` without reserving anything or asking
        the database: the first ``(variant_id, available)`` that is short, ``"STALE"``
        when a short variant's local value is older than the freshness bound (re-read
        it with :meth:`reread`), ``None`` when the lines may succeed or a variant has
        not been loaded here.

        This is what lets a flash crowd's losers be answered before any session opens.
        """
        now = time.monotonic()
        stale = False
        for variant_id, quantity in lines:
            if variant_id not in self.pool:
                return None
            available = self.pool.available(variant_id)
            if available < quantity:
                if now - self._synced_at.get(variant_id, 0.0) > self.freshness_s:
                    stale = True
                else:
                    _STOCK_SHORT.inc()
                    return variant_id, available
        return "STALE" if stale else None

    async def reread(self, reader: Reader, variant_ids: Iterable[int]) -> None:
        """Re-read the stock of ``variant_ids`` in a read-only session of ``reader``;
        concurrent calls for the same variants share one read."""
        ids = tuple(sorted(set(variant_ids)))

        async def read() -> None:
            async with reader() as session:
                await session.run_sync(lambda sync: self.refresh(sync.connection(), ids))

        await self._rereads.run(ids, read)

    def withdraw(self, lines: Sequence[Line]) -> None:
        """Take back units given by :meth:`release` whose release did not commit after all.

        If some were reserved meanwhile the gate keeps them and over-counts for a while:
        the database refuses what is not there, and the gate learns its stock then.
        """
        known = [line for line in lines if line[0] in self.pool]
        if known and not self.pool.try_reserve(known):
            for variant_id, quantity in known:  # what is still there of each
                take = min(quantity, self.pool.available(variant_id))
                if take > 0:
                    self.pool.try_reserve([(variant_id, take)])

    def release(self, lines: Sequence[Line]) -> None:
        """Give units back: a reservation the database did not confirm, or units a
        cancellation or expiry released. Variants this process has never loaded are
        skipped (it reads them from the database on first sight)."""
        known = [line for line in lines if line[0] in self.pool]
        if known:
            self.pool.release(known)


_COUPON_COLUMNS = (
    coupons.c.id,
    coupons.c.total_quantity - coupons.c.issued_count,
    coupons.c.issue_starts_at,
    coupons.c.issue_ends_at,
    coupons.c.valid_days,
)


_COUPON_ROW = select(*_COUPON_COLUMNS).where(coupons.c.id == bindparam("p_coupon"))
_HOLDER = select(user_coupons.c.id).where(
    user_coupons.c.coupon_id == bindparam("p_coupon"), user_coupons.c.user_id == bindparam("p_user")
)


class CouponIssueGate:
    """First-come coupon admission: at most one per user, no more than the quantity."""

    def __init__(self, freshness_s: float = 1.0) -> None:
        self.gate = CouponGate()
        self.freshness_s = freshness_s
        self._synced_at: dict[int, float] = {}
        self._rereads = _SingleFlight()
        #: Immutable issue terms per coupon: ``(issue_starts_at, issue_ends_at, valid_days)``.
        self.terms: dict[int, CouponTerms] = {}

    def configure(self, coupon_id: int, remaining: int, terms: CouponTerms | None = None) -> None:
        """Learn the database's remaining quantity (and issue terms) of a coupon."""
        self.gate.configure(coupon_id, max(remaining, 0), 1)
        self._synced_at[coupon_id] = time.monotonic()
        if terms is not None:
            self.terms[coupon_id] = terms

    async def load_all(self, session: AsyncSession) -> int:
        """Load every coupon's remaining count and holders; returns the coupon count."""
        rows = (await session.execute(select(*_COUPON_COLUMNS))).all()
        for coupon_id, remaining, starts, ends, valid_days in rows:
            self.configure(coupon_id, remaining, (starts, ends, valid_days))
        holders = await session.execute(select(user_coupons.c.coupon_id, user_coupons.c.user_id))
        for coupon_id, user_id in holders:
            self.gate.mark_issued(coupon_id, user_id)
        return len(rows)

    def _refresh(self, conn: Connection, coupon_id: int, user_id: int) -> bool:
        row = conn.execute(_COUPON_ROW, {"p_coupon": coupon_id}).first()
        if row is None:
            return False
        self.configure(coupon_id, row[1], (row[2], row[3], row[4]))
        held = conn.execute(_HOLDER, {"p_coupon": coupon_id, "p_user": user_id}).first()
        if held is not None:
            self.gate.mark_issued(coupon_id, user_id)
        return True

    def refusal(self, coupon_id: int, user_id: int) -> Refusal | None:
        """What this process can answer from memory alone, without reserving anything:
        ``ALREADY_ISSUED``, or ``SOLD_OUT`` while the local count is fresh (checked in
        the order of :meth:`try_issue`); ``STALE`` for a "sold out" older than the
        freshness bound (re-read it with :meth:`reread`); ``None`` when the request
        may succeed or the coupon is unknown here.
        """
        if coupon_id not in self.gate:
            return None
        if self.gate.issued_to(coupon_id, user_id) > 0:
            _COUPON_HELD.inc()
            return "ALREADY_ISSUED"
        if self.gate.remaining(coupon_id) <= 0:
            if time.monotonic() - self._synced_at.get(coupon_id, 0.0) > self.freshness_s:
                return "STALE"
            _COUPON_SOLD_OUT.inc()
            return "SOLD_OUT"
        return None

    async def reread(self, reader: Reader, coupon_id: int) -> None:
        """Re-read a coupon's remaining count in a read-only session of ``reader``;
        concurrent calls for the same coupon share one read."""

        async def read() -> None:
            async with reader() as session:
                row = (await session.execute(_COUPON_ROW, {"p_coupon": coupon_id})).first()
            if row is not None:
                self.configure(coupon_id, row[1], (row[2], row[3], row[4]))

        await self._rereads.run(coupon_id, read)

    def terms_of(self, conn: Connection, coupon_id: int, user_id: int) -> CouponTerms:
        """The coupon's issue terms, loaded on first use.

        Raises:
            CouponNotFound: unknown coupon (404).
        """
        terms = self.terms.get(coupon_id)
        if terms is None:
            if not self._refresh(conn, coupon_id, user_id):
                raise CouponNotFound(coupon_id=coupon_id)
            terms = self.terms[coupon_id]
        return terms

    def try_issue(self, conn: Connection, coupon_id: int, user_id: int) -> IssueResult:
        """Admit or refuse one issue request.

        ``ISSUED`` means admitted: the caller must confirm it in the database and
        call :meth:`revoke` if that fails. A local ``SOLD_OUT`` older than the
        freshness bound is re-checked against the database first.

        Raises:
            flashsale.errors.CouponNotFound: unknown coupon.
        """
        if coupon_id not in self.gate and not self._refresh(conn, coupon_id, user_id):
            raise CouponNotFound(coupon_id=coupon_id)
        result = self.gate.try_issue(coupon_id, user_id)
        if (
            result == IssueResult.SOLD_OUT
            and time.monotonic() - self._synced_at.get(coupon_id, 0.0) > self.freshness_s
        ):
            self._refresh(conn, coupon_id, user_id)
            result = self.gate.try_issue(coupon_id, user_id)
        if result == IssueResult.SOLD_OUT:
            _COUPON_SOLD_OUT.inc()
        elif result == IssueResult.ALREADY_ISSUED:
            _COUPON_HELD.inc()
        return result

    def revoke(self, coupon_id: int, user_id: int) -> None:
        """Undo an admission the database did not confirm."""
        self.gate.revoke(coupon_id, user_id)

    def learn_sold_out(self, coupon_id: int) -> None:
        """The database says none are left."""
        self.configure(coupon_id, 0)

    def learn_issued(self, coupon_id: int, user_id: int) -> None:
        """The database says the user already holds this coupon."""
        self.gate.mark_issued(coupon_id, user_id)
