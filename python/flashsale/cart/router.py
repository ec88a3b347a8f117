"""``/me/cart``: every write is an operation of the process's group-commit writer."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, status

from flashsale.api.deps import CurrentUser, PathId, ReadSession, State, app_state
from flashsale.api.idempotency import IdempotencyKey, submit_write
from flashsale.cart import service
from flashsale.cart.schemas import CartItemIn, CartOut, CheckoutIn
from flashsale.db.session import transaction
from flashsale.db.writer import Locks
from flashsale.orders.schemas import OrderOut

router = APIRouter(prefix="/me/cart", tags=["cart"])


@router.get("")
async def get_cart(user: CurrentUser, session: ReadSession) -> CartOut:
    """The caller's cart with current prices and ``in_stock``."""
    return await service.get_cart(session, user.user_id)


@router.put("/items/{variant_id}")
async def put_item(
    variant_id: PathId, body: CartItemIn, user: CurrentUser, state: State
) -> CartOut:
    """Set a variant's quantity in the cart (404 ``VARIANT_NOT_FOUND``, 409 ``CART_FULL``)."""
    op = partial(
        service.set_item_op, user_id=user.user_id, variant_id=variant_id, quantity=body.quantity
    )
    return await state.writer.submit(op)


@router.delete("/items/{variant_id}")
async def delete_item(variant_id: PathId, user: CurrentUser, state: State) -> CartOut:
    """Remove a variant from the cart (idempotent)."""
    op = partial(service.remove_item_op, user_id=user.user_id, variant_id=variant_id)
    return await state.writer.submit(op)


@router.post("/checkout", status_code=status.HTTP_201_CREATED)
async def checkout(
    body: CheckoutIn, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> OrderOut:
    """Order the cart; it is emptied only when the order succeeds (409 ``CART_EMPTY``,
    and every refusal of ``POST /orders``).

    One writer operation (:func:`service.checkout_op`) takes the cart, places the order
    and empties the cart; the ``Idempotency-Key`` works as for ``POST /orders``. The
    cart's variants, read first, and the buyer's wallet are locked up front with the
    writer's batch.
    """
    state = app_state(request)
    async with transaction(state.db.read_session) as session:
        variant_ids = await service.cart_variant_ids(session, user.user_id)
    op = partial(
        service.checkout_op,
        gate=state.stock_gate,
        ranking=state.ranking,
        user_id=user.user_id,
        body=body,
        payment_timeout_s=state.settings.order_payment_timeout_s,
    )
    locks = Locks(wallets=frozenset((user.user_id,)), variants=frozenset(variant_ids))
    return await submit_write(
        request, state, user.user_id, idempotency_key, op, status.HTTP_201_CREATED, locks
    )
