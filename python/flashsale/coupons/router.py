"""``/coupons`` and ``/me/coupons``."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, status

from flashsale.api.deps import CurrentUser, PathId, ReadSession, app_state
from flashsale.api.idempotency import IdempotencyKey, submit_write
from flashsale.api.state import AppState
from flashsale.coupons import service
from flashsale.coupons.schemas import CouponOut, IssueOut, MyCouponOut
from flashsale.db.types import utcnow
from flashsale.db.writer import Locks, Op

router = APIRouter(tags=["coupons"])


@router.get("/coupons/{coupon_id}")
async def get_coupon(coupon_id: PathId, session: ReadSession) -> CouponOut:
    """A coupon and how many are left (404 ``COUPON_NOT_FOUND``)."""
    return await service.get_coupon(session, coupon_id)


@router.post("/coupons/{coupon_id}/issue", status_code=status.HTTP_201_CREATED)
async def issue_coupon(
    coupon_id: PathId, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> IssueOut:
    """Claim one coupon; the answer is final (409 ``COUPON_SOLD_OUT``,
    ``COUPON_ALREADY_ISSUED``, ``COUPON_NOT_ISSUABLE``).

    The flash crowd's losers are answered from the gate before any database session
    is opened; a request with an ``Idempotency-Key`` goes to the database first, so
    that a retry replays the first answer. Admitted issues are committed in groups
    by the process's writer.
    """
    state = app_state(request)
    if idempotency_key is None:
        await service.refuse_early(
            state.coupon_gate, state.db.read_session, coupon_id, user.user_id, utcnow()
        )
    op, locks = issue_write(state, user.user_id, coupon_id)
    return await submit_write(
        request, state, user.user_id, idempotency_key, op, status.HTTP_201_CREATED, locks
    )


def issue_write(state: AppState, user_id: int, coupon_id: int) -> tuple[Op[IssueOut], Locks]:
    """The writer operation that issues ``coupon_id`` to ``user_id`` and the rows it
    locks: what ``POST /coupons/{id}/issue`` submits, in the route and at the edge
    (:class:`flashsale.api.edge.GateEdgeMiddleware`)."""
    op = partial(service.issue_op, gate=state.coupon_gate, coupon_id=coupon_id, user_id=user_id)
    return op, Locks(coupons=frozenset((coupon_id,)))


@router.get("/me/coupons")
async def my_coupons(user: CurrentUser, session: ReadSession) -> list[MyCouponOut]:
    """The caller's coupons."""
    return await service.my_coupons(session, user.user_id)
