"""Pay later, payment, cancellation, refund and expiry (docs/rules.md, docs/invariants.md).

Every refusal is checked to change nothing; every success ends with the audit.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from flashsale.db.engine import make_sync_engine

from .support import Api, StartApp, User, expect, utc

pytestmark = pytest.mark.anyio


def _rows(api: Api, sql: str, **params: Any) -> list[Any]:
    engine = make_sync_engine(api.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def _events(api: Api, order_id: int) -> list[dict[str, Any]]:
    rows = _rows(api, "SELECT payload FROM outbox WHERE order_id = :o ORDER BY id", o=order_id)
    return [json.loads(r[0]) for r in rows]


async def _pending(api: Api, user: User, *lines: tuple[int, int], **body: Any) -> dict[str, Any]:
    payload = {"items": [{"variant_id": v, "quantity": q} for v, q in lines], "pay": False}
    payload.update(body)
    result: dict[str, Any] = expect(await api.post("/orders", user, json=payload), 201)
    return result


async def _unchanged(api: Api, user: User, path: str, status: int, code: str) -> Any:
    before = api.snapshot()
    body = expect(await api.post(path, user), status, code)
    assert api.snapshot() == before
    return body


def _ranked(body: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(i["product_id"], i["quantity"], i["orders"]) for i in body["items"]]


async def test_pay_later_holds_stock_and_coupon_until_paid(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((10_000, 5))
    v = p["variants"][0]["id"]
    coupon = await api.coupon(discount_value=2_000)
    uc = await api.issue(user, coupon["id"])

    before = utc()
    order = await _pending(api, user, (v, 2), user_coupon_id=uc)
    assert order["status"] == "PENDING"
    assert order["paid_at"] is None and order["payments"] == []
    assert (order["total_amount"], order["discount_amount"], order["paid_amount"]) == (
        20_000,
        2_000,
        18_000,
    )
    expires = datetime.fromisoformat(order["expires_at"])
    assert 595 <= (expires - before).total_seconds() <= 605  # default timeout: 600 s
    assert await api.stock(v, p["id"]) == 3  # held
    assert await api.balance(user) == 100_000  # not charged yet
    mine = expect(await api.get("/me/coupons", user), 200)
    assert (mine[0]["status"], mine[0]["order_id"]) == ("USED", order["order_id"])
    assert _events(api, order["order_id"]) == []  # nothing paid, nothing to report
    # the popular ranking counts PAID orders only
    assert expect(await api.get("/products/popular"), 200)["items"] == []

    paid = expect(await api.post(f"/orders/{order['order_id']}/payment", user), 200)
    assert paid["status"] == "PAID" and paid["paid_at"] is not None
    assert [(x["kind"], x["amount"]) for x in paid["payments"]] == [("PAYMENT", 18_000)]
    assert await api.balance(user) == 82_000
    assert await api.stock(v, p["id"]) == 3
    assert expect(await api.get(f"/orders/{order['order_id']}", user), 200) == paid
    assert _ranked(expect(await api.get("/products/popular"), 200)) == [(p["id"], 2, 1)]

    [event] = _events(api, order["order_id"])
    assert event["type"] == "order.paid"
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["user_id"] == user.user_id
    assert event["order"] == paid
    assert datetime.fromisoformat(event["occurred_at"]) == datetime.fromisoformat(paid["paid_at"])
    api.assert_audit_ok()


async def test_paying_twice_is_409_and_changes_nothing(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    order = await _pending(api, user, (v, 1))
    expect(await api.post(f"/orders/{order['order_id']}/payment", user), 200)
    err = await _unchanged(
        api, user, f"/orders/{order['order_id']}/payment", 409, "ORDER_NOT_PAYABLE"
    )
    assert err["details"]["status"] == "PAID"
    # an order paid at once is not payable either
    paid = expect(await api.order(user, (v, 1)), 201)
    await _unchanged(api, user, f"/orders/{paid['order_id']}/payment", 409, "ORDER_NOT_PAYABLE")


async def test_payment_short_of_money_leaves_it_pending(api: Api) -> None:
    user = await api.user(balance=5_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    order = await _pending(api, user, (v, 1))
    err = await _unchanged(
        api, user, f"/orders/{order['order_id']}/payment", 409, "INSUFFICIENT_BALANCE"
    )
    assert err["details"] == {"required": 10_000, "balance": 5_000}
    expect(await api.post("/me/wallet/charges", user, json={"amount": 5_000}), 201)
    assert expect(await api.post(f"/orders/{order['order_id']}/payment", user), 200)["status"] == (
        "PAID"
    )
    assert await api.balance(user) == 0
    api.assert_audit_ok()


async def test_cancel_a_pending_order_releases_stock_and_coupon(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((10_000, 5))
    v = p["variants"][0]["id"]
    uc = await api.issue(user, (await api.coupon())["id"])
    order = await _pending(api, user, (v, 3), user_coupon_id=uc)

    cancelled = expect(await api.post(f"/orders/{order['order_id']}/cancel", user), 200)
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["payments"] == []
    assert await api.stock(v, p["id"]) == 5
    assert await api.balance(user) == 100_000
    mine = expect(await api.get("/me/coupons", user), 200)
    assert (mine[0]["status"], mine[0]["order_id"], mine[0]["used_at"]) == ("ISSUED", None, None)
    moves = _rows(
        api,
        "SELECT kind, quantity FROM inventory_movements WHERE order_id = :o ORDER BY id",
        o=order["order_id"],
    )
    assert [tuple(m) for m in moves] == [("RESERVE", -3), ("RELEASE", 3)]
    assert _events(api, order["order_id"]) == []  # never paid: nothing to take back
    # the coupon and the units can be used again
    expect(await api.order(user, (v, 5), user_coupon_id=uc), 201)
    api.assert_audit_ok()


async def test_cancel_a_paid_order_refunds_restores_and_unranks(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((10_000, 5))
    other = await api.product((1_000, 50))
    v, vo = p["variants"][0]["id"], other["variants"][0]["id"]
    uc = await api.issue(user, (await api.coupon(discount_value=3_000))["id"])
    order = expect(await api.order(user, (v, 2), user_coupon_id=uc), 201)
    expect(await api.order(user, (vo, 1)), 201)
    assert _ranked(expect(await api.get("/products/popular"), 200)) == [
        (p["id"], 2, 1),
        (other["id"], 1, 1),
    ]
    assert await api.balance(user) == 100_000 - 17_000 - 1_000

    cancelled = expect(await api.post(f"/orders/{order['order_id']}/cancel", user), 200)
    assert cancelled["status"] == "CANCELLED"
    assert [(x["kind"], x["amount"]) for x in cancelled["payments"]] == [
        ("PAYMENT", 17_000),
        ("REFUND", 17_000),
    ]
    assert await api.balance(user) == 99_000
    ledger = await api.ledger(user)
    assert (ledger[0]["type"], ledger[0]["amount"], ledger[0]["balance_after"]) == (
        "REFUND",
        17_000,
        99_000,
    )
    assert ledger[0]["order_id"] == order["order_id"]
    assert await api.stock(v, p["id"]) == 5
    mine = {c["user_coupon_id"]: c for c in expect(await api.get("/me/coupons", user), 200)}
    assert mine[uc]["status"] == "ISSUED"
    # the sale left the ranking at once
    assert _ranked(expect(await api.get("/products/popular"), 200)) == [(other["id"], 1, 1)]

    paid_event, cancel_event = _events(api, order["order_id"])
    assert (paid_event["type"], cancel_event["type"]) == ("order.paid", "order.cancelled")
    assert cancel_event["order"] == cancelled
    assert cancel_event["event_id"] != paid_event["event_id"]
    api.assert_audit_ok()


async def test_a_cancelled_sale_stays_out_after_a_restart(api: Api, start_app: StartApp) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 50))
    v = p["variants"][0]["id"]
    first = expect(await api.order(user, (v, 2)), 201)
    expect(await api.order(user, (v, 3)), 201)
    expect(await api.post(f"/orders/{first['order_id']}/cancel", user), 200)
    async with start_app() as restarted:
        assert _ranked(expect(await restarted.get("/products/popular"), 200)) == [(p["id"], 3, 1)]


async def test_a_cancellation_on_another_instance_is_followed(
    api: Api, start_app: StartApp
) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 50))
    v = p["variants"][0]["id"]
    keep = expect(await api.order(user, (v, 1)), 201)
    gone = expect(await api.order(user, (v, 4)), 201)
    assert keep and _ranked(expect(await api.get("/products/popular"), 200)) == [(p["id"], 5, 2)]
    async with start_app(ranking_poll_s=0.05) as other:
        assert _ranked(expect(await other.get("/products/popular"), 200)) == [(p["id"], 5, 2)]
        expect(await api.post(f"/orders/{gone['order_id']}/cancel", user), 200)
        with anyio.fail_after(5):
            while True:
                if _ranked(expect(await other.get("/products/popular"), 200)) == [(p["id"], 1, 1)]:
                    break
                await anyio.sleep(0.05)
    # the instance that cancelled subtracted it once, not twice
    assert _ranked(expect(await api.get("/products/popular"), 200)) == [(p["id"], 1, 1)]


async def test_cancelling_twice_or_paying_a_cancelled_order_is_409(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    paid = expect(await api.order(user, (v, 1)), 201)
    pending = await _pending(api, user, (v, 1))
    for order in (paid, pending):
        oid = order["order_id"]
        expect(await api.post(f"/orders/{oid}/cancel", user), 200)
        err = await _unchanged(api, user, f"/orders/{oid}/cancel", 409, "ORDER_NOT_CANCELLABLE")
        assert err["details"]["status"] == "CANCELLED"
        await _unchanged(api, user, f"/orders/{oid}/payment", 409, "ORDER_NOT_PAYABLE")
    api.assert_audit_ok()


async def test_a_coupon_past_its_validity_comes_back_expired(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    uc = await api.issue(user, (await api.coupon())["id"])
    order = expect(await api.order(user, (v, 1), user_coupon_id=uc), 201)
    api.sql(
        "UPDATE user_coupons SET expires_at = :t WHERE id = :id",
        t=utc(seconds=-1).replace(tzinfo=None),
        id=uc,
    )
    expect(await api.post(f"/orders/{order['order_id']}/cancel", user), 200)
    mine = expect(await api.get("/me/coupons", user), 200)
    assert (mine[0]["status"], mine[0]["order_id"]) == ("EXPIRED", None)
    api.assert_audit_ok()


async def test_other_users_orders_are_404(api: Api) -> None:
    owner = await api.user(balance=100_000)
    stranger = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    order = await _pending(api, owner, (v, 1))
    oid = order["order_id"]
    expect(await api.get(f"/orders/{oid}", stranger), 404, "ORDER_NOT_FOUND")
    await _unchanged(api, stranger, f"/orders/{oid}/payment", 404, "ORDER_NOT_FOUND")
    await _unchanged(api, stranger, f"/orders/{oid}/cancel", 404, "ORDER_NOT_FOUND")
    await _unchanged(api, owner, "/orders/999999/cancel", 404, "ORDER_NOT_FOUND")
    expect(await api.post(f"/orders/{oid}/payment"), 401, "UNAUTHENTICATED")


async def test_pending_orders_count_against_the_purchase_limit(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((1_000, 50), per_user_limit=2))["variants"][0]["id"]
    held = await _pending(api, user, (v, 2))
    expect(await api.order(user, (v, 1)), 409, "PURCHASE_LIMIT_EXCEEDED")
    expect(await api.post(f"/orders/{held['order_id']}/cancel", user), 200)
    expect(await api.order(user, (v, 2)), 201)


async def test_unpaid_orders_expire_and_release(start_app: StartApp) -> None:
    async with start_app(order_payment_timeout_s=1, order_expiry_sweep_s=0.05) as api:
        user = await api.user(balance=100_000)
        p = await api.product((10_000, 5))
        v = p["variants"][0]["id"]
        uc = await api.issue(user, (await api.coupon())["id"])
        order = await _pending(api, user, (v, 5), user_coupon_id=uc)
        oid = order["order_id"]
        # sold out while held
        expect(await api.order(await api.user(balance=100_000), (v, 1)), 409, "OUT_OF_STOCK")
        with anyio.fail_after(10):
            while True:
                if expect(await api.get(f"/orders/{oid}", user), 200)["status"] != "PENDING":
                    break
                await anyio.sleep(0.05)
        assert expect(await api.get(f"/orders/{oid}", user), 200)["status"] == "EXPIRED"
        assert await api.stock(v, p["id"]) == 5
        mine = expect(await api.get("/me/coupons", user), 200)
        assert (mine[0]["status"], mine[0]["order_id"]) == ("ISSUED", None)
        err = await _unchanged(api, user, f"/orders/{oid}/payment", 409, "ORDER_NOT_PAYABLE")
        assert err["details"]["status"] == "EXPIRED"
        await _unchanged(api, user, f"/orders/{oid}/cancel", 409, "ORDER_NOT_CANCELLABLE")
        # the released units sell again through this process's gate
        expect(await api.order(user, (v, 5)), 201)
        api.assert_audit_ok()


async def test_an_overdue_order_cannot_be_paid_even_before_the_sweep(
    start_app: StartApp,
) -> None:
    # A sweep interval far longer than the test: only the payment's own check stands.
    async with start_app(order_payment_timeout_s=1, order_expiry_sweep_s=60) as api:
        user = await api.user(balance=100_000)
        v = (await api.product((10_000, 5)))["variants"][0]["id"]
        order = await _pending(api, user, (v, 1))
        await anyio.sleep(1.1)
        err = await _unchanged(
            api, user, f"/orders/{order['order_id']}/payment", 409, "ORDER_NOT_PAYABLE"
        )
        assert err["details"]["status"] == "EXPIRED"
