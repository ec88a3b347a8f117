"""Placing, paying, cancelling, expiring and reading orders (DESIGN §5 "Orders", §6).

The order path, in one short write transaction with rows updated in a fixed
order (wallet, then variants by ascending id, then the user coupon) so that
concurrent orders cannot deadlock:

1. the C++ stock gate admits the lines or answers ``OUT_OF_STOCK`` at once;
2. the rules are checked against the database: variants exist, sale window,
   per-user purchase limit, coupon ownership/validity/minimum, balance;
3. conditional writes confirm every grant: ``balance >= paid``,
   ``stock >= quantity`` per variant, the coupon still ``ISSUED``; each writes
   its ledger row (wallet transaction, inventory movement, payment);
4. a paid order writes its ``order.paid`` outbox event in the same transaction;
5. after commit the sale is recorded in this process's ranking and the gate's
   listeners (the catalog read cache) learn which products' stock changed; after
   a rollback the gate's reservation is released and corrected from the database.

Pay-later orders are PENDING and hold stock and coupon until ``expires_at``;
payment, cancellation and expiry change the status with conditional updates
(``WHERE status = ...``), so each order ends in exactly one final state even
when instances race. Cancelling and expiring write RELEASE movements, return the
coupon, and (cancelling a PAID order) refund and write ``order.cancelled``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
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
    FlashsaleError,
    InsufficientBalance,
    OrderNotCancellable,
    OrderNotFound,
    OrderNotPayable,
    OutOfStock,
    ProductNotFound,
    PurchaseLimitExceeded,
    SaleNotOpen,
    ValidationFailed,
    VariantNotFound,
    VariantRequired,
)
from flashsale.gates import StockGate
from flashsale.metrics import observe_order
from flashsale.orders.schemas import OrderIn, OrderItemOut, OrderOut, PaymentOut
from flashsale.outbox.events import ORDER_CANCELLED, ORDER_PAID, add_order_event
from flashsale.ranking.service import RankingService
from flashsale.wallet.service import debit, refund

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
_LOCK_ORDER = (
    select(orders)
    .where(orders.c.id == bindparam("p_order"), orders.c.user_id == bindparam("p_user"))
    .with_for_update()
)
_MARK_PAID = (
    update(orders)
    .where(
        orders.c.id == bindparam("p_order"),
        orders.c.status == "PENDING",
        orders.c.expires_at > bindparam("p_now"),
    )
    .values(status="PAID", paid_at=bindparam("p_now"))
    .returning(*orders.c)
)
_MARK_CANCELLED = (
    update(orders)
    .where(orders.c.id == bindparam("p_order"), orders.c.status == bindparam("p_status"))
    .values(status="CANCELLED", cancelled_at=bindparam("p_now"))
    .returning(*orders.c)
)
_MARK_EXPIRED = (
    update(orders)
    .where(
        orders.c.id == bindparam("p_order"),
        orders.c.status == "PENDING",
        orders.c.expires_at <= bindparam("p_now"),
    )
    .values(status="EXPIRED")
    .returning(orders.c.id)
)
_OVERDUE = (
    select(orders.c.id, orders.c.user_coupon_id)
    .where(orders.c.status == "PENDING", orders.c.expires_at <= bindparam("p_now"))
    .order_by(orders.c.expires_at, orders.c.id)
    .limit(bindparam("p_limit"))
)
_ORDER_LINES = (
    select(order_items.c.variant_id, order_items.c.product_id, order_items.c.quantity)
    .where(order_items.c.order_id == bindparam("p_order"))
    .order_by(order_items.c.variant_id)
)
_PUT_BACK_STOCK = (
    update(variants)
    .where(variants.c.id == bindparam("p_variant"))
    .values(stock=variants.c.stock + bindparam("p_quantity"))
)
# The coupon goes back to its holder: ISSUED while still valid, else EXPIRED.
_RETURN_COUPON = (
    update(user_coupons)
    .where(user_coupons.c.id == bindparam("p_user_coupon"), user_coupons.c.status == "USED")
    .values(
        status=case((user_coupons.c.expires_at > bindparam("p_now"), "ISSUED"), else_="EXPIRED"),
        used_at=None,
        order_id=None,
    )
)


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
    *,
    payment_timeout_s: int = 600,
    now: datetime | None = None,
) -> OrderOut:
    """Create an order (see :func:`_place_order`), counted in ``flashsale_orders_total``."""
    try:
        order = await _place_order(
            session, gate, ranking, user_id, body, payment_timeout_s=payment_timeout_s, now=now
        )
    except FlashsaleError as exc:
        observe_order(exc.code)
        raise
    after_commit(session, partial(observe_order, order.status))
    return order


async def _place_order(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    *,
    payment_timeout_s: int,
    now: datetime | None,
) -> OrderOut:
    """Create an order in the request's transaction; pay it at once unless ``body.pay`` is false.

    A paid order debits the wallet, writes its PAYMENT and its ``order.paid``
    outbox event. A pay-later order is PENDING: it holds its stock and coupon
    until ``expires_at = now + payment_timeout_s`` (DESIGN §5). ``now`` (UTC)
    defaults to the current time; ``flashsale seed`` passes past times.

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

    now = utcnow() if now is None else now
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
    if body.pay and (balance is None or balance < paid):
        raise InsufficientBalance(required=paid, balance=int(balance or 0))

    status = "PAID" if body.pay else "PENDING"
    paid_at = now if body.pay else None
    expires_at = None if body.pay else now + timedelta(seconds=payment_timeout_s)
    order_row = {
        "user_id": user_id,
        "status": status,
        "total_amount": total,
        "discount_amount": discount,
        "paid_amount": paid,
        "user_coupon_id": body.user_coupon_id,
        "created_at": now,
        "paid_at": paid_at,
        "expires_at": expires_at,
    }
    order_id: int = (await session.execute(_INSERT_ORDER, order_row)).scalar_one()

    for variant_id, quantity in lines:
        stock_params = {"p_variant": variant_id, "p_quantity": quantity}
        left = (await session.execute(_TAKE_STOCK, stock_params)).scalar_one_or_none()
        if left is None:
            stock = int((await session.execute(_STOCK_OF, stock_params)).scalar_one())
            after_rollback(session, partial(gate.learn, variant_id, stock))
            raise OutOfStock(variant_id=variant_id, requested=quantity, available=stock)
    after_commit(session, partial(gate.stock_changed, {i.product_id for i in items}))
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
    order = OrderOut(
        order_id=order_id,
        status=status,
        items=items,
        total_amount=total,
        discount_amount=discount,
        paid_amount=paid,
        user_coupon_id=body.user_coupon_id,
        created_at=now,
        paid_at=paid_at,
        expires_at=expires_at,
        payments=[],
    )
    if body.pay:
        await _take_payment(session, ranking, user_id, order, now)
    return order


