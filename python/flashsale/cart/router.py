"""``/me/cart``."""

from __future__ import annotations

from fastapi import APIRouter, status

from flashsale.api.deps import CurrentUser, PathId, ReadSession, State, WriteSession
from flashsale.api.idempotency import Idempotency
from flashsale.cart import service
from flashsale.cart.schemas import CartItemIn, CartOut, CheckoutIn
from flashsale.orders.schemas import OrderOut

router = APIRouter(prefix="/me/cart", tags=["cart"])


@router.get("")
async def get_cart(user: CurrentUser, session: ReadSession) -> CartOut:
    """The caller's cart with current prices and ``in_stock``."""
    return await service.get_cart(session, user.user_id)


@router.put("/items/{variant_id}")
async def put_item(
    variant_id: PathId, body: CartItemIn, user: CurrentUser, session: WriteSession
) -> CartOut:
    """Set a variant's quantity in the cart (404 ``VARIANT_NOT_FOUND``, 409 ``CART_FULL``)."""
    return await service.set_item(session, user.user_id, variant_id, body.quantity)


@router.delete("/items/{variant_id}")
async def delete_item(variant_id: PathId, user: CurrentUser, session: WriteSession) -> CartOut:
    """Remove a variant from the cart (idempotent)."""
    return await service.remove_item(session, user.user_id, variant_id)


@router.post("/checkout", status_code=status.HTTP_201_CREATED)
async def checkout(
    body: CheckoutIn, user: CurrentUser, idem: Idempotency, session: WriteSession, state: State
) -> OrderOut:
    """Order the cart; it is emptied only when the order succeeds (409 ``CART_EMPTY``)."""
    order = await service.checkout(
        session,
        state.stock_gate,
        state.ranking,
        user.user_id,
        body,
        payment_timeout_s=state.settings.order_payment_timeout_s,
    )
    return await idem.succeeded(session, order, status.HTTP_201_CREATED)
