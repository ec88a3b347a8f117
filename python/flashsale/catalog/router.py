"""``/products``: catalog reads and the popular-products ranking.

The three reads are served from this process's :class:`~flashsale.catalog.cache.ReadCache`:
a hit sends the stored JSON bytes without opening a database transaction; a miss
opens its read session inside the fill. ``response_model`` keeps the OpenAPI
schema of each route; the bodies are serialized by the same pydantic models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from flashsale.api.deps import (
    Cursor,
    Limit,
    PathId,
    State,
    decode_cursor,
    encode_cursor,
)
from flashsale.api.state import AppState
from flashsale.catalog import service
from flashsale.catalog.cache import Fill, Filled, Key, list_key, popular_key, product_key
from flashsale.catalog.schemas import (
    PopularItem,
    PopularOut,
    ProductDetail,
    ProductPage,
    ProductSummary,
)
from flashsale.db.session import transaction

#: Defaults of ``GET /products`` (page size) and ``GET /products/popular`` (limit,
#: days, metric): also the keys under which the edge serves their cached answers.
PAGE_LIMIT = 20
POPULAR_DEFAULTS: tuple[int, int, Literal["quantity", "orders"]] = (5, 3, "quantity")

router = APIRouter(prefix="/products", tags=["catalog"])


async def _serve(state: AppState, key: Key, fill: Fill) -> Response:
    """The cached (or freshly read) body with its ``Cache-Control`` and ``Age``."""
    cache = state.read_cache
    entry = await cache.get(key, fill)
    return Response(entry.body, media_type="application/json", headers=cache.headers(entry))


@router.get("", response_model=ProductPage)
async def list_products(state: State, limit: Limit = PAGE_LIMIT, cursor: Cursor = None) -> Response:
    """Products by id: lowest variant price, total stock, sale status.

    Stock is at most ``FLASHSALE_READ_CACHE_S`` old (see ``Age``).
    """
    after_id = decode_cursor(cursor)  # an invalid cursor is a 422 before the cache

    async def fill() -> Filled:
        async with transaction(state.db.read_session) as session:
            items, more = await service.list_products(session, limit=limit, after_id=after_id)
        page = ProductPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)
        return page.model_dump_json().encode(), [p.id for p in items]

    return await _serve(state, list_key(limit, after_id), fill)


@router.get("/popular", response_model=PopularOut)
async def popular(
    state: State,
    limit: Annotated[int, Query(ge=1, le=50)] = POPULAR_DEFAULTS[0],
    days: Annotated[int, Query(ge=1, le=7)] = POPULAR_DEFAULTS[1],
    metric: Literal["quantity", "orders"] = POPULAR_DEFAULTS[2],
) -> Response:
    """Top products of the last ``days`` days (PAID orders; cancellations subtract).

    Served from this process's in-memory sliding window (C++), which every
    process keeps in step with the database (see :mod:`flashsale.ranking.service`);
    the answer is cached until the ranking records a sale or cancellation, or for
    at most ``FLASHSALE_READ_CACHE_S``.
    """

    async def fill() -> Filled:
        entries = state.ranking.top(limit, days=days, metric=metric)
        start, end = state.ranking.window_bounds(days)
        info: dict[int, ProductSummary] = {}
        if entries:
            async with transaction(state.db.read_session) as session:
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
        out = PopularOut(metric=metric, window_start=start, window_end=end, items=items)
        # Names and prices never change; no stock is shown: only the ranking drops it.
        return out.model_dump_json().encode(), ()

    return await _serve(state, popular_key(limit, days, metric), fill)


@router.get("/{product_id}", response_model=ProductDetail)
async def get_product(product_id: PathId, state: State) -> Response:
    """One product with its variants (404 ``PRODUCT_NOT_FOUND``, never cached).

    Stock is at most ``FLASHSALE_READ_CACHE_S`` old (see ``Age``).
    """

    async def fill() -> Filled:
        async with transaction(state.db.read_session) as session:
            product = await service.get_product(session, product_id)
        return product.model_dump_json().encode(), (product_id,)

    return await _serve(state, product_key(product_id), fill)
