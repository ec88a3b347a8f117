"""Catalog reads and admin writes.

Stock shown to clients is read from the database (the source of truth), never
from the per-process gate. The routes serve these reads through the per-process
:class:`~flashsale.catalog.cache.ReadCache`, so the stock shown is at most
``FLASHSALE_READ_CACHE_S`` (default 1 s) old, and is re-read sooner when this
process learns of a change (its own committed writes, the order events its
ranking follower applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.catalog.schemas import (
    ProductDetail,
    ProductIn,
    ProductStatus,
    ProductSummary,
    VariantOut,
)
from flashsale.db.models import inventory_movements, products, variants
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx, run_in_session
from flashsale.errors import ProductNotFound, ValidationFailed, VariantNotFound


def window_is_open(starts: datetime | None, ends: datetime | None, now: datetime) -> bool:
    """Whether ``starts ≤ now < ends``: the start is inclusive, the end exclusive, and a
    missing (None) bound is open. Times are aware UTC datetimes.

    The one rule of every time window (docs/rules.md): a product's sale window
    (``sale_starts_at``/``sale_ends_at``, checked when an order is placed) and a
    coupon's issue window (``issue_starts_at``/``issue_ends_at``, checked when a
    coupon is issued).
    """
    return (starts is None or starts <= now) and (ends is None or now < ends)


def product_status(
    starts_at: datetime | None, ends_at: datetime | None, stock: int, now: datetime
) -> ProductStatus:
    """UPCOMING before the sale window, ENDED after it, else SOLD_OUT or ON_SALE."""
    if starts_at is not None and now < starts_at:
        return "UPCOMING"
    if ends_at is not None and now >= ends_at:
        return "ENDED"
    return "SOLD_OUT" if stock <= 0 else "ON_SALE"


def _summary_select() -> Any:
    return (
        select(
            products.c.id,
            products.c.name,
            products.c.sale_starts_at,
            products.c.sale_ends_at,
            func.min(variants.c.price).label("price"),
            func.sum(variants.c.stock).label("stock"),
        )
        .join(variants, variants.c.product_id == products.c.id)
        .group_by(
            products.c.id, products.c.name, products.c.sale_starts_at, products.c.sale_ends_at
        )
    )


def _summary(row: Any, now: datetime) -> ProductSummary:
    stock = int(row.stock or 0)
    return ProductSummary(
        id=row.id,
        name=row.name,
        price=int(row.price or 0),
        stock=stock,
        status=product_status(row.sale_starts_at, row.sale_ends_at, stock, now),
        sale_starts_at=row.sale_starts_at,
        sale_ends_at=row.sale_ends_at,
    )


async def list_products(
    session: AsyncSession, *, limit: int, after_id: int | None
) -> tuple[list[ProductSummary], bool]:
    """A page of products by ascending id; returns ``(items, has_more)``."""
    stmt = _summary_select().order_by(products.c.id).limit(limit + 1)
    if after_id is not None:
        stmt = stmt.where(products.c.id > after_id)
    rows = (await session.execute(stmt)).all()
    now = utcnow()
    return [_summary(r, now) for r in rows[:limit]], len(rows) > limit


async def summaries(session: AsyncSession, product_ids: Sequence[int]) -> dict[int, ProductSummary]:
    """Summaries of the given products, keyed by id (missing ids are left out)."""
    if not product_ids:
        return {}
    rows = (await session.execute(_summary_select().where(products.c.id.in_(product_ids)))).all()
    now = utcnow()
    return {r.id: _summary(r, now) for r in rows}


_PRODUCT = select(products).where(products.c.id == bindparam("p_product"))
_PRODUCT_VARIANTS = (
    select(variants.c.id, variants.c.sku, variants.c.name, variants.c.price, variants.c.stock)
    .where(variants.c.product_id == bindparam("p_product"))
    .order_by(variants.c.id)
)


def _detail(product: Any, rows: Sequence[Any]) -> ProductDetail:
    vs = [VariantOut(id=r.id, sku=r.sku, name=r.name, price=r.price, stock=r.stock) for r in rows]
    stock = sum(v.stock for v in vs)
    now = utcnow()
    return ProductDetail(
        id=product.id,
        name=product.name,
        price=min((v.price for v in vs), default=0),
        stock=stock,
        status=product_status(product.sale_starts_at, product.sale_ends_at, stock, now),
        sale_starts_at=product.sale_starts_at,
        sale_ends_at=product.sale_ends_at,
        description=product.description,
        per_user_limit=product.per_user_limit,
        variants=vs,
    )


async def get_product(session: AsyncSession, product_id: int) -> ProductDetail:
    """One product with its variants.

    Raises:
        ProductNotFound: no such product (404).
    """
    params = {"p_product": product_id}
    product = (await session.execute(_PRODUCT, params)).first()
    if product is None:
        raise ProductNotFound(product_id=product_id)
    return _detail(product, (await session.execute(_PRODUCT_VARIANTS, params)).all())


def read_product(conn: Connection, product_id: int) -> ProductDetail:
    """:func:`get_product` on ``conn`` (inside a writer operation: it sees the
    operation's own writes).

    Raises:
        ProductNotFound: no such product (404).
    """
    params = {"p_product": product_id}
    product = conn.execute(_PRODUCT, params).first()
    if product is None:
        raise ProductNotFound(product_id=product_id)
    return _detail(product, conn.execute(_PRODUCT_VARIANTS, params).all())


def create_product_op(tx: Tx, *, body: ProductIn) -> tuple[int, list[tuple[int, int]]]:
    """Insert a product, its variants and a RESTOCK movement per stocked variant (a
    writer operation).

    Returns ``(product_id, [(variant_id, stock), ...])``.

    Raises:
        ValidationFailed: a SKU is already used by another variant (422); in a writer
            batch only this operation's savepoint is rolled back.
    """
    conn = tx.conn
    now = utcnow()
    product_id: int = conn.execute(
        insert(products)
        .values(
            name=body.name,
            description=body.description,
            sale_starts_at=body.sale_starts_at,
            sale_ends_at=body.sale_ends_at,
            per_user_limit=body.per_user_limit,
            created_at=now,
        )
        .returning(products.c.id)
    ).scalar_one()
    stocked: list[tuple[int, int]] = []
    for v in body.variants:
        try:
            variant_id: int = conn.execute(
                insert(variants)
                .values(product_id=product_id, sku=v.sku, name=v.name, price=v.price, stock=v.stock)
                .returning(variants.c.id)
            ).scalar_one()
        except IntegrityError as exc:
            raise ValidationFailed("SKU already exists", field="variants.sku", sku=v.sku) from exc
        stocked.append((variant_id, v.stock))
    movements = [
        {"variant_id": vid, "kind": "RESTOCK", "quantity": qty, "order_id": None, "created_at": now}
        for vid, qty in stocked
        if qty > 0
    ]
    if movements:
        conn.execute(insert(inventory_movements), movements)
    return product_id, stocked


async def create_product(
    session: AsyncSession, body: ProductIn
) -> tuple[int, list[tuple[int, int]]]:
    """:func:`create_product_op` in ``session``'s transaction (``flashsale seed``).

    Raises:
        ValidationFailed: a SKU is already used by another variant (422).
    """
    return await run_in_session(session, partial(create_product_op, body=body))


def restock_op(tx: Tx, *, variant_id: int, quantity: int) -> tuple[int, int]:
    """Add ``quantity`` units (RESTOCK movement); returns ``(product_id, new_stock)`` (a
    writer operation).

    Raises:
        VariantNotFound: no such variant (404).
    """
    row = tx.conn.execute(
        update(variants)
        .where(variants.c.id == variant_id)
        .values(stock=variants.c.stock + quantity)
        .returning(variants.c.product_id, variants.c.stock)
    ).first()
    if row is None:
        raise VariantNotFound(variant_id=variant_id)
    tx.conn.execute(
        insert(inventory_movements).values(
            variant_id=variant_id,
            kind="RESTOCK",
            quantity=quantity,
            order_id=None,
            created_at=utcnow(),
        )
    )
    return int(row[0]), int(row[1])
