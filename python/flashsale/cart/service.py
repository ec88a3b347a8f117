"""Cart reads and writes, and checkout through the order path (docs/rules.md).

The cart holds no stock: ``in_stock`` is read from the database each time, and
checkout places an ordinary order (:func:`flashsale.orders.service.place_order_op`,
no second implementation) in the same transaction that empties the cart, so the
cart is emptied only when the order succeeds. The writes are writer operations
(:func:`set_item_op`, :func:`remove_item_op`, :func:`checkout_op`), committed by the
process's group-commit writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.cart.schemas import CartItemOut, CartOut, CheckoutIn
from flashsale.db.dialect import upsert
from flashsale.db.models import cart_items, products, variants
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx
from flashsale.errors import CartEmpty, CartFull, VariantNotFound
from flashsale.gates import StockGate
from flashsale.orders.schemas import OrderIn, OrderLineIn, OrderOut
from flashsale.orders.service import place_order_op
from flashsale.ranking.service import RankingService

#: An order takes at most 50 lines (docs/rules.md), so a cart holds at most 50 variants.
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
_CART_LINES = (
    select(cart_items.c.variant_id)
    .where(cart_items.c.user_id == bindparam("p_user"))
    .order_by(cart_items.c.variant_id)
)
_VARIANT_EXISTS = select(variants.c.id).where(variants.c.id == bindparam("p_variant"))
_REMOVE_ITEM = delete(cart_items).where(
    cart_items.c.user_id == bindparam("p_user"), cart_items.c.variant_id == bindparam("p_variant")
)
_TAKE_CART = (
    delete(cart_items)
    .where(cart_items.c.user_id == bindparam("p_user"))
    .returning(cart_items.c.variant_id, cart_items.c.quantity)
)


def _cart_out(rows: Sequence[Any]) -> CartOut:
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


async def get_cart(session: AsyncSession, user_id: int) -> CartOut:
    """The caller's cart, by variant id, priced at today's prices."""
    return _cart_out((await session.execute(_CART, {"p_user": user_id})).all())


def read_cart(conn: Connection, user_id: int) -> CartOut:
    """:func:`get_cart` on ``conn`` (inside a writer operation: it sees the operation's
    own writes)."""
    return _cart_out(conn.execute(_CART, {"p_user": user_id}).all())


async def cart_variant_ids(session: AsyncSession, user_id: int) -> list[int]:
    """The variant ids in the caller's cart, ascending (to lock them up front)."""
    return list((await session.execute(_CART_LINES, {"p_user": user_id})).scalars().all())


def set_item_op(
    tx: Tx, *, user_id: int, variant_id: int, quantity: int, now: datetime | None = None
) -> CartOut:
    """Set the quantity (1–100) of a variant in the cart; returns the cart (a writer
    operation).

    Raises:
        VariantNotFound: no such variant (404).
        CartFull: a 51st variant (409).
    """
    conn = tx.conn
    now = utcnow() if now is None else now
    if conn.execute(_VARIANT_EXISTS, {"p_variant": variant_id}).first() is None:
        raise VariantNotFound(variant_id=variant_id)
    held = set(conn.execute(_CART_LINES, {"p_user": user_id}).scalars().all())
    if variant_id not in held and len(held) >= MAX_CART_ITEMS:
        raise CartFull(max_items=MAX_CART_ITEMS)
    stmt = upsert(conn, cart_items, ["user_id", "variant_id"], ["quantity", "updated_at"])
    conn.execute(
        stmt,
        {
            "user_id": user_id,
            "variant_id": variant_id,
            "quantity": quantity,
            "created_at": now,
            "updated_at": now,
        },
    )
    return read_cart(conn, user_id)


def remove_item_op(tx: Tx, *, user_id: int, variant_id: int) -> CartOut:
    """Remove a variant from the cart (idempotent: absent is fine); returns the cart (a
    writer operation)."""
    tx.conn.execute(_REMOVE_ITEM, {"p_user": user_id, "p_variant": variant_id})
    return read_cart(tx.conn, user_id)


def checkout_op(
    tx: Tx,
    *,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: CheckoutIn,
    payment_timeout_s: int,
) -> OrderOut:
    """Order the whole cart through the order path and empty the cart, in one
    transaction (a writer operation).

    The cart's rows are deleted first (``DELETE ... RETURNING``: what was deleted is
    exactly what is ordered), then :func:`~flashsale.orders.service.place_order_op`
    places the order. A refusal rolls the operation back, so the cart stays as it
    was. Two checkouts of one cart cannot both find it full: the second sees it
    emptied (it waits for the first's row locks on PostgreSQL; on SQLite writes are
    serialised) and is refused ``CART_EMPTY``.

    Raises:
        CartEmpty: nothing in the cart (409).
        Everything :func:`~flashsale.orders.service.place_order_op` raises; the cart
        is then left as it was.
    """
    rows = sorted((v, q) for v, q in tx.conn.execute(_TAKE_CART, {"p_user": user_id}))
    if not rows:
        raise CartEmpty()
    order_in = OrderIn(
        items=[OrderLineIn(variant_id=v, quantity=q) for v, q in rows],
        user_coupon_id=body.user_coupon_id,
        pay=body.pay,
    )
    return place_order_op(
        tx,
        gate=gate,
        ranking=ranking,
        user_id=user_id,
        body=order_in,
        payment_timeout_s=payment_timeout_s,
    )
