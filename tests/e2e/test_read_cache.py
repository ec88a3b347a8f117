"""The catalog read cache across the workers of a real server: a sale on one worker shows
on every worker's product page once their followers apply its ``order.paid`` event, well
before the cache's own bound."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    import httpx

    from .conftest import ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

#: The cache's bound here: long, so only the followers can explain a prompt update.
READ_CACHE_S = 10.0
#: The followers poll every 0.5 s (the default); the rest is margin for a loaded machine.
FOLLOWED_WITHIN_S = 2.0
#: Reads at once, over as many connections: both workers answer some of them.
READS = 16


async def shown_stock(client: httpx.AsyncClient, product_id: int) -> set[int]:
    """The stock every one of ``READS`` simultaneous reads of the product page shows."""
    responses = await asyncio.gather(*(client.get(f"/products/{product_id}") for _ in range(READS)))
    for r in responses:
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"].startswith("public, max-age=")
        assert int(r.headers["age"]) <= READ_CACHE_S
    return {int(r.json()["stock"]) for r in responses}


async def test_a_sale_on_one_worker_shows_on_every_worker_within_the_follow_interval(
    server_factory: ServerFactory,
) -> None:
    server = await anyio.to_thread.run_sync(
        lambda: server_factory.start({"FLASHSALE_READ_CACHE_S": str(READ_CACHE_S)})
    )
    with anyio.fail_after(60):
        async with server.client(connections=READS) as client:
            admin = await server.admin_headers(client)
            product = await server.create_product(
                client,
                admin,
                name="Cached",
                variants=[{"sku": "CACHED", "name": "One", "price": 1_000, "stock": 10}],
            )
            (user,) = await server.seed_users(client, 1, prefix="reader", charge=10_000)
            for _ in range(3):  # both workers fill their entry
                assert await shown_stock(client, product["id"]) == {10}

            sold_at = time.monotonic()
            line = {"variant_id": product["variants"][0]["id"], "quantity": 1}
            body = {"items": [line], "pay": True}
            order = await client.post("/orders", headers=user.headers, json=body)
            assert order.status_code == 201, order.text
            while True:
                shown = await shown_stock(client, product["id"])
                if shown == {9}:
                    break
                elapsed = time.monotonic() - sold_at
                assert elapsed <= FOLLOWED_WITHIN_S, f"still {shown} after {elapsed:.2f} s"
                await anyio.sleep(0.05)
            print(f"every worker shows the sale after {time.monotonic() - sold_at:.3f} s")
            popular = await client.get("/products/popular")
            assert [i["product_id"] for i in popular.json()["items"]] == [product["id"]]
