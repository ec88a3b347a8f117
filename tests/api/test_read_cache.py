"""The catalog read cache over HTTP: hits without the database, the freshness bound,
own writes visible at once, the other instance's sales within the follower's poll,
``Cache-Control``/``Age``, coalescing, and ``read_cache_s=0``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import flashsale.catalog.router as catalog_router
from flashsale.api.background import sweep_once
from flashsale.catalog import service
from flashsale.catalog.schemas import ProductDetail
from flashsale.db.session import transaction

from .support import Api, StartApp, expect, utc

pytestmark = pytest.mark.anyio

#: Long enough that only an invalidation can explain a fresh answer within a test.
LONG_S = 30.0
CACHED = ("/products/1", "/products", "/products/popular")


@pytest.fixture
def read_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the read transactions the catalog routes open (one list item each)."""
    opened: list[int] = []

    def counting(
        factory: async_sessionmaker[AsyncSession],
    ) -> AbstractAsyncContextManager[AsyncSession]:
        opened.append(1)
        return transaction(factory)

    monkeypatch.setattr(catalog_router, "transaction", counting)
    return opened


def cache_headers(response: httpx.Response) -> tuple[int, int]:
    """``(max-age, Age)`` of a cached catalog response, checked for shape."""
    match = re.fullmatch(r"public, max-age=(\d+)", response.headers["cache-control"])
    assert match, response.headers["cache-control"]
    return int(match[1]), int(response.headers["age"])


def stock_of(body: dict[str, Any]) -> list[int]:
    return [int(v["stock"]) for v in body["variants"]]


@asynccontextmanager
async def long_cache(start_app: StartApp, **settings: Any) -> AsyncIterator[Api]:
    async with start_app(read_cache_s=LONG_S, **settings) as api:
        yield api


async def test_a_hit_serves_the_stored_body_without_the_database(
    start_app: StartApp, read_sessions: list[int]
) -> None:
    async with long_cache(start_app) as api:
        p = await api.product((1_000, 10))
        path = f"/products/{p['id']}"
        first = await api.get(path)
        assert expect(first, 200) == p
        assert first.headers["content-type"] == "application/json"
        opened = len(read_sessions)
        assert opened == 1
        # Changed behind the cache's back: the cached answer stands until it expires.
        api.sql("UPDATE variants SET stock = 3 WHERE id = :v", v=p["variants"][0]["id"])
        for _ in range(5):
            again = await api.get(path)
            assert again.content == first.content
        assert len(read_sessions) == opened
        assert api.state.read_cache.hits == 5
        # The body is what the response model serializes.
        assert ProductDetail.model_validate_json(again.content) == ProductDetail(**p)


async def test_an_entry_expires_after_the_bound(start_app: StartApp) -> None:
    async with start_app(read_cache_s=0.3) as api:
        p = await api.product((1_000, 10))
        path = f"/products/{p['id']}"
        listed = expect(await api.get("/products"), 200)
        assert stock_of(expect(await api.get(path), 200)) == [10]
        api.sql("UPDATE variants SET stock = 3 WHERE id = :v", v=p["variants"][0]["id"])
        assert stock_of(expect(await api.get(path), 200)) == [10]
        assert expect(await api.get("/products"), 200) == listed
        await anyio.sleep(0.35)
        assert stock_of(expect(await api.get(path), 200)) == [3]
        assert expect(await api.get("/products"), 200)["items"][0]["stock"] == 3


async def test_headers_on_a_fill_and_on_a_hit(start_app: StartApp) -> None:
    async with long_cache(start_app) as api:
        p = await api.product((1_000, 10))
        for path in (f"/products/{p['id']}", "/products", "/products/popular"):
            fill = await api.get(path)
            hit = await api.get(path)
            for response in (fill, hit):
                expect(response, 200)
                max_age, age = cache_headers(response)
                assert 0 <= age <= max_age <= LONG_S
                assert max_age - age >= LONG_S - 2  # just filled: nearly all of it left
            assert hit.content == fill.content


