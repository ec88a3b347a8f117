"""Bodies of ``/coupons``, ``/me/coupons`` and ``/admin/coupons``. Money KRW, times UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

DiscountType = Literal["FIXED", "PERCENT"]


class CouponIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    discount_type: DiscountType
    #: FIXED: KRW off; PERCENT: percent of the order total (1-100).
    discount_value: int = Field(strict=True, ge=1, le=1_000_000_000)
    max_discount_amount: int | None = Field(strict=True, default=None, ge=1, le=1_000_000_000)
    min_order_amount: int = Field(strict=True, default=0, ge=0, le=1_000_000_000)
    total_quantity: int = Field(strict=True, ge=1, le=100_000_000)
    issue_starts_at: AwareDatetime | None = None
    issue_ends_at: AwareDatetime | None = None
    valid_days: int = Field(strict=True, ge=1, le=3650)

    @model_validator(mode="after")
    def _check(self) -> CouponIn:
        if self.discount_type == "PERCENT" and self.discount_value > 100:
            raise ValueError("a PERCENT discount_value is at most 100")
        if (
            self.issue_starts_at is not None
            and self.issue_ends_at is not None
            and self.issue_ends_at <= self.issue_starts_at
        ):
            raise ValueError("issue_ends_at must be after issue_starts_at")
        return self


class CouponOut(BaseModel):
    id: int
    name: str
    discount_type: DiscountType
    discount_value: int
    max_discount_amount: int | None
    min_order_amount: int
    total_quantity: int
    remaining_quantity: int
    issue_starts_at: datetime | None
    issue_ends_at: datetime | None
    valid_days: int


class IssueOut(BaseModel):
    user_coupon_id: int
    coupon_id: int
    status: str
    issued_at: datetime
    expires_at: datetime


class MyCouponOut(BaseModel):
    user_coupon_id: int
    coupon: CouponOut
    status: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None
    order_id: int | None
