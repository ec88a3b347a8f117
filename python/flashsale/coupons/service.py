"""Coupon rules: issue window, first come first served, one per user.

Issuing is admitted by the per-process C++ gate and confirmed by the database
(docs/architecture.md#gates): ``issued_count`` is raised only while below ``total_quantity``
(a conditional ``UPDATE``) and ``(coupon_id, user_id)`` is unique, so the count
is exact across any number of processes. When the database refuses, the gate's
admission is revoked and the gate learns the database's answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale import IssueResult
from flashsale.catalog.service import window_is_open
from flashsale.coupons.schemas import CouponIn, CouponOut, IssueOut, MyCouponOut
from flashsale.db.models import coupons, user_coupons
from flashsale.db.prepared import Prepared
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx, run_in_session
from flashsale.errors import (
    CouponAlreadyIssued,
    CouponNotFound,
    CouponNotIssuable,
    CouponSoldOut,
    FlashsaleError,
)
from flashsale.gates import CouponIssueGate, Reader
from flashsale.metrics import COUPON_ISSUES, observe_coupon_issue

# Built once (the issue path's statements run under the flash crowd).
_INSERT_USER_COUPON = Prepared(
    insert(user_coupons).returning(user_coupons.c.id),
    columns=["coupon_id", "user_id", "status", "issued_at", "expires_at"],
)
_COUNT_ISSUE = Prepared(
    update(coupons)
    .where(
        coupons.c.id == bindparam("p_coupon"),
        coupons.c.issued_count < coupons.c.total_quantity,
    )
    .values(issued_count=coupons.c.issued_count + 1)
    .returning(coupons.c.id)
)


def compute_discount(
    total: int, discount_type: str, discount_value: int, max_discount: int | None
) -> int:
    """Discount in KRW for an order ``total`` (the rule is in docs/rules.md).

    FIXED takes ``discount_value``; PERCENT takes ``floor(total × value / 100)``
    capped at ``max_discount``; the result never exceeds ``total``.
    """
    if discount_type == "FIXED":
        discount = discount_value
    elif discount_type == "PERCENT":
        discount = total * discount_value // 100
    else:
        raise ValueError(f"unknown discount type {discount_type!r}")
    if max_discount is not None:
        discount = min(discount, max_discount)
    return max(0, min(discount, total))


def coupon_out(row: Any) -> CouponOut:
    """A coupon row (``coupons`` columns) as its API shape."""
    return CouponOut(
        id=row.id,
        name=row.name,
        discount_type=row.discount_type,
        discount_value=row.discount_value,
        max_discount_amount=row.max_discount_amount,
        min_order_amount=row.min_order_amount,
        total_quantity=row.total_quantity,
        remaining_quantity=row.total_quantity - row.issued_count,
        issue_starts_at=row.issue_starts_at,
        issue_ends_at=row.issue_ends_at,
        valid_days=row.valid_days,
    )


async def get_coupon(session: AsyncSession, coupon_id: int) -> CouponOut:
    """Raises: CouponNotFound (404)."""
    row = (await session.execute(select(coupons).where(coupons.c.id == coupon_id))).first()
    if row is None:
        raise CouponNotFound(coupon_id=coupon_id)
    return coupon_out(row)


def create_coupon_op(tx: Tx, *, body: CouponIn) -> CouponOut:
    """Insert a coupon with nothing issued yet (a writer operation)."""
    row = tx.conn.execute(
        insert(coupons)
        .values(**body.model_dump(), issued_count=0, created_at=utcnow())
        .returning(*coupons.c)
    ).one()
    return coupon_out(row)


async def create_coupon(session: AsyncSession, body: CouponIn) -> CouponOut:
    """:func:`create_coupon_op` in ``session``'s transaction (``flashsale seed``)."""
    return await run_in_session(session, partial(create_coupon_op, body=body))


_ISSUED = COUPON_ISSUES.labels(outcome="issued")


async def refuse_early(
    gate: CouponIssueGate, reader: Reader, coupon_id: int, user_id: int, now: datetime
) -> None:
    """Answer a hopeless issue request from this process's memory, before any write
    session opens.

    Checks, in the order of :func:`issue`, only what the gate knows: the issue window
    of a coupon already loaded (:func:`~flashsale.catalog.service.window_is_open`),
    then the gate's ``ALREADY_ISSUED``/``SOLD_OUT``. A
    "sold out" older than the freshness bound is re-read first (one read-only query
    shared by every request that meets it, in a session of ``reader``). Returns when
    the request may succeed (or the gate cannot tell); :func:`issue` then decides
    with the database. Refusals are counted like :func:`issue`'s.

    Raises:
        CouponNotIssuable, CouponAlreadyIssued, CouponSoldOut (409).
    """
    terms = gate.terms.get(coupon_id)
    if terms is None:
        return
    error: FlashsaleError | None = None
    starts, ends, _valid_days = terms
    if not window_is_open(starts, ends, now):
        error = CouponNotIssuable(coupon_id=coupon_id, issue_starts_at=starts, issue_ends_at=ends)
    else:
        refusal = gate.refusal(coupon_id, user_id)
        if refusal == "STALE":
            await gate.reread(reader, coupon_id)
            refusal = gate.refusal(coupon_id, user_id)
        if refusal == "ALREADY_ISSUED":
            error = CouponAlreadyIssued(coupon_id=coupon_id)
        elif refusal == "SOLD_OUT":
            error = CouponSoldOut(coupon_id=coupon_id)
    if error is not None:
        observe_coupon_issue(error.code)
        raise error


