"""``/admin/*``: create products and coupons, restock variants (admin role required).

After commit the local gates learn the new values at once and the catalog read
cache drops what they change; other processes learn them within the gate
freshness bound (``FLASHSALE_GATE_FRESHNESS_S``) and the read-cache bound
(``FLASHSALE_READ_CACHE_S``).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from flashsale.api.deps import AdminUser, PathId, State, WriteSession
from flashsale.catalog import service as catalog
from flashsale.catalog.schemas import ProductDetail, ProductIn, RestockIn, VariantOut
from flashsale.coupons import service as coupons
from flashsale.coupons.schemas import CouponIn, CouponOut
from flashsale.db.session import after_commit

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/products", status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductIn, _admin: AdminUser, session: WriteSession, state: State
) -> ProductDetail:
    """Create a product with its variants and their opening stock."""
    product_id, stocked = await catalog.create_product(session, body)

    def learn() -> None:
        for variant_id, stock in stocked:
            state.stock_gate.learn(variant_id, stock)
        state.read_cache.invalidate_all()  # list pages gain the product

    after_commit(session, learn)
    return await catalog.get_product(session, product_id)


@router.post("/variants/{variant_id}/restock")
async def restock(
    variant_id: PathId, body: RestockIn, _admin: AdminUser, session: WriteSession, state: State
) -> VariantOut:
    """Add units to a variant (RESTOCK movement); 404 ``VARIANT_NOT_FOUND``."""
    product_id, stock = await catalog.restock(session, variant_id, body.quantity)
    after_commit(session, lambda: state.stock_gate.learn(variant_id, stock))
    after_commit(session, lambda: state.read_cache.invalidate_products((product_id,)))
    product = await catalog.get_product(session, product_id)
    return next(v for v in product.variants if v.id == variant_id)


@router.post("/coupons", status_code=status.HTTP_201_CREATED)
async def create_coupon(
    body: CouponIn, _admin: AdminUser, session: WriteSession, state: State
) -> CouponOut:
    """Create a first-come coupon of ``total_quantity``."""
    coupon = await coupons.create_coupon(session, body)
    terms = (coupon.issue_starts_at, coupon.issue_ends_at, coupon.valid_days)
    after_commit(
        session, lambda: state.coupon_gate.configure(coupon.id, coupon.total_quantity, terms)
    )
    return coupon
