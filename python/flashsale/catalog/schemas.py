"""Bodies of ``/products`` and ``/admin/products``. Money is integer KRW, times UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

ProductStatus = Literal["ON_SALE", "SOLD_OUT", "UPCOMING", "ENDED"]


class ProductSummary(BaseModel):
    id: int
    name: str
    price: int
    stock: int
    status: ProductStatus
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None


class VariantOut(BaseModel):
    id: int
    sku: str
    name: str
    price: int
    stock: int


class ProductDetail(ProductSummary):
    description: str
    per_user_limit: int | None
    variants: list[VariantOut]


class ProductPage(BaseModel):
    items: list[ProductSummary]
    next_cursor: str | None


class PopularItem(BaseModel):
    rank: int
    product_id: int
    name: str
    price: int
    quantity: int
    orders: int


class PopularOut(BaseModel):
    metric: Literal["quantity", "orders"]
    window_start: datetime
    window_end: datetime
    items: list[PopularItem]


class VariantIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: str = Field(min_length=1, max_length=200)
    price: int = Field(strict=True, ge=0, le=1_000_000_000)
    stock: int = Field(strict=True, ge=0, le=1_000_000_000)


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    sale_starts_at: AwareDatetime | None = None
    sale_ends_at: AwareDatetime | None = None
    per_user_limit: int | None = Field(strict=True, default=None, ge=1, le=1_000_000)
    variants: list[VariantIn] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _check(self) -> ProductIn:
        if (
            self.sale_starts_at is not None
            and self.sale_ends_at is not None
            and self.sale_ends_at <= self.sale_starts_at
        ):
            raise ValueError("sale_ends_at must be after sale_starts_at")
        skus = [v.sku for v in self.variants]
        if len(set(skus)) != len(skus):
            raise ValueError("variant skus must be distinct")
        return self


class RestockIn(BaseModel):
    quantity: int = Field(strict=True, ge=1, le=1_000_000_000)
