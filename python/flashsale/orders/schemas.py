"""Bodies of ``/orders``. Money is integer KRW, times UTC."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from flashsale.db.types import MAX_ID


class OrderLineIn(BaseModel):
    """One line: a variant, or a product that has exactly one variant."""

    variant_id: int | None = Field(strict=True, default=None, ge=1, le=MAX_ID)
    product_id: int | None = Field(strict=True, default=None, ge=1, le=MAX_ID)
    quantity: int = Field(strict=True, ge=1, le=100)

    @model_validator(mode="after")
    def _one_target(self) -> OrderLineIn:
        if self.variant_id is None and self.product_id is None:
            raise ValueError("give variant_id (or product_id for a single-variant product)")
        return self


class OrderIn(BaseModel):
    items: list[OrderLineIn] = Field(min_length=1, max_length=50)
    user_coupon_id: int | None = Field(strict=True, default=None, ge=1, le=MAX_ID)
    #: ``true``: order and pay in one transaction. ``false``: a PENDING order that holds
    #: its stock and coupon until ``expires_at``; pay it with ``POST /orders/{id}/payment``.
    pay: bool = Field(strict=True, default=True)


class OrderItemOut(BaseModel):
    product_id: int
    variant_id: int
    product_name: str
    variant_name: str
    unit_price: int
    quantity: int
    amount: int


class PaymentOut(BaseModel):
    id: int
    kind: str
    amount: int
    created_at: datetime


class OrderOut(BaseModel):
    order_id: int
    status: str
    items: list[OrderItemOut]
    total_amount: int
    discount_amount: int
    paid_amount: int
    user_coupon_id: int | None
    created_at: datetime
    paid_at: datetime | None
    expires_at: datetime | None
    payments: list[PaymentOut]


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None
