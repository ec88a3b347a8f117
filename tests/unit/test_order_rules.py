"""The order rules without a database: variants, sale windows, purchase limits,
pricing, coupon use and balance (:mod:`flashsale.orders.rules`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale.errors import (
    CouponMinOrderNotMet,
    CouponNotUsable,
    InsufficientBalance,
    PurchaseLimitExceeded,
    SaleNotOpen,
    ValidationFailed,
    VariantNotFound,
)
from flashsale.orders import rules
from flashsale.orders.schemas import OrderIn

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass
class Row:
    id: int
    product_id: int
    price: int = 1_000
    product_name: str = "P"
    variant_name: str = "V"
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    per_user_limit: int | None = None


def _body(*items: dict[str, int]) -> OrderIn:
    return OrderIn.model_validate({"items": list(items)})


def test_unknown_variant_and_a_variant_of_another_product_are_refused() -> None:
    by_id = {1: Row(1, product_id=10)}
    with pytest.raises(VariantNotFound):
        rules.check_variants([(1, 1), (2, 1)], by_id, _body({"variant_id": 1, "quantity": 1}))
    body = _body({"variant_id": 1, "product_id": 11, "quantity": 1})
    with pytest.raises(ValidationFailed):
        rules.check_variants([(1, 1)], by_id, body)
    rules.check_variants([(1, 1)], by_id, _body({"variant_id": 1, "product_id": 10, "quantity": 1}))


@pytest.mark.parametrize(
    ("starts", "ends", "open_"),
    [
        (None, None, True),
        (NOW, None, True),  # starts ≤ now
        (NOW + timedelta(seconds=1), None, False),
        (None, NOW, False),  # now < ends
        (None, NOW + timedelta(seconds=1), True),
    ],
)
def test_sale_window(starts: datetime | None, ends: datetime | None, open_: bool) -> None:
    rows = [Row(1, 10, sale_starts_at=starts, sale_ends_at=ends)]
    if open_:
        rules.check_sale_windows(rows, NOW)
    else:
        with pytest.raises(SaleNotOpen):
            rules.check_sale_windows(rows, NOW)


def test_purchase_limit_counts_every_variant_of_a_product_and_what_is_held() -> None:
    rows = [Row(1, 10, per_user_limit=3), Row(2, 10, per_user_limit=3), Row(3, 20)]
    by_id = {r.id: r for r in rows}
    wanted = rules.units_per_product([(1, 1), (2, 1), (3, 5)], by_id)
    assert wanted == {10: 2, 20: 5}
    limits = rules.purchase_limits(rows)
    assert limits == {10: 3}
    rules.check_purchase_limits(limits, {10: 1}, wanted)  # 1 + 2 = 3
    with pytest.raises(PurchaseLimitExceeded) as refused:
        rules.check_purchase_limits(limits, {10: 2}, wanted)
    assert refused.value.details == {"product_id": 10, "limit": 3, "already": 2, "requested": 2}


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 100)), min_size=1, max_size=50))
def test_items_are_priced_at_unit_price_times_quantity(lines: list[tuple[int, int]]) -> None:
    by_id = {i: Row(i, product_id=i, price=price) for i, (price, _q) in enumerate(lines)}
    numbered = [(i, q) for i, (_price, q) in enumerate(lines)]
    items = rules.price_lines(numbered, by_id)
    assert [i.amount for i in items] == [price * q for price, q in lines]
    assert [(i.variant_id, i.quantity) for i in items] == numbered


def _coupon(**fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "user_id": 7,
        "status": "ISSUED",
        "expires_at": NOW + timedelta(days=1),
        "discount_type": "PERCENT",
        "discount_value": 10,
        "max_discount_amount": 1_500,
        "min_order_amount": 5_000,
    }
    return SimpleNamespace(**{**base, **fields})


def test_coupon_rules() -> None:
    assert rules.coupon_discount(_coupon(), 7, 10_000, NOW) == 1_000
    assert rules.coupon_discount(_coupon(), 7, 100_000, NOW) == 1_500  # capped
    with pytest.raises(CouponNotUsable):
        rules.coupon_discount(None, 7, 10_000, NOW)
    with pytest.raises(CouponNotUsable):
        rules.coupon_discount(_coupon(user_id=8), 7, 10_000, NOW)  # another user's
    with pytest.raises(CouponNotUsable):
        rules.coupon_discount(_coupon(status="USED"), 7, 10_000, NOW)
    with pytest.raises(CouponNotUsable):
        rules.coupon_discount(_coupon(expires_at=NOW), 7, 10_000, NOW)
    with pytest.raises(CouponMinOrderNotMet):
        rules.coupon_discount(_coupon(), 7, 4_999, NOW)


def test_balance_rule() -> None:
    rules.check_balance(1_000, 1_000)
    with pytest.raises(InsufficientBalance) as refused:
        rules.check_balance(999, 1_000)
    assert refused.value.details == {"required": 1_000, "balance": 999}
    with pytest.raises(InsufficientBalance):
        rules.check_balance(None, 1)  # no wallet holds nothing
