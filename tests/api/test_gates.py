"""The per-process C++ gates against the database (docs/architecture.md#gates): the gate
never grants what the database refused, is corrected from the database, and a local
"sold out" is re-checked once older than ``gate_freshness_s``. Several app instances on
one file stand for several worker processes."""

from __future__ import annotations

import anyio
import pytest

from flashsale.api.background import follow_order_events

from .support import Api, StartApp, expect, utc

pytestmark = pytest.mark.anyio


async def test_restock_reopens_a_variant_sold_out_in_the_gate(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 2))
    v = p["variants"][0]["id"]
    expect(await api.order(user, (v, 2)), 201)
    expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")  # the gate's answer
    await api.restock(v, 4)
    expect(await api.order(user, (v, 4)), 201)  # at once, within the freshness bound
    err = expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")
    assert err["details"]["available"] == 0
    api.assert_audit_ok()


async def test_fresh_check_sees_a_direct_database_restock(start_app: StartApp) -> None:
    async with start_app(gate_freshness_s=0) as api:
        user = await api.user(balance=100_000)
        p = await api.product((1_000, 1))
        v = p["variants"][0]["id"]
        expect(await api.order(user, (v, 1)), 201)
        expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")
        api.restock_directly(v, 3)
        order = expect(await api.order(user, (v, 3)), 201)
        assert order["items"][0]["quantity"] == 3
        err = expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")
        assert err["details"] == {"variant_id": v, "requested": 1, "available": 0}
        api.assert_audit_ok()


async def test_stale_sold_out_is_rechecked_after_the_bound(start_app: StartApp) -> None:
    async with start_app(gate_freshness_s=0.3) as api:
        user = await api.user(balance=100_000)
        p = await api.product((1_000, 1))
        v = p["variants"][0]["id"]
        expect(await api.order(user, (v, 1)), 201)
        api.restock_directly(v, 2)
        # within the bound the gate may still say "sold out" (the safe direction) ...
        await anyio.sleep(0.4)
        # ... past it, the database is asked before any refusal
        expect(await api.order(user, (v, 2)), 201)
        api.assert_audit_ok()


async def test_database_refusal_corrects_the_gate(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 5), (1_000, 5))
    v1, v2 = (v["id"] for v in p["variants"])
    # another writer takes 4 units of v1: the gate still believes 5
    api.sql("UPDATE variants SET stock = stock - 4 WHERE id = :v", v=v1)
    api.sql(
        "INSERT INTO inventory_movements (variant_id, kind, quantity, order_id, created_at) "
        "VALUES (:v, 'RESERVE', -4, NULL, :t)",
        v=v1,
        t=utc().replace(tzinfo=None),
    )
    before = api.snapshot()
    err = expect(await api.order(user, (v1, 3), (v2, 5)), 409, "OUT_OF_STOCK")
    assert err["details"] == {"variant_id": v1, "requested": 3, "available": 1}
    assert api.snapshot() == before
    assert api.state.stock_gate.pool.available(v1) == 1  # learnt from the database
    assert api.state.stock_gate.pool.available(v2) == 5  # its hold given back
    expect(await api.order(user, (v1, 1), (v2, 5)), 201)
    api.assert_audit_ok()


async def test_restock_in_another_instance(api: Api, start_app: StartApp) -> None:
    p = await api.product((1_000, 1))
    v = p["variants"][0]["id"]
    async with start_app(gate_freshness_s=0) as fresh:
        user = await fresh.user(balance=100_000)
        expect(await fresh.order(user, (v, 1)), 201)
        expect(await fresh.order(user, (v, 1)), 409, "OUT_OF_STOCK")
        await api.restock(v, 2)  # the admin is served by the other instance
        expect(await fresh.order(user, (v, 2)), 201)
    api.assert_audit_ok()


async def test_order_for_a_product_created_by_another_instance(
    api: Api, start_app: StartApp
) -> None:
    async with start_app() as other:
        p = await other.product((1_000, 5))
    user = await api.user(balance=100_000)
    expect(await api.order(user, (p["variants"][0]["id"], 1)), 201)


async def test_coupon_created_by_another_instance_can_be_issued(
    api: Api, start_app: StartApp
) -> None:
    async with start_app() as other:
        coupon = await other.coupon(total_quantity=1)
    user = await api.user()
    await api.issue(user, coupon["id"])
    expect(await api.post(f"/coupons/{coupon['id']}/issue", user), 409, "COUPON_ALREADY_ISSUED")
    later = await api.user()
    expect(await api.post(f"/coupons/{coupon['id']}/issue", later), 409, "COUPON_SOLD_OUT")
    api.assert_audit_ok()


async def test_coupon_sold_out_elsewhere_is_refused_and_learnt(
    api: Api, start_app: StartApp
) -> None:
    coupon = await api.coupon(total_quantity=1)
    async with start_app() as other:  # loads remaining = 1
        await api.issue(await api.user(), coupon["id"])  # the last one, on api
        late = await other.user()
        before = other.snapshot()
        r = await other.post(f"/coupons/{coupon['id']}/issue", late)
        expect(r, 409, "COUPON_SOLD_OUT")  # the gate admitted, the database refused
        assert other.snapshot() == before
        assert other.state.coupon_gate.gate.remaining(coupon["id"]) == 0
        assert expect(await other.get(f"/coupons/{coupon['id']}"), 200)["remaining_quantity"] == 0
    api.assert_audit_ok()


async def test_holder_asking_another_instance_hears_already_issued(
    api: Api, start_app: StartApp
) -> None:
    coupon = await api.coupon(total_quantity=1)
    async with start_app() as other:
        holder = await api.user()
        await api.issue(holder, coupon["id"])
        r = await other.client.post(f"/api/v1/coupons/{coupon['id']}/issue", headers=holder.headers)
        expect(r, 409, "COUPON_ALREADY_ISSUED")


async def test_a_sell_out_elsewhere_is_learnt_from_the_order_events(
    api: Api, start_app: StartApp
) -> None:
    """The follower re-reads the stock of variants other instances sold: the gate says
    "sold out" before any request of its own was refused by the database."""
    p = await api.product((1_000, 5))
    v = p["variants"][0]["id"]
    user = await api.user(balance=100_000)
    async with start_app(ranking_poll_s=2.0) as other:
        gate = other.state.stock_gate
        assert gate.pool.available(v) == 5  # loaded at start
        expect(await api.order(user, (v, 3)), 201)
        expect(await api.order(user, (v, 2)), 201)
        assert await follow_order_events(other.state) == 2
        assert gate.pool.available(v) == 0
        cancelled = expect(await api.get("/me/orders", user), 200)["items"][0]
        expect(await api.post(f"/orders/{cancelled['order_id']}/cancel", user), 200)
        await follow_order_events(other.state)
        assert gate.pool.available(v) == cancelled["items"][0]["quantity"]
    api.assert_audit_ok()