async def issue(
    session: AsyncSession,
    gate: CouponIssueGate,
    coupon_id: int,
    user_id: int,
    *,
    now: datetime | None = None,
) -> IssueOut:
    """:func:`issue_op` in ``session``'s transaction (``flashsale seed``, tests)."""
    return await run_in_session(
        session, partial(issue_op, gate=gate, coupon_id=coupon_id, user_id=user_id, now=now)
    )


def issue_op(
    tx: Tx,
    *,
    gate: CouponIssueGate,
    coupon_id: int,
    user_id: int,
    now: datetime | None = None,
) -> IssueOut:
    """Issue one coupon to ``user_id``, first come first served (a writer operation).

    ``now`` (UTC) defaults to the current time; ``flashsale seed`` passes past times.

    Every call is counted in ``flashsale_coupon_issues_total`` by outcome: a
    refusal by its error code, an issue once the transaction has committed.

    Raises:
        CouponNotFound: unknown coupon (404).
        CouponNotIssuable: outside the issue window (409).
        CouponAlreadyIssued: the user holds it already (409).
        CouponSoldOut: none left (409).
    """
    try:
        issued = _issue(tx, gate, coupon_id, user_id, utcnow() if now is None else now)
    except FlashsaleError as exc:
        observe_coupon_issue(exc.code)
        raise
    tx.after_commit(_ISSUED.inc)
    return issued


def _issue(tx: Tx, gate: CouponIssueGate, coupon_id: int, user_id: int, now: datetime) -> IssueOut:
    conn = tx.conn
    starts, ends, valid_days = gate.terms_of(conn, coupon_id, user_id)
    if not window_is_open(starts, ends, now):
        raise CouponNotIssuable(coupon_id=coupon_id, issue_starts_at=starts, issue_ends_at=ends)
    result = gate.try_issue(conn, coupon_id, user_id)
    if result == IssueResult.ALREADY_ISSUED:
        raise CouponAlreadyIssued(coupon_id=coupon_id)
    if result == IssueResult.SOLD_OUT:
        raise CouponSoldOut(coupon_id=coupon_id)
    tx.after_rollback(lambda: gate.revoke(coupon_id, user_id))

    # The unique (coupon, user) insert comes first so that a holder hears
    # ALREADY_ISSUED even once the coupon is sold out.
    expires_at = now + timedelta(days=valid_days)
    row = {
        "coupon_id": coupon_id,
        "user_id": user_id,
        "status": "ISSUED",
        "issued_at": now,
        "expires_at": expires_at,
    }
    try:
        user_coupon_id: int = _INSERT_USER_COUPON.scalar_one(conn, row)
    except IntegrityError as exc:
        tx.after_rollback(lambda: gate.learn_issued(coupon_id, user_id))
        raise CouponAlreadyIssued(coupon_id=coupon_id) from exc
    if _COUNT_ISSUE.first(conn, {"p_coupon": coupon_id}) is None:
        tx.after_rollback(lambda: gate.learn_sold_out(coupon_id))
        raise CouponSoldOut(coupon_id=coupon_id)
    return IssueOut(
        user_coupon_id=user_coupon_id,
        coupon_id=coupon_id,
        status="ISSUED",
        issued_at=now,
        expires_at=expires_at,
    )


async def my_coupons(session: AsyncSession, user_id: int) -> list[MyCouponOut]:
    """The user's coupons, newest first; an ISSUED one past ``expires_at`` shows EXPIRED."""
    rows = (
        await session.execute(
            select(
                user_coupons.c.id.label("user_coupon_id"),
                user_coupons.c.status.label("uc_status"),
                user_coupons.c.issued_at,
                user_coupons.c.expires_at,
                user_coupons.c.used_at,
                user_coupons.c.order_id,
                *coupons.c,
            )
            .join(coupons, coupons.c.id == user_coupons.c.coupon_id)
            .where(user_coupons.c.user_id == user_id)
            .order_by(user_coupons.c.id.desc())
        )
    ).all()
    now = utcnow()
    return [
        MyCouponOut(
            user_coupon_id=r.user_coupon_id,
            coupon=coupon_out(r),
            status="EXPIRED" if r.uc_status == "ISSUED" and r.expires_at <= now else r.uc_status,
            issued_at=r.issued_at,
            expires_at=r.expires_at,
            used_at=r.used_at,
            order_id=r.order_id,
        )
        for r in rows
    ]