async def _take_payment(
    session: AsyncSession, ranking: RankingService, user_id: int, order: OrderOut, now: datetime
) -> None:
    """Debit the wallet, append the PAYMENT, write ``order.paid``; ``order`` gains the payment."""
    await debit(session, user_id, order.paid_amount, order.order_id, now)
    payment = {
        "order_id": order.order_id,
        "user_id": user_id,
        "kind": "PAYMENT",
        "amount": order.paid_amount,
        "created_at": now,
    }
    payment_id: int = (await session.execute(_INSERT_PAYMENT, payment)).scalar_one()
    order.payments.append(
        PaymentOut(id=payment_id, kind="PAYMENT", amount=order.paid_amount, created_at=now)
    )
    event_id = await add_order_event(session, ORDER_PAID, order, user_id, now)
    # This process records its own sale after commit; its follower skips the event.
    ranking.claim(event_id)
    after_rollback(session, lambda: ranking.unclaim(event_id))
    sold = [(i.product_id, i.quantity) for i in order.items]
    after_commit(session, lambda: ranking.record_sale(sold, now))


async def _locked_order(session: AsyncSession, user_id: int, order_id: int) -> tuple[Any, int]:
    """The caller's order row and wallet balance, both locked for update (wallet first:
    the same lock order as placing an order).

    Raises:
        OrderNotFound: no such order, or another user's (404).
    """
    balance = (await session.execute(_LOCK_WALLET, {"p_user": user_id})).scalar_one_or_none()
    row = (await session.execute(_LOCK_ORDER, {"p_order": order_id, "p_user": user_id})).first()
    if row is None:
        raise OrderNotFound(order_id=order_id)
    return row, int(balance or 0)


async def pay_order(
    session: AsyncSession,
    ranking: RankingService,
    user_id: int,
    order_id: int,
    *,
    now: datetime | None = None,
) -> OrderOut:
    """Pay the caller's PENDING order from the wallet (``POST /orders/{id}/payment``).

    The status change is conditional (``WHERE status = 'PENDING' AND expires_at >
    now``), so a payment racing the expiry sweeper ends in exactly one of PAID or
    EXPIRED.

    Raises:
        OrderNotFound: not the caller's order (404).
        OrderNotPayable: not PENDING, or past ``expires_at`` (409; details status).
        InsufficientBalance: the wallet is short; the order stays PENDING (409).
    """
    now = utcnow() if now is None else now
    row, balance = await _locked_order(session, user_id, order_id)
    if row.status != "PENDING" or row.expires_at is None or row.expires_at <= now:
        status = "EXPIRED" if row.status == "PENDING" else row.status
        raise OrderNotPayable(order_id=order_id, status=status)
    if balance < row.paid_amount:
        raise InsufficientBalance(required=row.paid_amount, balance=balance)
    changed = (await session.execute(_MARK_PAID, {"p_order": order_id, "p_now": now})).first()
    if changed is None:
        raise OrderNotPayable(order_id=order_id, status="EXPIRED")
    order = (await load_orders(session, [changed]))[0]
    await _take_payment(session, ranking, user_id, order, now)
    return order


