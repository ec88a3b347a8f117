"""``/coupons``: first-come issue, one per user (docs/rules.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from .support import Api, expect, iso, utc

pytestmark = pytest.mark.anyio

COUPON_FIELDS = {
    "id",
    "name",
    "discount_type",
    "discount_value",
    "max_discount_amount",
    "min_order_amount",
    "total_quantity",
    "remaining_quantity",
    "issue_starts_at",
    "issue_ends_at",
    "valid_days",
}


async def test_get_coupon(api: Api) -> None:
    created = await api.coupon(
        discount_type="PERCENT",
        discount_value=10,
        max_discount_amount=5_000,
        min_order_amount=20_000,
        total_quantity=3,
        valid_days=3,
    )
    body = expect(await api.get(f"/coupons/{created['id']}"), 200)
    assert body == created
    assert set(body) == COUPON_FIELDS
    assert (body["total_quantity"], body["remaining_quantity"]) == (3, 3)


async def test_issue(api: Api) -> None:
    coupon = await api.coupon(total_quantity=2, valid_days=5)
    user = await api.user()
    r = await api.post(f"/coupons/{coupon['id']}/issue", user)
    body = expect(r, 201)
    assert set(body) == {"user_coupon_id", "coupon_id", "status", "issued_at", "expires_at"}
    assert (body["coupon_id"], body["status"]) == (coupon["id"], "ISSUED")
    issued = datetime.fromisoformat(body["issued_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - issued == timedelta(days=5)
    remaining = expect(await api.get(f"/coupons/{coupon['id']}"), 200)["remaining_quantity"]
    assert remaining == 1

    mine = expect(await api.get("/me/coupons", user), 200)
    assert len(mine) == 1
    assert set(mine[0]) == {
        "user_coupon_id",
        "coupon",
        "status",
        "issued_at",
        "expires_at",
        "used_at",
        "order_id",
    }
    assert mine[0]["user_coupon_id"] == body["user_coupon_id"]
    assert mine[0]["status"] == "ISSUED"
    assert mine[0]["coupon"]["id"] == coupon["id"]
    assert mine[0]["coupon"]["remaining_quantity"] == 1
    assert (mine[0]["used_at"], mine[0]["order_id"]) == (None, None)
    other = await api.user()
    assert expect(await api.get("/me/coupons", other), 200) == []
    api.assert_audit_ok()


async def test_second_issue_is_409_and_changes_nothing(api: Api) -> None:
    coupon = await api.coupon(total_quantity=5)
    user = await api.user()
    await api.issue(user, coupon["id"])
    before = api.snapshot()
    for _ in range(3):
        r = await api.post(f"/coupons/{coupon['id']}/issue", user)
        expect(r, 409, "COUPON_ALREADY_ISSUED")
    assert api.snapshot() == before
    assert expect(await api.get(f"/coupons/{coupon['id']}"), 200)["remaining_quantity"] == 4


async def test_sold_out(api: Api) -> None:
    coupon = await api.coupon(total_quantity=2)
    users = [await api.user() for _ in range(4)]
    await api.issue(users[0], coupon["id"])
    await api.issue(users[1], coupon["id"])
    before = api.snapshot()
    for user in users[2:]:
        expect(await api.post(f"/coupons/{coupon['id']}/issue", user), 409, "COUPON_SOLD_OUT")
    # a holder asking again hears that it holds one
    r = await api.post(f"/coupons/{coupon['id']}/issue", users[0])
    expect(r, 409, "COUPON_ALREADY_ISSUED")
    assert api.snapshot() == before
    assert expect(await api.get(f"/coupons/{coupon['id']}"), 200)["remaining_quantity"] == 0
    api.assert_audit_ok()


async def test_outside_the_issue_window_is_409(api: Api, subtests: pytest.Subtests) -> None:
    windows: list[dict[str, datetime]] = [
        {"issue_starts_at": utc(hours=1)},
        {"issue_starts_at": utc(hours=1), "issue_ends_at": utc(hours=2)},
        {"issue_starts_at": utc(hours=-2), "issue_ends_at": utc(hours=-1)},
        {"issue_ends_at": utc(seconds=-1)},
    ]
    user = await api.user()
    for window in windows:
        with subtests.test(window=window):
            coupon = await api.coupon(**{k: iso(v) for k, v in window.items()})
            before = api.snapshot()
            r = await api.post(f"/coupons/{coupon['id']}/issue", user)
            expect(r, 409, "COUPON_NOT_ISSUABLE")
            assert api.snapshot() == before


async def test_inside_the_issue_window(api: Api) -> None:
    coupon = await api.coupon(
        issue_starts_at=iso(utc(minutes=-1)), issue_ends_at=iso(utc(minutes=1))
    )
    await api.issue(await api.user(), coupon["id"])


async def test_unknown_coupon_is_404(api: Api) -> None:
    await api.coupon()
    user = await api.user()
    for coupon_id in (2, 999, 2**63 - 1):
        expect(await api.get(f"/coupons/{coupon_id}"), 404, "COUPON_NOT_FOUND")
        r = await api.post(f"/coupons/{coupon_id}/issue", user)
        expect(r, 404, "COUPON_NOT_FOUND")


async def test_bad_coupon_id_is_422(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    for coupon_id in ["0", "-3", str(2**63), str(10**30), "x"]:
        with subtests.test(coupon_id=coupon_id):
            expect(await api.get(f"/coupons/{coupon_id}"), 422, "VALIDATION_ERROR")
            r = await api.post(f"/coupons/{coupon_id}/issue", user)
            expect(r, 422, "VALIDATION_ERROR")


async def test_my_coupons_newest_first_and_used(api: Api) -> None:
    user = await api.user(balance=100_000)
    first = await api.coupon(discount_value=1_000)
    second = await api.coupon(discount_value=2_000)
    uc1 = await api.issue(user, first["id"])
    uc2 = await api.issue(user, second["id"])
    product = await api.product((10_000, 5))
    order = expect(
        await api.order(user, (product["variants"][0]["id"], 1), user_coupon_id=uc1), 201
    )
    mine = expect(await api.get("/me/coupons", user), 200)
    assert [c["user_coupon_id"] for c in mine] == [uc2, uc1]
    used = mine[1]
    assert (used["status"], used["order_id"]) == ("USED", order["order_id"])
    assert used["used_at"] is not None
    assert mine[0]["status"] == "ISSUED"
    api.assert_audit_ok()


async def test_an_expired_coupon_shows_expired(api: Api) -> None:
    user = await api.user()
    coupon = await api.coupon()
    uc = await api.issue(user, coupon["id"])
    api.sql(
        "UPDATE user_coupons SET expires_at = :t WHERE id = :id",
        t=utc(seconds=-1).replace(tzinfo=None),
        id=uc,
    )
    mine = expect(await api.get("/me/coupons", user), 200)
    assert mine[0]["status"] == "EXPIRED"
