"""``/orders`` and ``/me/orders``."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from flashsale.api.deps import (
    CurrentUser,
    Cursor,
    Limit,
    PathId,
    ReadSession,
    State,
    WriteSession,
    app_state,
    decode_cursor,
    encode_cursor,
)
from flashsale.api.idempotency import Idempotency, IdempotencyKey, idempotent
from flashsale.db.session import transaction
from flashsale.orders import service
from flashsale.orders.schemas import OrderIn, OrderOut, OrderPage

router = APIRouter(tags=["orders"])


@router.post("/orders", status_code=status.HTTP_201_CREATED)
async def create_order(
    body: OrderIn, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> OrderOut:
    """Order several lines; pay from the wallet in the same transaction unless ``pay`` is false.

    An order the stock gate knows to be hopeless is answered ``OUT_OF_STOCK`` before
    any database session is opened (without an ``Idempotency-Key``: with one, the
    database is asked first so that a retry replays the first answer).
    """
    state = app_state(request)
    if idempotency_key is None:
        await service.refuse_early(state.stock_gate, state.db.read_session, body)
    async with (
        idempotent(request, state, user.user_id, idempotency_key) as idem,
        transaction(state.db.write_session) as session,
    ):
        order = await service.place_order(
            session,
            state.stock_gate,
            state.ranking,
            user.user_id,
            body,
            payment_timeout_s=state.settings.order_payment_timeout_s,
        )
        return await idem.succeeded(session, order, status.HTTP_201_CREATED)


@router.post("/orders/{order_id}/payment")
async def pay_order(
    order_id: PathId, user: CurrentUser, idem: Idempotency, session: WriteSession, state: State
) -> OrderOut:
    """Pay a PENDING order (409 ``ORDER_NOT_PAYABLE`` once paid, cancelled or expired)."""
    order = await service.pay_order(session, state.ranking, user.user_id, order_id)
    return await idem.succeeded(session, order, status.HTTP_200_OK)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    order_id: PathId, user: CurrentUser, idem: Idempotency, session: WriteSession, state: State
) -> OrderOut:
    """Cancel a PENDING or PAID order; a PAID one is refunded (409 ``ORDER_NOT_CANCELLABLE``)."""
    order = await service.cancel_order(
        session, state.stock_gate, state.ranking, user.user_id, order_id
    )
    return await idem.succeeded(session, order, status.HTTP_200_OK)


@router.get("/orders/{order_id}")
async def get_order(order_id: PathId, user: CurrentUser, session: ReadSession) -> OrderOut:
    """One of the caller's orders (404 ``ORDER_NOT_FOUND`` for others')."""
    return await service.get_order(session, user.user_id, order_id)


@router.get("/me/orders")
async def my_orders(
    user: CurrentUser, session: ReadSession, limit: Limit = 20, cursor: Cursor = None
) -> OrderPage:
    """The caller's orders, newest first."""
    items, more = await service.list_orders(
        session, user.user_id, limit=limit, before_id=decode_cursor(cursor)
    )
    return OrderPage(items=items, next_cursor=encode_cursor(items[-1].order_id) if more else None)
