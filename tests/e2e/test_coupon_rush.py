"""A flash crowd for a 100-unit coupon, against a real server with 2 workers
(docs/invariants.md#coupons)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from .conftest import LiveServer


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

USERS = 1000
QUANTITY = 100


async def test_coupon_rush_issues_exactly_the_quantity(live_server: LiveServer) -> None:
    with anyio.fail_after(300):
        async with live_server.client(connections=250) as client:
            admin = await live_server.admin_headers(client)
            users = await live_server.seed_users(client, USERS, prefix="rush")
            coupon = await live_server.create_coupon(client, admin, total_quantity=QUANTITY)
            path = f"/coupons/{coupon['id']}/issue"

            responses = await asyncio.gather(
                *(client.post(path, headers=user.headers) for user in users)
            )

            statuses = Counter(r.status_code for r in responses)
            assert not [s for s in statuses if s >= 500], statuses
            assert statuses == {201: QUANTITY, 409: USERS - QUANTITY}, statuses
            codes = Counter(live_server.error_code(r) for r in responses if r.status_code == 409)
            assert codes == {"COUPON_SOLD_OUT": USERS - QUANTITY}, codes

            winners = [u for u, r in zip(users, responses, strict=True) if r.status_code == 201]
            issued_ids = [r.json()["user_coupon_id"] for r in responses if r.status_code == 201]
            assert len(set(issued_ids)) == QUANTITY, "a user coupon id was handed out twice"
            assert len({u.user_id for u in winners}) == QUANTITY
            for r in responses:
                if r.status_code == 201:
                    assert r.json()["coupon_id"] == coupon["id"]
                    assert r.json()["status"] == "ISSUED"

            after = live_server.expect(await client.get(f"/coupons/{coupon['id']}"), 200)
            assert after["remaining_quantity"] == 0
            assert after["total_quantity"] == QUANTITY

            # Each winner holds exactly one; a sample of the others holds none.
            async def held(headers: dict[str, str]) -> int:
                mine = live_server.expect(await client.get("/me/coupons", headers=headers), 200)
                return sum(1 for c in mine if c["coupon"]["id"] == coupon["id"])

            winner_counts = await asyncio.gather(*(held(u.headers) for u in winners))
            assert winner_counts == [1] * QUANTITY
            losers = [u for u, r in zip(users, responses, strict=True) if r.status_code != 201]
            loser_counts = await asyncio.gather(*(held(u.headers) for u in losers[:100]))
            assert loser_counts == [0] * 100

            # Asking again after the rush changes nothing.
            again = await client.post(path, headers=winners[0].headers)
            assert again.status_code == 409
            assert live_server.error_code(again) in {"COUPON_ALREADY_ISSUED", "COUPON_SOLD_OUT"}

        await live_server.assert_audit_clean()


async def test_one_user_double_tapping_gets_one_coupon(live_server: LiveServer) -> None:
    with anyio.fail_after(120):
        async with live_server.client(connections=20) as client:
            admin = await live_server.admin_headers(client)
            (user,) = await live_server.seed_users(client, 1, prefix="tapper")
            coupon = await live_server.create_coupon(client, admin, total_quantity=10)
            path = f"/coupons/{coupon['id']}/issue"

            responses = await asyncio.gather(
                *(client.post(path, headers=user.headers) for _ in range(5))
            )

            statuses = Counter(r.status_code for r in responses)
            assert statuses == {201: 1, 409: 4}, [(r.status_code, r.text) for r in responses]
            codes = {live_server.error_code(r) for r in responses if r.status_code == 409}
            assert codes == {"COUPON_ALREADY_ISSUED"}
            after = live_server.expect(await client.get(f"/coupons/{coupon['id']}"), 200)
            assert after["remaining_quantity"] == 9
            mine = live_server.expect(await client.get("/me/coupons", headers=user.headers), 200)
            assert [c["coupon"]["id"] for c in mine] == [coupon["id"]]

        await live_server.assert_audit_clean(cli=False)
