"""Cart reads and writes, and checkout through the order path (DESIGN §5 "Cart").

The cart holds no stock: ``in_stock`` is read from the database each time, and
checkout places an ordinary order (:func:`flashsale.orders.service.place_order`,
no second implementation) in the same transaction that empties the cart, so the
cart is emptied only when the order succeeds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.cart.schemas import CartItemOut, CartOut, CheckoutIn
from flashsale.db.dialect import upsert
from flashsale.db.models import cart_items, products, variants
from flashsale.db.types import utcnow
from flashsale.errors import CartEmpty, CartFull, VariantNotFound
from flashsale.gates import StockGate
from flashsale.orders.schemas import OrderIn, OrderLineIn, OrderOut
from flashsale.orders.service import place_order
from flashsale.ranking.service import RankingService

#: An order takes at most 50 lines (DESIGN §5), so a cart holds at most 50 variants.
MAX_CART_ITEMS = 50

_CART = (
    select(
        cart_items.c.variant_id,
        variants.c.product_id,
        products.c.name.label("product_name"),
        variants.c.name.label("variant_name"),
        variants.c.price.label("unit_price"),
        cart_items.c.quantity,
        variants.c.stock,
    )
    .join(variants, variants.c.id == cart_items.c.variant_id)
    .join(products, products.c.id == variants.c.product_id)
    .where(cart_items.c.user_id == bindparam("p_user"))
    .order_by(cart_items.c.variant_id)
)


async def get_cart(session: AsyncSession, user_id: int) -> CartOut:
    """The caller's cart, by variant id, priced at today's prices."""
    rows = (await session.execute(_CART, {"p_user": user_id})).all()
    items = [
        CartItemOut(
            variant_id=r.variant_id,
            product_id=r.product_id,
            product_name=r.product_name,
            variant_name=r.variant_name,
            unit_price=r.unit_price,
            quantity=r.quantity,
            amount=r.unit_price * r.quantity,
            in_stock=r.stock >= r.quantity,
        )
        for r in rows
    ]
    return CartOut(items=items, total_amount=sum(i.amount for i in items))


async def set_item(
    session: AsyncSession, user_id: int, variant_id: int, quantity: int, now: datetime | None = None
) -> CartOut:
    """Set the quantity (1–100) of a variant in the cart; returns the cart.

    Raises:
        VariantNotFound: no such variant (404).
        CartFull: a 51st variant (409).
    """
    now = utcnow() if now is None else now
    exists = (
        await session.execute(select(variants.c.id).where(variants.c.id == variant_id))
    ).first()
    if exists is None:
        raise VariantNotFound(variant_id=variant_id)
    held = set(
        (
            await session.execute(
                select(cart_items.c.variant_id).where(cart_items.c.user_id == user_id)
            )
        )
        .scalars()
        .all()
    )
    if variant_id not in held and len(held) >= MAX_CART_ITEMS:
        raise CartFull(max_items=MAX_CART_ITEMS)
    stmt = upsert(session, cart_items, ["user_id", "variant_id"], ["quantity", "updated_at"])
    await session.execute(
        stmt,
        {
            "user_id": user_id,
            "variant_id": variant_id,
            "quantity": quantity,
            "created_at": now,
            "updated_at": now,
        },
    )
    return await get_cart(session, user_id)


async def remove_item(session: AsyncSession, user_id: int, variant_id: int) -> CartOut:
    """Remove a variant from the cart (idempotent: absent is fine); returns the cart."""
    await session.execute(
        delete(cart_items).where(
            cart_items.c.user_id == user_id, cart_items.c.variant_id == variant_id
        )
    )
    return await get_cart(session, user_id)


async def checkout(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: CheckoutIn,
    *,
    payment_timeout_s: int,
) -> OrderOut:
    """Order the whole cart through the order path, then empty the cart (one transaction).

    Raises:
        CartEmpty: nothing in the cart (409).
        Everything :func:`~flashsale.orders.service.place_order` raises; the cart is
        then left as it was (the transaction rolls back).
    """
    rows = (
        await session.execute(
            select(cart_items.c.variant_id, cart_items.c.quantity)
            .where(cart_items.c.user_id == user_id)
            .order_by(cart_items.c.variant_id)
        )
    ).all()
    if not rows:
        raise CartEmpty()
    order_in = OrderIn(
        items=[OrderLineIn(variant_id=v, quantity=q) for v, q in rows],
        user_coupon_id=body.user_coupon_id,
        pay=body.pay,
    )
    order = await place_order(
        session, gate, ranking, user_id, order_in, payment_timeout_s=payment_timeout_s
    )
    await session.execute(delete(cart_items).where(cart_items.c.user_id == user_id))
    return order
