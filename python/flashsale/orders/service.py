"""Placing and reading orders (DESIGN §5 "Orders", §6 invariants 1-3).

The order path, in one short write transaction with rows updated in a fixed
order (wallet, then variants by ascending id, then the user coupon) so that
concurrent orders cannot deadlock:

1. the C++ stock gate admits the lines or answers ``OUT_OF_STOCK`` at once;
2. the rules are checked against the database: variants exist, sale window,
   per-user purchase limit, coupon ownership/validity/minimum, balance;
3. conditional writes confirm every grant: ``balance >= paid``,
   ``stock >= quantity`` per variant, the coupon still ``ISSUED``; each writes
   its ledger row (wallet transaction, inventory movement, payment);
4. after commit the sale is recorded in this process's ranking; after a
   rollback the gate's reservation is released and corrected from the database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.catalog.service import sale_is_open
from flashsale.coupons.service import compute_discount
from flashsale.db.models import (
    coupons,
    inventory_movements,
    order_items,
    orders,
    payments,
    products,
    user_coupons,
    variants,
    wallets,
)
from flashsale.db.session import after_commit, after_rollback
from flashsale.db.types import utcnow
from flashsale.errors import (
    CouponMinOrderNotMet,
    CouponNotUsable,
    InsufficientBalance,
    OrderNotFound,
    OutOfStock,
    ProductNotFound,
    PurchaseLimitExceeded,
    SaleNotOpen,
    ValidationFailed,
    VariantNotFound,
    VariantRequired,
)
from flashsale.gates import StockGate
from flashsale.orders.schemas import OrderIn, OrderItemOut, OrderOut, PaymentOut
from flashsale.ranking.service import RankingService
from flashsale.wallet.service import debit

#: Orders holding units against the per-user purchase limit.
HOLDING_STATUSES = ("PAID", "PENDING")

# The order path's statements are built once and executed with parameters:
# building a Core statement (and its cache key) costs several times more than
# running it on SQLite.
_LOCK_WALLET = (
    select(wallets.c.balance).where(wallets.c.user_id == bindparam("p_user")).with_for_update()
)
_ORDER_VARIANTS = (
    select(
        variants.c.id,
        variants.c.name.label("variant_name"),
        variants.c.price,
        variants.c.product_id,
        products.c.name.label("product_name"),
        products.c.sale_starts_at,
        products.c.sale_ends_at,
        products.c.per_user_limit,
    )
    .join(products, products.c.id == variants.c.product_id)
    .where(variants.c.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(variants.c.id)
)
_HELD_UNITS = (
    select(order_items.c.product_id, func.sum(order_items.c.quantity))
    .join(orders, orders.c.id == order_items.c.order_id)
    .where(
        orders.c.user_id == bindparam("p_user"),
        orders.c.status.in_(HOLDING_STATUSES),
        order_items.c.product_id.in_(bindparam("p_products", expanding=True)),
    )
    .group_by(order_items.c.product_id)
)
_USER_COUPON = (
    select(
        user_coupons.c.user_id,
        user_coupons.c.status,
        user_coupons.c.expires_at,
        coupons.c.discount_type,
        coupons.c.discount_value,
        coupons.c.max_discount_amount,
        coupons.c.min_order_amount,
    )
    .join(coupons, coupons.c.id == user_coupons.c.coupon_id)
    .where(user_coupons.c.id == bindparam("p_user_coupon"))
)
_INSERT_ORDER = insert(orders).returning(orders.c.id)
_TAKE_STOCK = (
    update(variants)
    .where(variants.c.id == bindparam("p_variant"), variants.c.stock >= bindparam("p_quantity"))
    .values(stock=variants.c.stock - bindparam("p_quantity"))
    .returning(variants.c.stock)
)
_STOCK_OF = select(variants.c.stock).where(variants.c.id == bindparam("p_variant"))
_USE_COUPON = (
    update(user_coupons)
    .where(user_coupons.c.id == bindparam("p_user_coupon"), user_coupons.c.status == "ISSUED")
    .values(status="USED", used_at=bindparam("p_now"), order_id=bindparam("p_order"))
    .returning(user_coupons.c.id)
)
_INSERT_PAYMENT = insert(payments).returning(payments.c.id)


async def resolve_lines(session: AsyncSession, body: OrderIn) -> list[tuple[int, int]]:
    """``[(variant_id, quantity)]`` sorted by variant id.

    A line with only ``product_id`` names that product's single variant.

    Raises:
        ProductNotFound: a product_id-only line names no product (404).
        VariantRequired: that product has several variants (422).
        ValidationFailed: a variant appears twice (422).
    """
    lines: list[tuple[int, int]] = []
    for line in body.items:
        variant_id = line.variant_id
        if variant_id is None:
            assert line.product_id is not None
            ids = (
                (
                    await session.execute(
                        select(variants.c.id)
                        .where(variants.c.product_id == line.product_id)
                        .limit(2)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                raise ProductNotFound(product_id=line.product_id)
            if len(ids) > 1:
                raise VariantRequired(product_id=line.product_id)
            variant_id = ids[0]
        lines.append((variant_id, line.quantity))
    seen = [v for v, _ in lines]
    if len(set(seen)) != len(seen):
        raise ValidationFailed("A variant may appear at most once per order", field="items")
    return sorted(lines)


def _check_named_products(body: OrderIn, product_of: dict[int, int]) -> None:
    """A line naming both ``variant_id`` and ``product_id`` must name a variant of that product.

    Raises:
        ValidationFailed: they disagree (422).
    """
    for line in body.items:
        if (
            line.variant_id is not None
            and line.product_id is not None
            and product_of[line.variant_id] != line.product_id
        ):
            raise ValidationFailed(
                "variant_id is not a variant of product_id",
                field="items",
                variant_id=line.variant_id,
                product_id=line.product_id,
            )


def _apply_coupon(coupon: Any, user_id: int, total: int, now: datetime) -> int:
    """Discount (KRW) of a user coupon row joined with its coupon, after the rules.

    Raises:
        CouponNotUsable: not the caller's, not ISSUED, or expired (409).
        CouponMinOrderNotMet: ``total`` below the coupon's minimum (409).
    """
    if coupon is None or coupon.user_id != user_id:
        raise CouponNotUsable("Coupon not found for this user")
    if coupon.status != "ISSUED":
        raise CouponNotUsable(f"Coupon is {coupon.status}", status=coupon.status)
    if coupon.expires_at <= now:
        raise CouponNotUsable("Coupon has expired", expires_at=coupon.expires_at.isoformat())
    if total < coupon.min_order_amount:
        raise CouponMinOrderNotMet(min_order_amount=coupon.min_order_amount, total_amount=total)
    return compute_discount(
        total, coupon.discount_type, coupon.discount_value, coupon.max_discount_amount
    )


async def _check_purchase_limits(
    session: AsyncSession, user_id: int, rows: Sequence[Any], wanted: dict[int, int]
) -> None:
    limits = {r.product_id: r.per_user_limit for r in rows if r.per_user_limit is not None}
    if not limits:
        return
    result = await session.execute(_HELD_UNITS, {"p_user": user_id, "p_products": sorted(limits)})
    held = {product_id: quantity for product_id, quantity in result}
    for product_id, limit in sorted(limits.items()):
        already = int(held.get(product_id, 0))
        if already + wanted[product_id] > limit:
            raise PurchaseLimitExceeded(
                product_id=product_id, limit=limit, already=already, requested=wanted[product_id]
            )


async def place_order(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
) -> OrderOut:
    """Create and pay an order in the request's transaction.

    Raises:
        OutOfStock: a variant has fewer units than asked (409; details variant_id,
            requested, available).
        InsufficientBalance, CouponNotUsable, CouponMinOrderNotMet, SaleNotOpen,
        PurchaseLimitExceeded (409); ProductNotFound, VariantNotFound (404);
        VariantRequired, ValidationFailed (422).
    """
    lines = await resolve_lines(session, body)
    short = await gate.reserve(session, lines)
    if short is not None:
        variant_id, available = short
        requested = dict(lines)[variant_id]
        raise OutOfStock(variant_id=variant_id, requested=requested, available=available)
    after_rollback(session, lambda: gate.release(lines))

    now = utcnow()
    ids = [v for v, _ in lines]
    # Lock the buyer's wallet first: serialises this user's orders (purchase
    # limit, coupon use) on databases with row locks; no-op on SQLite, whose
    # write transactions are already serialised.
    balance = (await session.execute(_LOCK_WALLET, {"p_user": user_id})).scalar_one_or_none()
    rows = (await session.execute(_ORDER_VARIANTS, {"p_ids": ids})).all()
    by_id = {r.id: r for r in rows}
    for variant_id in ids:
        if variant_id not in by_id:
            raise VariantNotFound(variant_id=variant_id)
    _check_named_products(body, {r.id: r.product_id for r in rows})
    for r in rows:
        if not sale_is_open(r.sale_starts_at, r.sale_ends_at, now):
            raise SaleNotOpen(
                product_id=r.product_id,
                sale_starts_at=r.sale_starts_at.isoformat() if r.sale_starts_at else None,
                sale_ends_at=r.sale_ends_at.isoformat() if r.sale_ends_at else None,
            )
    wanted: dict[int, int] = defaultdict(int)
    for variant_id, quantity in lines:
        wanted[by_id[variant_id].product_id] += quantity
    await _check_purchase_limits(session, user_id, rows, wanted)

    items = [
        OrderItemOut(
            product_id=by_id[v].product_id,
            variant_id=v,
            product_name=by_id[v].product_name,
            variant_name=by_id[v].variant_name,
            unit_price=by_id[v].price,
            quantity=q,
            amount=by_id[v].price * q,
        )
        for v, q in lines
    ]
    total = sum(i.amount for i in items)
    discount = 0
    if body.user_coupon_id is not None:
        coupon = (
            await session.execute(_USER_COUPON, {"p_user_coupon": body.user_coupon_id})
        ).first()
        discount = _apply_coupon(coupon, user_id, total, now)
    paid = total - discount
    if balance is None or balance < paid:
        raise InsufficientBalance(required=paid, balance=int(balance or 0))

    order_row = {
        "user_id": user_id,
        "status": "PAID",
        "total_amount": total,
        "discount_amount": discount,
        "paid_amount": paid,
        "user_coupon_id": body.user_coupon_id,
        "created_at": now,
        "paid_at": now,
        "expires_at": None,
    }
    order_id: int = (await session.execute(_INSERT_ORDER, order_row)).scalar_one()
    ranking.claim(order_id)
    after_rollback(session, lambda: ranking.unclaim(order_id))

    await debit(session, user_id, paid, order_id, now)
    for variant_id, quantity in lines:
        stock_params = {"p_variant": variant_id, "p_quantity": quantity}
        left = (await session.execute(_TAKE_STOCK, stock_params)).scalar_one_or_none()
        if left is None:
            stock = int((await session.execute(_STOCK_OF, stock_params)).scalar_one())
            after_rollback(session, partial(gate.learn, variant_id, stock))
            raise OutOfStock(variant_id=variant_id, requested=quantity, available=stock)
    await session.execute(
        insert(order_items),
        [{"order_id": order_id, **i.model_dump()} for i in items],
    )
    await session.execute(
        insert(inventory_movements),
        [
            {
                "variant_id": v,
                "kind": "RESERVE",
                "quantity": -q,
                "order_id": order_id,
                "created_at": now,
            }
            for v, q in lines
        ],
    )
    if body.user_coupon_id is not None:
        used = (
            await session.execute(
                _USE_COUPON,
                {"p_user_coupon": body.user_coupon_id, "p_now": now, "p_order": order_id},
            )
        ).first()
        if used is None:
            raise CouponNotUsable("Coupon was used concurrently")
    payment = {
        "order_id": order_id,
        "user_id": user_id,
        "kind": "PAYMENT",
        "amount": paid,
        "created_at": now,
    }
    payment_id: int = (await session.execute(_INSERT_PAYMENT, payment)).scalar_one()

    sold = [(i.product_id, i.quantity) for i in items]
    after_commit(session, lambda: ranking.record_sale(sold, now))
    return OrderOut(
        order_id=order_id,
        status="PAID",
        items=items,
        total_amount=total,
        discount_amount=discount,
        paid_amount=paid,
        user_coupon_id=body.user_coupon_id,
        created_at=now,
        paid_at=now,
        expires_at=None,
        payments=[PaymentOut(id=payment_id, kind="PAYMENT", amount=paid, created_at=now)],
    )


async def load_orders(session: AsyncSession, order_rows: Sequence[Any]) -> list[OrderOut]:
    """Order rows with their items and payments (two queries for any number of orders)."""
    ids = [r.id for r in order_rows]
    if not ids:
        return []
    item_rows = (
        await session.execute(
            select(order_items).where(order_items.c.order_id.in_(ids)).order_by(order_items.c.id)
        )
    ).all()
    payment_rows = (
        await session.execute(
            select(payments).where(payments.c.order_id.in_(ids)).order_by(payments.c.id)
        )
    ).all()
    items: dict[int, list[OrderItemOut]] = defaultdict(list)
    for i in item_rows:
        items[i.order_id].append(OrderItemOut.model_validate(i._mapping))
    pays: dict[int, list[PaymentOut]] = defaultdict(list)
    for p in payment_rows:
        pays[p.order_id].append(PaymentOut.model_validate(p._mapping))
    return [
        OrderOut(
            order_id=r.id,
            status=r.status,
            items=items[r.id],
            total_amount=r.total_amount,
            discount_amount=r.discount_amount,
            paid_amount=r.paid_amount,
            user_coupon_id=r.user_coupon_id,
            created_at=r.created_at,
            paid_at=r.paid_at,
            expires_at=r.expires_at,
            payments=pays[r.id],
        )
        for r in order_rows
    ]


async def get_order(session: AsyncSession, user_id: int, order_id: int) -> OrderOut:
    """The caller's order.

    Raises:
        OrderNotFound: no such order, or another user's (404).
    """
    row = (
        await session.execute(
            select(orders).where(orders.c.id == order_id, orders.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise OrderNotFound(order_id=order_id)
    return (await load_orders(session, [row]))[0]


async def list_orders(
    session: AsyncSession, user_id: int, *, limit: int, before_id: int | None
) -> tuple[list[OrderOut], bool]:
    """The caller's orders, newest first; returns ``(orders, has_more)``."""
    stmt = select(orders).where(orders.c.user_id == user_id).order_by(orders.c.id.desc())
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    rows = (await session.execute(stmt.limit(limit + 1))).all()
    return await load_orders(session, rows[:limit]), len(rows) > limit
