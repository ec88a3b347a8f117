"""Malformed requests everywhere: the right 4xx ``code``, a well-formed error body,
never a 500, and nothing changed (docs/api.md)."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Api, expect

pytestmark = pytest.mark.anyio

# (path template, needs admin); {v} a variant id, {c} a coupon id
WRITES = [
    ("/auth/signup", False),
    ("/me/wallet/charges", False),
    ("/orders", False),
    ("/coupons/{c}/issue", False),
    ("/admin/products", True),
    ("/admin/coupons", True),
    ("/admin/variants/{v}/restock", True),
]
JSON_BODIES = [("/me/wallet/charges", False), ("/orders", False)] + [
    w for w in WRITES if w[0].startswith("/admin") or w[0] == "/auth/signup"
]


MALFORMED = [b"{", b"not json", b'{"amount": }', b"", b"\xff\xfe", b"[1, 2", b"null", b"42", b'"s"']


async def test_malformed_json_is_422(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user(balance=10_000)
    p = await api.product()
    coupon = await api.coupon()
    before = api.snapshot()
    for raw in MALFORMED:
        for path, admin in JSON_BODIES:
            path = path.format(v=p["variants"][0]["id"], c=coupon["id"])
            with subtests.test(raw=raw, path=path):
                headers = {
                    **(api.admin if admin else user).headers,
                    "Content-Type": "application/json",
                }
                r = await api.client.post("/api/v1" + path, content=raw, headers=headers)
                expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_json_of_the_wrong_shape_is_422(api: Api) -> None:
    user = await api.user(balance=10_000)
    p = await api.product()
    before = api.snapshot()
    charges: list[Any] = [[], [{"amount": 1000}], {"amount": {"value": 1000}}, {"amount": [1000]}]
    for body in charges:
        expect(await api.post("/me/wallet/charges", user, json=body), 422, "VALIDATION_ERROR")
    orders: list[Any] = [
        {"items": {"variant_id": p["variants"][0]["id"], "quantity": 1}},
        {"items": [[p["variants"][0]["id"], 1]]},
        {"items": [None]},
        {"items": None},
    ]
    for body in orders:
        expect(await api.post("/orders", user, json=body), 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_huge_and_negative_numbers_never_500(api: Api) -> None:
    user = await api.user(balance=10_000)
    before = api.snapshot()
    huge = 10**30
    cases: list[tuple[str, str, Any]] = [
        ("GET", f"/products/{huge}", None),
        ("GET", f"/products/{-huge}", None),
        ("GET", f"/coupons/{huge}", None),
        ("POST", f"/coupons/{huge}/issue", None),
        ("GET", f"/orders/{huge}", None),
        ("GET", f"/products?limit={huge}", None),
        ("GET", f"/products/popular?days={huge}", None),
        ("GET", f"/me/orders?limit={-huge}", None),
        ("POST", "/me/wallet/charges", {"amount": huge}),
        ("POST", "/me/wallet/charges", {"amount": -huge}),
        ("POST", "/me/wallet/charges", {"amount": 1e308}),
        ("POST", "/orders", {"items": [{"variant_id": huge, "quantity": 1}]}),
        ("POST", "/orders", {"items": [{"product_id": -huge, "quantity": 1}]}),
        ("POST", "/orders", {"items": [{"variant_id": 1, "quantity": huge}]}),
        ("POST", "/orders", {"items": [{"variant_id": 1, "quantity": 1}], "user_coupon_id": huge}),
    ]
    for method, path, body in cases:
        r = await api.client.request(method, "/api/v1" + path, headers=user.headers, json=body)
        expect(r, 422, "VALIDATION_ERROR")
    for path, body in (
        (f"/admin/variants/{huge}/restock", {"quantity": 1}),
        ("/admin/variants/1/restock", {"quantity": huge}),
    ):
        expect(await api.post(path, api.admin, json=body), 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_validation_details_name_the_field(api: Api) -> None:
    user = await api.user()
    body = expect(
        await api.post("/orders", user, json={"items": [{"variant_id": 1, "quantity": 0}]}),
        422,
        "VALIDATION_ERROR",
    )
    errors = body["details"]["errors"]
    assert errors and all(set(e) == {"loc", "msg", "type"} for e in errors)
    assert any(e["loc"][-1] == "quantity" for e in errors)


async def test_unknown_route_and_method(api: Api) -> None:
    expect(await api.client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    expect(await api.client.get("/api/v2/products"), 404, "NOT_FOUND")
    expect(await api.client.delete("/api/v1/products"), 405, "METHOD_NOT_ALLOWED")
    expect(await api.client.get("/api/v1/me/wallet/charges"), 405, "METHOD_NOT_ALLOWED")


async def test_other_users_resources_are_invisible(api: Api) -> None:
    owner = await api.user(balance=100_000)
    other = await api.user(balance=100_000)
    coupon = await api.coupon()
    uc = await api.issue(owner, coupon["id"])
    p = await api.product((1_000, 10))
    order = expect(await api.order(owner, (p["variants"][0]["id"], 1)), 201)
    before = api.snapshot()
    expect(await api.get(f"/orders/{order['order_id']}", other), 404, "ORDER_NOT_FOUND")
    assert expect(await api.get("/me/orders", other), 200)["items"] == []
    assert expect(await api.get("/me/coupons", other), 200) == []
    assert [t["type"] for t in await api.ledger(other)] == ["CHARGE"]
    r = await api.order(other, (p["variants"][0]["id"], 1), user_coupon_id=uc)
    expect(r, 409, "COUPON_NOT_USABLE")
    assert api.snapshot() == before
