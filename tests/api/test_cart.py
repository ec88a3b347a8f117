"""``/me/cart``: set, remove, view, check out through the order path (docs/rules.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .support import PREFIX, Api, User, expect

pytestmark = pytest.mark.anyio


async def _put(api: Api, user: User, variant_id: int, quantity: Any) -> httpx.Response:
    return await api.client.put(
        f"{PREFIX}/me/cart/items/{variant_id}", headers=user.headers, json={"quantity": quantity}
    )


async def _delete(api: Api, user: User, variant_id: int) -> httpx.Response:
    return await api.client.delete(f"{PREFIX}/me/cart/items/{variant_id}", headers=user.headers)


async def test_empty_cart(api: Api) -> None:
    user = await api.user()
    assert expect(await api.get("/me/cart", user), 200) == {"items": [], "total_amount": 0}


async def test_put_sets_and_delete_removes(api: Api) -> None:
    user = await api.user()
    shirt = await api.product((10_000, 5), (12_000, 1), name="Shirt")
    s1, s2 = (v["id"] for v in shirt["variants"])

    cart = expect(await _put(api, user, s2, 2), 200)
    assert cart == {
        "items": [
            {
                "variant_id": s2,
                "product_id": shirt["id"],
                "product_name": "Shirt",
                "variant_name": "Variant 1",
                "unit_price": 12_000,
                "quantity": 2,
                "amount": 24_000,
                "in_stock": False,  # only 1 unit left
            }
        ],
        "total_amount": 24_000,
    }
    expect(await _put(api, user, s1, 3), 200)
    cart = expect(await _put(api, user, s1, 1), 200)  # sets, does not add
    assert [(i["variant_id"], i["quantity"], i["in_stock"]) for i in cart["items"]] == [
        (s1, 1, True),
        (s2, 2, False),
    ]
    assert cart["total_amount"] == 10_000 + 24_000
    assert expect(await api.get("/me/cart", user), 200) == cart

    cart = expect(await _delete(api, user, s2), 200)
    assert [i["variant_id"] for i in cart["items"]] == [s1]
    assert expect(await _delete(api, user, s2), 200) == cart  # idempotent
    # the cart holds no stock
    assert await api.stock(s1, shirt["id"]) == 5


async def test_in_stock_follows_current_stock(api: Api) -> None:
    user = await api.user()
    buyer = await api.user(balance=100_000)
    p = await api.product((1_000, 3))
    v = p["variants"][0]["id"]
    assert expect(await _put(api, user, v, 3), 200)["items"][0]["in_stock"] is True
    expect(await api.order(buyer, (v, 1)), 201)
    assert expect(await api.get("/me/cart", user), 200)["items"][0]["in_stock"] is False
    await api.restock(v, 5)
    assert expect(await api.get("/me/cart", user), 200)["items"][0]["in_stock"] is True


async def test_carts_are_per_user(api: Api) -> None:
    a, b = await api.user(), await api.user()
    v = (await api.product())["variants"][0]["id"]
    expect(await _put(api, a, v, 2), 200)
    assert expect(await api.get("/me/cart", b), 200)["items"] == []


async def test_bad_cart_requests_change_nothing(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    v = (await api.product())["variants"][0]["id"]
    expect(await _put(api, user, v, 1), 200)
    before = api.snapshot()
    cases: list[tuple[str, Any, int, int, str]] = [
        ("quantity 0", v, 0, 422, "VALIDATION_ERROR"),
        ("quantity 101", v, 101, 422, "VALIDATION_ERROR"),
        ("quantity as text", v, "2", 422, "VALIDATION_ERROR"),
        ("unknown variant", 999_999, 1, 404, "VARIANT_NOT_FOUND"),
        ("variant id 0", 0, 1, 422, "VALIDATION_ERROR"),
    ]
    for name, variant_id, quantity, status, code in cases:
        with subtests.test(name):
            assert expect(await _put(api, user, variant_id, quantity), status)["code"] == code
    with subtests.test("unauthenticated"):
        r = await api.client.put(f"{PREFIX}/me/cart/items/{v}", json={"quantity": 1})
        assert expect(r, 401)["code"] == "UNAUTHENTICATED"
    assert api.snapshot() == before


async def test_fifty_variants_at_most(api: Api) -> None:
    user = await api.user()
    p = await api.product(*[(100, 10)] * 51)
    ids = [v["id"] for v in p["variants"]]
    for v in ids[:50]:
        expect(await _put(api, user, v, 1), 200)
    before = api.snapshot()
    assert expect(await _put(api, user, ids[50], 1), 409)["code"] == "CART_FULL"
    assert api.snapshot() == before
    expect(await _put(api, user, ids[0], 7), 200)  # changing a held line is fine


async def test_checkout_orders_the_cart_and_empties_it(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((10_000, 5), (2_000, 5))
    v1, v2 = (v["id"] for v in p["variants"])
    uc = await api.issue(user, (await api.coupon(discount_value=1_000))["id"])
    expect(await _put(api, user, v2, 3), 200)
    expect(await _put(api, user, v1, 1), 200)

    order = expect(await api.post("/me/cart/checkout", user, json={"user_coupon_id": uc}), 201)
    assert order["status"] == "PAID"
    assert [(i["variant_id"], i["quantity"]) for i in order["items"]] == [(v1, 1), (v2, 3)]
    assert (order["total_amount"], order["discount_amount"], order["paid_amount"]) == (
        16_000,
        1_000,
        15_000,
    )
    assert expect(await api.get(f"/orders/{order['order_id']}", user), 200) == order
    assert expect(await api.get("/me/cart", user), 200) == {"items": [], "total_amount": 0}
    assert await api.balance(user) == 85_000
    assert await api.stock(v1, p["id"]) == 4
    api.assert_audit_ok()


async def test_checkout_pay_later(api: Api) -> None:
    user = await api.user()
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    expect(await _put(api, user, v, 2), 200)
    order = expect(await api.post("/me/cart/checkout", user, json={"pay": False}), 201)
    assert order["status"] == "PENDING" and order["expires_at"] is not None
    assert expect(await api.get("/me/cart", user), 200)["items"] == []


async def test_a_refused_checkout_keeps_the_cart(api: Api) -> None:
    user = await api.user(balance=5_000)
    p = await api.product((10_000, 5), (1_000, 1))
    v1, v2 = (v["id"] for v in p["variants"])
    expect(await _put(api, user, v1, 1), 200)
    before = api.snapshot()
    err = expect(await api.post("/me/cart/checkout", user, json={}), 409)
    assert err["code"] == "INSUFFICIENT_BALANCE"
    assert api.snapshot() == before
    # out of stock names the variant, and the cart is still there
    expect(await _delete(api, user, v1), 200)
    expect(await _put(api, user, v2, 2), 200)
    before = api.snapshot()
    err = expect(await api.post("/me/cart/checkout", user, json={}), 409)
    assert (err["code"], err["details"]["variant_id"]) == ("OUT_OF_STOCK", v2)
    assert api.snapshot() == before


async def test_checkout_of_an_empty_cart_is_409(api: Api) -> None:
    user = await api.user(balance=5_000)
    before = api.snapshot()
    assert expect(await api.post("/me/cart/checkout", user, json={}), 409)["code"] == "CART_EMPTY"
    assert api.snapshot() == before
    bad = await api.post("/me/cart/checkout", user, json={"pay": "yes"})
    assert expect(bad, 422)["code"] == "VALIDATION_ERROR"
