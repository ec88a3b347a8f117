"""The order rules as pure functions: no database, no clock, no gate.

Each takes what the order path read (variant rows, units the buyer already holds,
the user coupon, the balance) and either returns a figure or raises the refusal the
API answers with. :mod:`flashsale.orders.service` reads and writes; these decide.
Money is integer KRW; times are timezone-aware UTC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from flashsale.catalog.service import window_is_open
from flashsale.coupons.service import compute_discount
from flashsale.errors import (
    CouponMinOrderNotMet,
    CouponNotUsable,
    InsufficientBalance,
    PurchaseLimitExceeded,
    SaleNotOpen,
    ValidationFailed,
    VariantNotFound,
)
from flashsale.orders.schemas import OrderIn, OrderItemOut

Line = tuple[int, int]


class VariantRow(Protocol):
    """What the order path reads of a variant and its product."""

    id: int
    product_id: int
    product_name: str
    variant_name: str
    price: int
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    per_user_limit: int | None


def check_variants(lines: Sequence[Line], by_id: Mapping[int, VariantRow], body: OrderIn) -> None:
    """Every line's variant exists, and a line naming both ``variant_id`` and
    ``product_id`` names a variant of that product.

    Raises:
        VariantNotFound: a variant does not exist (404).
        ValidationFailed: a variant is not of the product the line names (422).
    """
    for variant_id, _quantity in lines:
        if variant_id not in by_id:
            raise VariantNotFound(variant_id=variant_id)
    for line in body.items:
        if (
            line.variant_id is not None
            and line.product_id is not None
            and by_id[line.variant_id].product_id != line.product_id
        ):
            raise ValidationFailed(
                "variant_id is not a variant of product_id",
                field="items",
                variant_id=line.variant_id,
                product_id=line.product_id,
            )


def check_sale_windows(rows: Sequence[VariantRow], now: datetime) -> None:
    """Every product is on sale at ``now`` (``sale_starts_at ≤ now < sale_ends_at``).

    Raises:
        SaleNotOpen: a product's sale has not started or has ended (409).
    """
    for r in rows:
        if not window_is_open(r.sale_starts_at, r.sale_ends_at, now):
            raise SaleNotOpen(
                product_id=r.product_id,
                sale_starts_at=r.sale_starts_at.isoformat() if r.sale_starts_at else None,
                sale_ends_at=r.sale_ends_at.isoformat() if r.sale_ends_at else None,
            )


def units_per_product(lines: Sequence[Line], by_id: Mapping[int, VariantRow]) -> dict[int, int]:
    """Units asked for per product (several variants of one product add up)."""
    wanted: dict[int, int] = defaultdict(int)
    for variant_id, quantity in lines:
        wanted[by_id[variant_id].product_id] += quantity
    return dict(wanted)


def purchase_limits(rows: Sequence[VariantRow]) -> dict[int, int]:
    """``{product_id: per_user_limit}`` of the products that have a limit."""
    return {r.product_id: r.per_user_limit for r in rows if r.per_user_limit is not None}


def check_purchase_limits(
    limits: Mapping[int, int], held: Mapping[int, int], wanted: Mapping[int, int]
) -> None:
    """Units the buyer already holds (PAID or PENDING orders) plus this order's stay
    within each product's per-user limit.

    Raises:
        PurchaseLimitExceeded: a product's limit would be passed (409; details
            product_id, limit, already, requested).
    """
    for product_id, limit in sorted(limits.items()):
        already = int(held.get(product_id, 0))
        if already + wanted[product_id] > limit:
            raise PurchaseLimitExceeded(
                product_id=product_id, limit=limit, already=already, requested=wanted[product_id]
            )


def price_lines(lines: Sequence[Line], by_id: Mapping[int, VariantRow]) -> list[OrderItemOut]:
    """The order items, each a snapshot of the product name, variant name and unit
    price now, with ``amount = unit_price × quantity``."""
    return [
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


def coupon_discount(coupon: Any, user_id: int, total: int, now: datetime) -> int:
    """Discount (KRW) of a user coupon row joined with its coupon, after the rules:
    the caller's, ISSUED, not expired, the order at least its minimum.

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


def check_balance(balance: int | None, paid: int) -> None:
    """The wallet holds at least ``paid`` KRW (a user without a wallet holds 0).

    Raises:
        InsufficientBalance: it does not (409; details required, balance).
    """
    if balance is None or balance < paid:
        raise InsufficientBalance(required=paid, balance=int(balance or 0))
