"""``/admin/*``: products, restocks and coupons."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Api, expect, iso, utc

pytestmark = pytest.mark.anyio


def _product(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Sneakers",
        "description": "limited",
        "sale_starts_at": iso(utc(hours=-1)),
        "sale_ends_at": iso(utc(days=1)),
        "per_user_limit": 2,
        "variants": [
            {"sku": "SNK-250", "name": "250 mm", "price": 99_000, "stock": 3},
            {"sku": "SNK-260", "name": "260 mm", "price": 89_000, "stock": 0},
        ],
    }
    body.update(fields)
    return body


async def test_create_product(api: Api) -> None:
    r = await api.post("/admin/products", api.admin, json=_product())
    body = expect(r, 201)
    assert body["name"] == "Sneakers"
    assert (body["price"], body["stock"], body["status"]) == (89_000, 3, "ON_SALE")
    assert body["per_user_limit"] == 2
    assert [(v["sku"], v["name"], v["price"], v["stock"]) for v in body["variants"]] == [
        ("SNK-250", "250 mm", 99_000, 3),
        ("SNK-260", "260 mm", 89_000, 0),
    ]
    assert expect(await api.get(f"/products/{body['id']}"), 200) == body
    api.assert_audit_ok()  # opening stock came with its RESTOCK movement


async def test_create_product_minimal(api: Api) -> None:
    body = {"name": "Pen", "variants": [{"sku": "PEN", "name": "blue", "price": 0, "stock": 1}]}
    created = expect(await api.post("/admin/products", api.admin, json=body), 201)
    assert created["description"] == ""
    assert (created["sale_starts_at"], created["sale_ends_at"], created["per_user_limit"]) == (
        None,
        None,
        None,
    )


BAD_PRODUCTS: list[dict[str, Any]] = [
    {"variants": []},
    {"name": ""},
    {"name": "x" * 201},
    {"per_user_limit": 0},
    {"per_user_limit": 10**30},
    {"sale_starts_at": "2030-01-01T00:00:00Z", "sale_ends_at": "2030-01-01T09:00:00+09:00"},
    {"sale_starts_at": iso(utc(hours=2)), "sale_ends_at": iso(utc(hours=1))},
    {"sale_starts_at": "2030-01-01T00:00:00"},  # naive: times are UTC-aware
    {"sale_starts_at": "tomorrow"},
    {"variants": [{"sku": "A", "name": "a", "price": -1, "stock": 1}]},
    {"variants": [{"sku": "A", "name": "a", "price": 1, "stock": -1}]},
    {"variants": [{"sku": "A", "name": "a", "price": 10**30, "stock": 1}]},
    {"variants": [{"sku": "A", "name": "a", "price": 1, "stock": 10**30}]},
    {"variants": [{"sku": "", "name": "a", "price": 1, "stock": 1}]},
    {"variants": [{"sku": "has space", "name": "a", "price": 1, "stock": 1}]},
    {"variants": [{"sku": "A", "name": "a", "price": "free", "stock": 1}]},
    {"variants": [{"sku": "A", "name": "a", "price": 1}]},
    {
        "variants": [
            {"sku": "A", "name": "a", "price": 1, "stock": 1},
            {"sku": "A", "name": "b", "price": 2, "stock": 1},
        ]
    },
]


async def test_bad_product_is_422(api: Api, subtests: pytest.Subtests) -> None:
    before = api.snapshot()
    for fields in BAD_PRODUCTS:
        with subtests.test(fields=fields):
            r = await api.post("/admin/products", api.admin, json=_product(**fields))
            expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_sku_of_another_product_is_422(api: Api) -> None:
    expect(await api.post("/admin/products", api.admin, json=_product()), 201)
    before = api.snapshot()
    again = _product(
        name="Other",
        variants=[
            {"sku": "NEW-1", "name": "n", "price": 1, "stock": 5},
            {"sku": "SNK-250", "name": "dup", "price": 1, "stock": 5},
        ],
    )
    body = expect(await api.post("/admin/products", api.admin, json=again), 422, "VALIDATION_ERROR")
    assert body["details"]["sku"] == "SNK-250"
    assert api.snapshot() == before  # neither the product nor NEW-1 was kept


async def test_restock(api: Api) -> None:
    user = await api.user(balance=1_000_000)
    body = _product(per_user_limit=None)
    p = expect(await api.post("/admin/products", api.admin, json=body), 201)
    v = p["variants"][0]
    expect(await api.order(user, (v["id"], 2)), 201)
    body = await api.restock(v["id"], 5)
    assert body == {"id": v["id"], "sku": "SNK-250", "name": "250 mm", "price": 99_000, "stock": 6}
    assert await api.stock(v["id"], p["id"]) == 6
    api.assert_audit_ok()


async def test_restock_after_sell_out_sells_again(api: Api) -> None:
    user = await api.user(balance=1_000_000)
    p = await api.product((1_000, 2))
    v = p["variants"][0]["id"]
    expect(await api.order(user, (v, 2)), 201)
    expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")
    assert expect(await api.get(f"/products/{p['id']}"), 200)["status"] == "SOLD_OUT"
    assert (await api.restock(v, 3))["stock"] == 3
    assert expect(await api.get(f"/products/{p['id']}"), 200)["status"] == "ON_SALE"
    expect(await api.order(user, (v, 3)), 201)
    assert await api.stock(v, p["id"]) == 0
    api.assert_audit_ok()


async def test_restock_unknown_variant_is_404(api: Api) -> None:
    await api.product()
    before = api.snapshot()
    for variant_id in (999, 2**63 - 1):
        r = await api.post(f"/admin/variants/{variant_id}/restock", api.admin, json={"quantity": 1})
        expect(r, 404, "VARIANT_NOT_FOUND")
    assert api.snapshot() == before


BAD_RESTOCKS: list[tuple[str, dict[str, Any]]] = [
    ("V", {"quantity": 0}),
    ("V", {"quantity": -5}),
    ("V", {"quantity": 10**30}),
    ("V", {"quantity": "many"}),
    ("V", {}),
    ("0", {"quantity": 1}),
    ("-1", {"quantity": 1}),
    (str(2**63), {"quantity": 1}),
    (str(10**30), {"quantity": 1}),
]


async def test_bad_restock_is_422(api: Api, subtests: pytest.Subtests) -> None:
    p = await api.product()
    before = api.snapshot()
    for path_id, payload in BAD_RESTOCKS:
        with subtests.test(path_id=path_id, payload=payload):
            path_id = str(p["variants"][0]["id"]) if path_id == "V" else path_id
            r = await api.post(f"/admin/variants/{path_id}/restock", api.admin, json=payload)
            expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_create_coupon(api: Api) -> None:
    body = {
        "name": "Welcome",
        "discount_type": "PERCENT",
        "discount_value": 15,
        "max_discount_amount": 10_000,
        "min_order_amount": 30_000,
        "total_quantity": 500,
        "issue_starts_at": iso(utc(hours=-1)),
        "issue_ends_at": iso(utc(days=2)),
        "valid_days": 30,
    }
    created = expect(await api.post("/admin/coupons", api.admin, json=body), 201)
    for key in ("name", "discount_type", "discount_value", "max_discount_amount"):
        assert created[key] == body[key]
    assert (created["total_quantity"], created["remaining_quantity"]) == (500, 500)
    assert expect(await api.get(f"/coupons/{created['id']}"), 200) == created


BAD_COUPONS: list[dict[str, Any]] = [
    {"discount_type": "PERCENT", "discount_value": 150},
    {"discount_type": "PERCENT", "discount_value": 101},
    {"discount_type": "PERCENT", "discount_value": 0},
    {"discount_type": "BOGO"},
    {"discount_value": -1},
    {"discount_value": 10**30},
    {"max_discount_amount": 0},
    {"min_order_amount": -1},
    {"total_quantity": 0},
    {"total_quantity": 10**30},
    {"valid_days": 0},
    {"issue_starts_at": iso(utc(hours=2)), "issue_ends_at": iso(utc(hours=1))},
    {"issue_starts_at": "2030-01-01T00:00:00Z", "issue_ends_at": "2030-01-01T09:00:00+09:00"},
    {"issue_starts_at": "2030-01-01T00:00:00"},
    {"name": ""},
]


async def test_bad_coupon_is_422(api: Api, subtests: pytest.Subtests) -> None:
    before = api.snapshot()
    for fields in BAD_COUPONS:
        with subtests.test(fields=fields):
            body: dict[str, Any] = {
                "name": "C",
                "discount_type": "FIXED",
                "discount_value": 1_000,
                "total_quantity": 10,
                "valid_days": 7,
                **fields,
            }
            r = await api.post("/admin/coupons", api.admin, json=body)
            expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_percent_100_is_allowed(api: Api) -> None:
    coupon = await api.coupon(discount_type="PERCENT", discount_value=100)
    assert coupon["discount_value"] == 100
