"""``/products``: catalog reads and the popular-products ranking."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from flashsale.api.deps import (
    Cursor,
    Limit,
    PathId,
    ReadSession,
    State,
    decode_cursor,
    encode_cursor,
)
from flashsale.catalog import service
from flashsale.catalog.schemas import PopularItem, PopularOut, ProductDetail, ProductPage

router = APIRouter(prefix="/products", tags=["catalog"])


@router.get("")
async def list_products(
    session: ReadSession, limit: Limit = 20, cursor: Cursor = None
) -> ProductPage:
    """Products by id: lowest variant price, total stock now, sale status."""
    items, more = await service.list_products(session, limit=limit, after_id=decode_cursor(cursor))
    return ProductPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


@router.get("/popular")
async def popular(
    state: State,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
    days: Annotated[int, Query(ge=1, le=7)] = 3,
    metric: Literal["quantity", "orders"] = "quantity",
) -> PopularOut:
    """Top products of the last ``days`` days (PAID orders; cancellations subtract).

    Served from this process's in-memory sliding window (C++), which every
    process keeps in step with the database (see :mod:`flashsale.ranking.service`).
    """
    entries = state.ranking.top(limit, days=days, metric=metric)
    start, end = state.ranking.window_bounds(days)
    info = await service.summaries(session, [e.product_id for e in entries])
    items = [
        PopularItem(
            rank=i,
            product_id=e.product_id,
            name=info[e.product_id].name if e.product_id in info else "",
            price=info[e.product_id].price if e.product_id in info else 0,
            quantity=e.quantity,
            orders=e.orders,
        )
        for i, e in enumerate(entries, start=1)
    ]
    return PopularOut(metric=metric, window_start=start, window_end=end, items=items)


@router.get("/{product_id}")
async def get_product(product_id: PathId, session: ReadSession) -> ProductDetail:
    """One product with its variants (404 ``PRODUCT_NOT_FOUND``)."""
    return await service.get_product(session, product_id)