async def _order_lines(session: AsyncSession, order_id: int) -> list[tuple[int, int, int]]:
    """``[(variant_id, product_id, quantity)]`` of an order, by variant id (the lock order)."""
    result = await session.execute(_ORDER_LINES, {"p_order": order_id})
    return [(v, p, q) for v, p, q in result]


async def _release_holdings(
    session: AsyncSession, gate: StockGate, order_id: int, user_coupon_id: int | None, now: datetime
) -> list[tuple[int, int, int]]:
    """Put an order's units back (RELEASE movements) and return its coupon.

    The coupon goes back to ISSUED while it is still valid, else EXPIRED. The
    gate learns the released units after commit. Returns the order's lines.
    """
    lines = await _order_lines(session, order_id)
    for variant_id, _product_id, quantity in lines:
        await session.execute(_PUT_BACK_STOCK, {"p_variant": variant_id, "p_quantity": quantity})
    await session.execute(
        insert(inventory_movements),
        [
            {
                "variant_id": v,
                "kind": "RELEASE",
                "quantity": q,
                "order_id": order_id,
                "created_at": now,
            }
            for v, _p, q in lines
        ],
    )
    if user_coupon_id is not None:
        await session.execute(_RETURN_COUPON, {"p_user_coupon": user_coupon_id, "p_now": now})
    released = [(v, q) for v, _p, q in lines]
    after_commit(session, lambda: gate.release(released))
    after_commit(session, partial(gate.stock_changed, {p for _v, p, _q in lines}))
    return lines


async def cancel_order(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    order_id: int,
    *,
    now: datetime | None = None,
) -> OrderOut:
    """Cancel the caller's order in one transaction (``POST /orders/{id}/cancel``).

    PENDING: its stock and coupon are released. PAID: additionally the paid
    amount is refunded (REFUND ledger row and REFUND payment), its sales are
    subtracted from the ranking and an ``order.cancelled`` event is written.
    Any failure rolls all of it back.

    Raises:
        OrderNotFound: not the caller's order (404).
        OrderNotCancellable: already CANCELLED or EXPIRED (409; details status).
    """
    now = utcnow() if now is None else now
    row, _balance = await _locked_order(session, user_id, order_id)
    if row.status not in ("PENDING", "PAID"):
        raise OrderNotCancellable(order_id=order_id, status=row.status)
    changed = (
        await session.execute(
            _MARK_CANCELLED, {"p_order": order_id, "p_now": now, "p_status": row.status}
        )
    ).first()
    if changed is None:  # changed since it was read (another instance's sweeper)
        raise OrderNotCancellable(order_id=order_id, status="CHANGED")
    lines = await _release_holdings(session, gate, order_id, row.user_coupon_id, now)
    if row.status == "PAID":
        await refund(session, user_id, row.paid_amount, order_id, now)
        await session.execute(
            _INSERT_PAYMENT,
            {
                "order_id": order_id,
                "user_id": user_id,
                "kind": "REFUND",
                "amount": row.paid_amount,
                "created_at": now,
            },
        )
    order = (await load_orders(session, [changed]))[0]
    if row.status == "PAID":
        event_id = await add_order_event(session, ORDER_CANCELLED, order, user_id, now)
        ranking.claim(event_id)
        after_rollback(session, lambda: ranking.unclaim(event_id))
        sold = [(p, q) for _v, p, q in lines]
        paid_at = row.paid_at
        # Subtracted in the bucket where the sale was counted, so the window stays exact.
        after_commit(session, lambda: ranking.record_sale(sold, paid_at, sign=-1))
    return order


async def has_overdue(session: AsyncSession, now: datetime | None = None) -> bool:
    """Whether any PENDING order is past ``expires_at`` (a cheap read before sweeping)."""
    now = utcnow() if now is None else now
    return (await session.execute(_OVERDUE, {"p_now": now, "p_limit": 1})).first() is not None


async def expire_overdue(
    session: AsyncSession, gate: StockGate, *, now: datetime | None = None, limit: int = 50
) -> list[int]:
    """Expire up to ``limit`` PENDING orders past ``expires_at``; returns their ids.

    Each order's status change is conditional (``WHERE status = 'PENDING' AND
    expires_at <= now``): when several instances sweep at the same time, or a
    payment races the sweep, exactly one wins and the stock and coupon are
    released exactly once.
    """
    now = utcnow() if now is None else now
    candidates = (await session.execute(_OVERDUE, {"p_now": now, "p_limit": limit})).all()
    expired = []
    for order_id, user_coupon_id in candidates:
        if (await session.execute(_MARK_EXPIRED, {"p_order": order_id, "p_now": now})).first():
            await _release_holdings(session, gate, order_id, user_coupon_id, now)
            expired.append(order_id)
    return expired


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
