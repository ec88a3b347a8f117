"""``/coupons`` and ``/me/coupons``."""

from __future__ import annotations

from fastapi import APIRouter, status

from flashsale.api.deps import CurrentUser, PathId, ReadSession, State, WriteSession
from flashsale.api.idempotency import Idempotency
from flashsale.coupons import service
from flashsale.coupons.schemas import CouponOut, IssueOut, MyCouponOut

router = APIRouter(tags=["coupons"])


@router.get("/coupons/{coupon_id}")
async def get_coupon(coupon_id: PathId, session: ReadSession) -> CouponOut:
    """A coupon and how many are left (404 ``COUPON_NOT_FOUND``)."""
    return await service.get_coupon(session, coupon_id)


@router.post("/coupons/{coupon_id}/issue", status_code=status.HTTP_201_CREATED)
async def issue_coupon(
    coupon_id: PathId, user: CurrentUser, idem: Idempotency, session: WriteSession, state: State
) -> IssueOut:
    """Claim one coupon; the answer is final (409 ``COUPON_SOLD_OUT``,
    ``COUPON_ALREADY_ISSUED``, ``COUPON_NOT_ISSUABLE``)."""
    issued = await service.issue(session, state.coupon_gate, coupon_id, user.user_id)
    return await idem.succeeded(session, issued, status.HTTP_201_CREATED)


@router.get("/me/coupons")
async def my_coupons(user: CurrentUser, session: ReadSession) -> list[MyCouponOut]:
    """The caller's coupons."""
    return await service.my_coupons(session, user.user_id)