async def test_the_default_bound_is_one_second(api: Api) -> None:
    assert api.state.settings.read_cache_s == 1.0
    p = await api.product()
    response = await api.get(f"/products/{p['id']}")
    assert cache_headers(response) in {(0, 0), (1, 0)}


async def test_own_order_cancel_and_expiry_are_visible_at_once(start_app: StartApp) -> None:
    async with long_cache(start_app, order_expiry_sweep_s=60) as api:  # the test sweeps
        user = await api.user(balance=100_000)
        p = await api.product((1_000, 10), (2_000, 5))
        v1, v2 = (v["id"] for v in p["variants"])
        path = f"/products/{p['id']}"

        async def shown() -> tuple[list[int], int]:
            detail = expect(await api.get(path), 200)
            listed = expect(await api.get("/products"), 200)["items"]
            return stock_of(detail), next(i["stock"] for i in listed if i["id"] == p["id"])

        assert await shown() == ([10, 5], 15)
        expect(await api.order(user, (v1, 3), (v2, 1)), 201)  # paid
        assert await shown() == ([7, 4], 11)
        pending = expect(
            await api.post(
                "/orders", user, json={"items": [{"variant_id": v1, "quantity": 2}], "pay": False}
            ),
            201,
        )
        assert await shown() == ([5, 4], 9)
        expect(await api.post(f"/orders/{pending['order_id']}/cancel", user), 200)
        assert await shown() == ([7, 4], 11)

        late = expect(
            await api.post(
                "/orders", user, json={"items": [{"variant_id": v2, "quantity": 4}], "pay": False}
            ),
            201,
        )
        assert await shown() == ([7, 0], 7)
        api.sql(
            "UPDATE orders SET expires_at = :t WHERE id = :o",
            t=(utc() - timedelta(seconds=1)).replace(tzinfo=None),
            o=late["order_id"],
        )
        assert await sweep_once(api.state) == 1
        assert await shown() == ([7, 4], 11)


async def test_admin_restock_and_creation_are_visible_at_once(start_app: StartApp) -> None:
    async with long_cache(start_app) as api:
        p = await api.product((1_000, 0))
        path = f"/products/{p['id']}"
        detail = expect(await api.get(path), 200)
        assert (stock_of(detail), detail["status"]) == ([0], "SOLD_OUT")
        assert [i["id"] for i in expect(await api.get("/products"), 200)["items"]] == [p["id"]]
        await api.restock(p["variants"][0]["id"], 4)
        detail = expect(await api.get(path), 200)
        assert (stock_of(detail), detail["status"]) == ([4], "ON_SALE")
        q = await api.product()
        listed = expect(await api.get("/products"), 200)["items"]
        assert [(i["id"], i["stock"]) for i in listed] == [(p["id"], 4), (q["id"], 10)]


def ranked(body: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(i["product_id"], i["quantity"], i["orders"]) for i in body["items"]]


async def test_popular_shows_a_new_sale_at_once(start_app: StartApp) -> None:
    async with long_cache(start_app) as api:
        user = await api.user(balance=100_000)
        a = await api.product((1_000, 100))
        b = await api.product((1_000, 100))
        va, vb = a["variants"][0]["id"], b["variants"][0]["id"]
        assert ranked(expect(await api.get("/products/popular"), 200)) == []
        expect(await api.order(user, (va, 2)), 201)
        assert ranked(expect(await api.get("/products/popular"), 200)) == [(a["id"], 2, 1)]
        # Paid later: the sale counts when paid.
        pending = expect(
            await api.post(
                "/orders", user, json={"items": [{"variant_id": vb, "quantity": 3}], "pay": False}
            ),
            201,
        )
        assert ranked(expect(await api.get("/products/popular"), 200)) == [(a["id"], 2, 1)]
        expect(await api.post(f"/orders/{pending['order_id']}/payment", user), 200)
        assert ranked(expect(await api.get("/products/popular"), 200)) == [
            (b["id"], 3, 1),
            (a["id"], 2, 1),
        ]
        expect(await api.post(f"/orders/{pending['order_id']}/cancel", user), 200)
        assert ranked(expect(await api.get("/products/popular"), 200)) == [(a["id"], 2, 1)]


