"""A small flash crowd in one process: concurrent requests never oversell stock or
coupons and every answer is definitive (docs/invariants.md). The multi-process rush is
in ``tests/e2e``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import anyio
import httpx
import pytest

from .support import Api, expect

pytestmark = pytest.mark.anyio


async def _all(calls: Sequence[Callable[[], Awaitable[httpx.Response]]]) -> list[httpx.Response]:
    results: list[httpx.Response | None] = [None] * len(calls)

    async def run(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(run, i)
    return [r for r in results if r is not None]


async def test_stock_rush(api: Api) -> None:
    p = await api.product((1_000, 5))
    v = p["variants"][0]["id"]
    users = [await api.user(balance=10_000) for _ in range(12)]
    responses = await _all([partial(api.order, u, (v, 1)) for u in users])
    codes = Counter(
        "OK" if r.status_code == 201 else expect(r, 409, "OUT_OF_STOCK")["code"] for r in responses
    )
    assert codes == {"OK": 5, "OUT_OF_STOCK": 7}
    assert await api.stock(v, p["id"]) == 0
    assert sum([await api.balance(u) for u in users]) == 12 * 10_000 - 5 * 1_000
    api.assert_audit_ok()


async def test_coupon_rush(api: Api) -> None:
    coupon = await api.coupon(total_quantity=4)
    users = [await api.user() for _ in range(10)]
    # every user asks twice at once
    calls = [partial(api.post, f"/coupons/{coupon['id']}/issue", u) for u in users * 2]
    responses = await _all(calls)
    codes = Counter("OK" if r.status_code == 201 else expect(r, 409)["code"] for r in responses)
    assert codes["OK"] == 4
    assert set(codes) <= {"OK", "COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"}
    holders = [u for u in users if expect(await api.get("/me/coupons", u), 200)]
    assert len(holders) == 4
    body = expect(await api.get(f"/coupons/{coupon['id']}"), 200)
    assert body["remaining_quantity"] == 0
    api.assert_audit_ok()
