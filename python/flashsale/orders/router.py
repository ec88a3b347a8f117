"""``/orders`` and ``/me/orders``."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, status

from flashsale.api.deps import (
    CurrentUser,
    Cursor,
    Limit,
    PathId,
    ReadSession,
    app_state,
    decode_cursor,
    encode_cursor,
)
from flashsale.api.idempotency import IdempotencyKey, submit_write
from flashsale.api.state import AppState
from flashsale.db.session import transaction
from flashsale.db.writer import Locks, Op
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
    database is asked first so that a retry replays the first answer). Admitted
    orders are committed in groups by the process's writer.
    """
    state = app_state(request)
    if idempotency_key is None:
        await service.refuse_early(state.stock_gate, state.db.read_session, body)
    op, locks = order_write(state, user.user_id, body)
    return await submit_write(
        request, state, user.user_id, idempotency_key, op, status.HTTP_201_CREATED, locks
    )


def order_write(state: AppState, user_id: int, body: OrderIn) -> tuple[Op[OrderOut], Locks]:
    """The writer operation that places ``body`` for ``user_id`` and the rows it locks:
    what ``POST /orders`` submits, in the route and at the edge
    (:class:`flashsale.api.edge.GateEdgeMiddleware`)."""
    op = partial(
        service.place_order_op,
        gate=state.stock_gate,
        ranking=state.ranking,
        user_id=user_id,
        body=body,
        payment_timeout_s=state.settings.order_payment_timeout_s,
    )
    locks = Locks(
        wallets=frozenset((user_id,)),
        variants=frozenset(line.variant_id for line in body.items if line.variant_id is not None),
    )
    return op, locks


@router.post("/orders/{order_id}/payment")
async def pay_order(
    order_id: PathId, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> OrderOut:
    """Pay a PENDING order (409 ``ORDER_NOT_PAYABLE`` once paid, cancelled or expired)."""
    state = app_state(request)
    op = partial(
        service.pay_order_op, ranking=state.ranking, user_id=user.user_id, order_id=order_id
    )
    locks = Locks(wallets=frozenset((user.user_id,)))
    return await submit_write(
        request, state, user.user_id, idempotency_key, op, status.HTTP_200_OK, locks
    )


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    order_id: PathId, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> OrderOut:
    """Cancel a PENDING or PAID order; a PAID one is refunded (409 ``ORDER_NOT_CANCELLABLE``)."""
    state = app_state(request)
    op = partial(
        service.cancel_order_op,
        gate=state.stock_gate,
        ranking=state.ranking,
        user_id=user.user_id,
        order_id=order_id,
    )
    # The lines it gives back are locked up front with the batch (an order's lines
    # never change, so reading them first is safe).
    async with transaction(state.db.read_session) as session:
        lines = await service.order_variant_ids(session, order_id)
    locks = Locks(wallets=frozenset((user.user_id,)), variants=frozenset(lines))
    return await submit_write(
        request, state, user.user_id, idempotency_key, op, status.HTTP_200_OK, locks
    )


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