async def test_another_instances_sale_is_seen_when_the_follower_applies_it(
    start_app: StartApp,
) -> None:
    async with (
        long_cache(start_app, ranking_poll_s=0.05) as api,
        long_cache(start_app, ranking_poll_s=0.05) as other,
    ):
        p = await api.product((1_000, 10))
        path = f"/products/{p['id']}"
        assert stock_of(expect(await api.get(path), 200)) == [10]
        assert ranked(expect(await api.get("/products/popular"), 200)) == []
        user = await other.user(balance=100_000)
        expect(await other.order(user, (p["variants"][0]["id"], 4)), 201)
        # Well within the 30 s bound: the follower's order.paid event drops the entries.
        with anyio.fail_after(5):
            while True:
                if stock_of(expect(await api.get(path), 200)) == [6]:
                    break
                await anyio.sleep(0.05)
        assert ranked(expect(await api.get("/products/popular"), 200)) == [(p["id"], 4, 1)]


async def test_read_cache_zero_reads_the_database_every_time(
    start_app: StartApp, read_sessions: list[int]
) -> None:
    async with start_app(read_cache_s=0) as api:
        p = await api.product((1_000, 10))
        path = f"/products/{p['id']}"
        assert stock_of(expect(await api.get(path), 200)) == [10]
        api.sql("UPDATE variants SET stock = 3 WHERE id = :v", v=p["variants"][0]["id"])
        response = await api.get(path)
        assert stock_of(expect(response, 200)) == [3]
        assert cache_headers(response) == (0, 0)
        assert len(read_sessions) == 2
        assert len(api.state.read_cache) == 0


async def test_concurrent_misses_are_one_database_read(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with long_cache(start_app) as api:
        p = await api.product((1_000, 10))
        reads = 0
        release = asyncio.Event()
        get_product = service.get_product

        async def slow(session: AsyncSession, product_id: int) -> ProductDetail:
            nonlocal reads
            reads += 1
            await release.wait()
            return await get_product(session, product_id)

        monkeypatch.setattr(service, "get_product", slow)
        requests = [asyncio.create_task(api.get(f"/products/{p['id']}")) for _ in range(20)]
        await asyncio.sleep(0.2)  # every request reaches the cache meanwhile
        release.set()
        bodies = {expect(await r, 200)["id"] for r in requests}
        assert bodies == {p["id"]}
        assert reads == 1 and api.state.read_cache.fills == 1


async def test_errors_are_not_cached(start_app: StartApp, read_sessions: list[int]) -> None:
    async with long_cache(start_app) as api:
        for _ in range(2):
            expect(await api.get("/products/42"), 404, "PRODUCT_NOT_FOUND")
        assert len(read_sessions) == 2
        expect(await api.get("/products", params={"cursor": "***"}), 422, "INVALID_CURSOR")
        expect(await api.get("/products/popular", params={"days": 8}), 422, "VALIDATION_ERROR")
        assert len(read_sessions) == 2 and len(api.state.read_cache) == 0


async def test_the_openapi_schema_keeps_the_response_models(api: Api) -> None:
    schema = expect(await api.client.get("/openapi.json"), 200)
    models = {
        "/api/v1/products/{product_id}": "ProductDetail",
        "/api/v1/products": "ProductPage",
        "/api/v1/products/popular": "PopularOut",
    }
    for path, model in models.items():
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}


async def test_hits_are_not_slowed_by_a_busy_database(start_app: StartApp) -> None:
    """A hit answers while every read connection is taken (it needs none)."""
    async with long_cache(start_app, db_pool_size=1) as api:
        p = await api.product()
        path = f"/products/{p['id']}"
        expect(await api.get(path), 200)
        engine = api.state.db.read_engine
        async with engine.connect() as c1, engine.connect() as c2:  # pool 1 + overflow 1
            with anyio.fail_after(5):
                for _ in range(3):
                    expect(await api.get(path), 200)
            assert c1 is not c2
