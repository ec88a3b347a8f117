"""The end checks of ``flashsale demo`` on what the service serves, over real HTTP.

After the scenarios: every abandoned pay-later order expired (:func:`check_expiries`),
every variant's stock is the seeded stock minus what stays sold (:func:`check_stock`),
wallets hold charged - paid + refunded (:func:`check_wallets`), and every instance's
popular ranking agrees with the paid orders (:func:`fetch_popular`). Each returns
findings (empty: all agree). The checks of what was stored (outbox, orders, keys,
events) are in :mod:`flashsale.demo.events`.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.demo.client import ApiClient, run_pool
from flashsale.demo.common import (
    EXPIRY_GRACE_S,
    MAX_NOTES,
    sleep_until,
)
from flashsale.demo.world import (
    CatalogProduct,
    DemoUser,
    TrackedOrder,
    World,
)

__all__ = [
    "check_expiries",
    "check_stock",
    "check_wallets",
    "fetch_popular",
]


async def check_expiries(api: ApiClient, world: World, *, concurrency: int) -> list[str]:
    """Every abandoned pay-later order of shopping must become EXPIRED.

    Waits until the latest ``expires_at`` has passed, then polls ``GET /orders/{id}``
    of each until it is EXPIRED (at most ``EXPIRY_GRACE_S`` past its deadline). Returns
    one finding per order that did not expire (empty when all did).
    """
    findings: list[str] = []
    orders = list(world.abandoned)
    deadlines = [o.expires_at for o in orders if o.expires_at is not None]
    if not deadlines:
        return findings
    await sleep_until(max(deadlines))

    async def check(order: TrackedOrder) -> None:
        give_up = (order.expires_at or max(deadlines)) + timedelta(seconds=EXPIRY_GRACE_S)
        while True:
            reply = await api.request(
                "GET", f"/orders/{order.order_id}", headers=order.user.headers
            )
            status = reply.json_dict().get("status")
            if status == "EXPIRED":
                world.expired(order)
                world.lifecycle.expired += 1
                return
            if not reply.ok or status != "PENDING" or datetime.now(UTC) > give_up:
                findings.append(
                    f"pay-later order {order.order_id} is {status or reply.code} "
                    f"after its deadline {order.expires_at}"
                )
                return
            await asyncio.sleep(0.2)

    await run_pool(orders, check, concurrency=concurrency)
    return findings[:MAX_NOTES]


async def check_stock(api: ApiClient, world: World, *, concurrency: int) -> list[str]:
    """Every variant's stock (``GET /products/{id}``) must be the seeded stock minus the
    units of the orders that are PAID or PENDING now: units of cancelled and expired
    orders are back. Returns one finding per mismatch (empty when all agree)."""
    findings: list[str] = []
    expected = world.expected_stock()

    async def check(product: CatalogProduct) -> None:
        reply = await api.request("GET", f"/products/{product.id}")
        if not reply.ok:
            findings.append(f"GET /products/{product.id}: {reply.status} {reply.code}")
            return
        for variant in reply.json_dict().get("variants") or []:
            want = expected.get(int(variant["id"]))
            if variant.get("stock") != want:
                findings.append(
                    f"variant {variant['id']} of product {product.id} has stock "
                    f"{variant.get('stock')}, expected {want}"
                )

    await run_pool(world.all_products, check, concurrency=concurrency)
    return findings[:MAX_NOTES]


async def check_wallets(
    api: ApiClient, world: World, *, sample: int, rng: random.Random, concurrency: int
) -> tuple[int, list[str]]:
    """Compare ``GET /me/wallet`` with charged - paid + refunded: for ``sample`` random
    users and every user who got a refund.

    Returns ``(wallets checked, findings)``; one finding per mismatch.
    """
    findings: list[str] = []
    chosen = set(rng.sample(world.users, min(sample, len(world.users))))
    chosen.update(u for u in world.users if u.refunded)

    async def check(user: DemoUser) -> None:
        reply = await api.request("GET", "/me/wallet", headers=user.headers)
        balance = reply.json_dict().get("balance")
        if not reply.ok:
            findings.append(f"GET /me/wallet of {user.email}: {reply.status} {reply.code}")
        elif balance != user.expected_balance:
            findings.append(
                f"wallet of {user.email} holds {balance} KRW, expected {user.charged} charged "
                f"- {user.spent} paid + {user.refunded} refunded = {user.expected_balance}"
            )

    await run_pool(sorted(chosen, key=lambda u: u.index), check, concurrency=concurrency)
    return len(chosen), findings[:MAX_NOTES]


async def fetch_popular(
    api: ApiClient, world: World, *, limit: int = 5, settle_seconds: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    """``GET /products/popular?limit&days=3`` once every instance's ranking agrees with
    the paid orders.

    Every worker process of every instance serves the ranking from its own memory, fed
    by order events (from other instances through the database), so it may lag for a
    moment; this asks each instance in turn and polls for up to ``settle_seconds`` until
    three rounds in a row show, on every instance, the client's own tally (product id
    and units of the orders that stay PAID: cancelled sales leave the ranking), ties to
    the lower product id.

    Returns ``(last answer body, findings)``; findings are empty when it agreed, else
    name the instance that did not.
    """
    expected = world.expected_top(limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_seconds
    agreeing = 0
    body: dict[str, Any] = {}
    while True:
        differing: list[str] = []
        for instance in range(api.instances):
            reply = await api.request(
                "GET", "/products/popular", params={"limit": limit, "days": 3}, instance=instance
            )
            body = reply.json_dict()
            where = f" on {api.server_urls[instance]}" if api.instances > 1 else ""
            if not reply.ok:
                return body, [f"GET /products/popular{where} answered {reply.status} {reply.code}"]
            items = body.get("items") or []
            served = [(int(i["product_id"]), int(i["quantity"])) for i in items]
            if served != expected:
                differing.append(
                    f"popular ranking{where} {served} differs from the paid orders' "
                    f"top {limit} {expected}"
                )
        agreeing = 0 if differing else agreeing + 1
        if agreeing >= 3:
            return body, []
        if loop.time() > deadline:
            return body, differing
        await asyncio.sleep(0.2)
