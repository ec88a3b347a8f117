"""``/admin/*``: create products and coupons, restock variants (admin role required).

Each write is an operation of the process's group-commit writer. After commit the
local gates learn the new values at once and the catalog read cache drops what they
change (``after_commit`` hooks); other processes learn them within the gate
freshness bound (``FLASHSALE_GATE_FRESHNESS_S``) and the read-cache bound
(``FLASHSALE_READ_CACHE_S``).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from flashsale.api.deps import AdminUser, PathId, State
from flashsale.catalog import service as catalog
from flashsale.catalog.schemas import ProductDetail, ProductIn, RestockIn, VariantOut
from flashsale.coupons import service as coupons
from flashsale.coupons.schemas import CouponIn, CouponOut
from flashsale.db.writer import Tx

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/products", status_code=status.HTTP_201_CREATED)
async def create_product(body: ProductIn, _admin: AdminUser, state: State) -> ProductDetail:
    """Create a product with its variants and their opening stock (422
    ``VALIDATION_ERROR`` for a SKU already used)."""

    def write(tx: Tx) -> ProductDetail:
        product_id, stocked = catalog.create_product_op(tx, body=body)

        def learn() -> None:
            for variant_id, stock in stocked:
                state.stock_gate.learn(variant_id, stock)
            state.read_cache.invalidate_all()  # list pages gain the product

        tx.after_commit(learn)
        return catalog.read_product(tx.conn, product_id)

    return await state.writer.submit(write)


@router.post("/variants/{variant_id}/restock")
async def restock(
    variant_id: PathId, body: RestockIn, _admin: AdminUser, state: State
) -> VariantOut:
    """Add units to a variant (RESTOCK movement); 404 ``VARIANT_NOT_FOUND``."""

    def write(tx: Tx) -> VariantOut:
        product_id, stock = catalog.restock_op(tx, variant_id=variant_id, quantity=body.quantity)
        tx.after_commit(lambda: state.stock_gate.learn(variant_id, stock))
        tx.after_commit(lambda: state.read_cache.invalidate_products((product_id,)))
        product = catalog.read_product(tx.conn, product_id)
        return next(v for v in product.variants if v.id == variant_id)

    return await state.writer.submit(write)


@router.post("/coupons", status_code=status.HTTP_201_CREATED)
async def create_coupon(body: CouponIn, _admin: AdminUser, state: State) -> CouponOut:
    """Create a first-come coupon of ``total_quantity``."""

    def write(tx: Tx) -> CouponOut:
        coupon = coupons.create_coupon_op(tx, body=body)
        terms = (coupon.issue_starts_at, coupon.issue_ends_at, coupon.valid_days)
        tx.after_commit(
            lambda: state.coupon_gate.configure(coupon.id, coupon.total_quantity, terms)
        )
        return coupon

    return await state.writer.submit(write)
