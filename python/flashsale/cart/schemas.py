"""Bodies of ``/me/cart``. Money is integer KRW."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flashsale.db.types import MAX_ID


class CartItemIn(BaseModel):
    """``PUT /me/cart/items/{variant_id}``: the quantity to hold in the cart (sets it)."""

    quantity: int = Field(strict=True, ge=1, le=100)


class CartItemOut(BaseModel):
    variant_id: int
    product_id: int
    product_name: str
    variant_name: str
    unit_price: int
    quantity: int
    amount: int
    #: The variant has at least ``quantity`` units in stock now (read from the database).
    in_stock: bool


class CartOut(BaseModel):
    items: list[CartItemOut]
    total_amount: int


class CheckoutIn(BaseModel):
    """``POST /me/cart/checkout``: the order options; the lines come from the cart."""

    user_coupon_id: int | None = Field(strict=True, default=None, ge=1, le=MAX_ID)
    pay: bool = Field(strict=True, default=True)
