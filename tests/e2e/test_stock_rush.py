"""500 concurrent paid orders for 50 units, against a real server with 2 workers
(docs/invariants.md#stock, docs/invariants.md#money)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from .conftest import LiveServer


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

BUYERS = 500
STOCK = 50
PRICE = 10_000
CHARGE = 50_000


async def test_concurrent_orders_never_oversell(live_server: LiveServer) -> None:
    with anyio.fail_after(300):
        async with live_server.client(connections=250) as client:
            admin = await live_server.admin_headers(client)
            product = await live_server.create_product(
                client,
                admin,
                name="Hot Item",
                variants=[{"sku": "HOT-1", "name": "Standard", "price": PRICE, "stock": STOCK}],
            )
            variant_id = product["variants"][0]["id"]
            users = await live_server.seed_users(client, BUYERS, prefix="buyer", charge=CHARGE)
            body = {"items": [{"variant_id": variant_id, "quantity": 1}], "pay": True}

            responses = await asyncio.gather(
                *(client.post("/orders", headers=u.headers, json=body) for u in users)
            )

            statuses = Counter(r.status_code for r in responses)
            assert not [s for s in statuses if s >= 500], statuses
            assert statuses == {201: STOCK, 409: BUYERS - STOCK}, statuses
            refusals = [r.json() for r in responses if r.status_code == 409]
            assert Counter(e["code"] for e in refusals) == {"OUT_OF_STOCK": BUYERS - STOCK}
            assert all(e["details"]["variant_id"] == variant_id for e in refusals), refusals[:3]

            orders = [r.json() for r in responses if r.status_code == 201]
            assert sum(item["quantity"] for o in orders for item in o["items"]) == STOCK
            assert len({o["order_id"] for o in orders}) == STOCK
            for order in orders:
                assert order["status"] == "PAID"
                assert order["total_amount"] == PRICE
                assert order["discount_amount"] == 0
                assert order["paid_amount"] == PRICE

            detail = live_server.expect(await client.get(f"/products/{product['id']}"), 200)
            assert detail["stock"] == 0
            assert [v["stock"] for v in detail["variants"]] == [0]

            # Every wallet = charged - paid (the audit also checks balance = ledger).
            paid_by_user = {
                u.user_id: r.json()["paid_amount"] if r.status_code == 201 else 0
                for u, r in zip(users, responses, strict=True)
            }
            wallets = await asyncio.gather(
                *(client.get("/me/wallet", headers=u.headers) for u in users)
            )
            for user, wallet in zip(users, wallets, strict=True):
                got = live_server.expect(wallet, 200)
                assert got["user_id"] == user.user_id
                assert got["balance"] == CHARGE - paid_by_user[user.user_id], user.email

            # Sold out stays sold out.
            late = await client.post("/orders", headers=users[0].headers, json=body)
            assert late.status_code == 409
            assert live_server.error_code(late) == "OUT_OF_STOCK"

        await live_server.assert_audit_clean()
