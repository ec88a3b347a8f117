"""``/products``: list, detail, status, price and stock."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Api, expect, iso, utc

pytestmark = pytest.mark.anyio

SUMMARY_FIELDS = {"id", "name", "price", "stock", "status", "sale_starts_at", "sale_ends_at"}


async def test_detail(api: Api) -> None:
    created = await api.product(
        (30_000, 2),
        (10_000, 0),
        (20_000, 5),
        description="a shirt",
        per_user_limit=3,
        sale_starts_at=iso(utc(hours=-1)),
        sale_ends_at=iso(utc(hours=1)),
    )
    body = expect(await api.get(f"/products/{created['id']}"), 200)
    assert body == created
    assert set(body) == SUMMARY_FIELDS | {"description", "per_user_limit", "variants"}
    assert body["price"] == 10_000  # lowest variant price, even when that one is sold out
    assert body["stock"] == 7  # sum of variant stock
    assert body["status"] == "ON_SALE"
    assert body["description"] == "a shirt"
    assert body["per_user_limit"] == 3
    assert [(v["price"], v["stock"]) for v in body["variants"]] == [
        (30_000, 2),
        (10_000, 0),
        (20_000, 5),
    ]
    for v in body["variants"]:
        assert set(v) == {"id", "sku", "name", "price", "stock"}


STATUS_CASES: list[tuple[dict[str, Any], tuple[int, ...], str]] = [
    ({}, (1,), "ON_SALE"),
    ({}, (0, 0), "SOLD_OUT"),
    ({"sale_starts_at": utc(hours=1), "sale_ends_at": utc(hours=2)}, (5,), "UPCOMING"),
    ({"sale_starts_at": utc(hours=-2), "sale_ends_at": utc(hours=-1)}, (5,), "ENDED"),
    ({"sale_starts_at": utc(hours=-2), "sale_ends_at": utc(hours=-1)}, (0,), "ENDED"),
    ({"sale_starts_at": utc(hours=-1)}, (5,), "ON_SALE"),
    ({"sale_ends_at": utc(hours=1)}, (0,), "SOLD_OUT"),
]


async def test_status(api: Api, subtests: pytest.Subtests) -> None:
    for window, stocks, status in STATUS_CASES:
        with subtests.test(window=window, stocks=stocks):
            fields = {k: iso(v) for k, v in window.items()}
            created = await api.product(*[(1_000, s) for s in stocks], **fields)
            detail = expect(await api.get(f"/products/{created['id']}"), 200)
            assert detail["status"] == status
            listed = expect(await api.get("/products", params={"limit": 100}), 200)["items"]
            assert [p["status"] for p in listed if p["id"] == created["id"]] == [status]


async def test_sold_out_after_the_last_unit_sells(api: Api) -> None:
    user = await api.user(balance=10_000)
    p = await api.product((1_000, 1))
    expect(await api.order(user, (p["variants"][0]["id"], 1)), 201)
    detail = expect(await api.get(f"/products/{p['id']}"), 200)
    assert (detail["status"], detail["stock"]) == ("SOLD_OUT", 0)


async def test_list_pages_by_id(api: Api) -> None:
    created = [await api.product((1_000 * (i + 1), i)) for i in range(5)]
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = expect(await api.get("/products", params=params), 200)
        assert set(page) == {"items", "next_cursor"}
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [p["id"] for p in seen] == [p["id"] for p in created]
    for item, product in zip(seen, created, strict=True):
        assert set(item) == SUMMARY_FIELDS
        assert {k: product[k] for k in SUMMARY_FIELDS} == item


async def test_list_empty(api: Api) -> None:
    assert expect(await api.get("/products"), 200) == {"items": [], "next_cursor": None}


async def test_unknown_product_is_404(api: Api) -> None:
    await api.product()
    for product_id in (2, 999, 2**63 - 1):
        expect(await api.get(f"/products/{product_id}"), 404, "PRODUCT_NOT_FOUND")


async def test_bad_product_id_is_422(api: Api, subtests: pytest.Subtests) -> None:
    for product_id in ["0", "-1", str(2**63), str(10**30), str(-(10**30)), "abc", "1.5"]:
        with subtests.test(product_id=product_id):
            expect(await api.get(f"/products/{product_id}"), 422, "VALIDATION_ERROR")


async def test_list_bad_query_is_422(api: Api, subtests: pytest.Subtests) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"limit": 0}, "VALIDATION_ERROR"),
        ({"limit": 101}, "VALIDATION_ERROR"),
        ({"limit": 10**30}, "VALIDATION_ERROR"),
        ({"cursor": "***"}, "INVALID_CURSOR"),
        ({"cursor": "MA"}, "INVALID_CURSOR"),  # "0"
    ]
    for params, code in cases:
        with subtests.test(params=params):
            expect(await api.get("/products", params=params), 422, code)


async def test_stock_shown_is_the_database_value(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 10), (2_000, 5))
    v1, v2 = (v["id"] for v in p["variants"])
    expect(await api.order(user, (v1, 3), (v2, 1)), 201)
    detail = expect(await api.get(f"/products/{p['id']}"), 200)
    assert [v["stock"] for v in detail["variants"]] == [7, 4]
    assert detail["stock"] == 11
    listed = expect(await api.get("/products"), 200)["items"][0]
    assert listed["stock"] == 11
