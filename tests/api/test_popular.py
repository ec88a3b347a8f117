"""``/products/popular``: the sliding-window ranking (docs/invariants.md#ranking)."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import pytest
from sqlalchemy import delete, insert, select

from flashsale.api.background import follow_order_events
from flashsale.db.models import outbox
from flashsale.db.writer import Tx

from .support import Api, StartApp, User, expect

pytestmark = pytest.mark.anyio


async def _sell(api: Api, user: User, variant_id: int, quantity: int, times: int = 1) -> None:
    for _ in range(times):
        expect(await api.order(user, (variant_id, quantity)), 201)


def _ranked(body: dict[str, object]) -> list[tuple[int, int, int]]:
    items = body["items"]
    assert isinstance(items, list)
    return [(i["product_id"], i["quantity"], i["orders"]) for i in items]


async def test_empty(api: Api) -> None:
    body = expect(await api.get("/products/popular"), 200)
    assert body["items"] == []
    assert body["metric"] == "quantity"


async def test_ranking_by_quantity_and_orders(api: Api) -> None:
    user = await api.user(balance=1_000_000)
    a = await api.product((1_000, 100))
    b = await api.product((2_000, 100), (1_500, 100))
    c = await api.product((3_000, 100))
    va = a["variants"][0]["id"]
    vb1, vb2 = (v["id"] for v in b["variants"])
    vc = c["variants"][0]["id"]
    await _sell(api, user, va, 5)  # A: 5 units, 1 order
    await _sell(api, user, vc, 1, times=3)  # C: 3 units, 3 orders
    # B: one order with two of its variants counts one order, 4 units
    expect(await api.order(user, (vb1, 2), (vb2, 2)), 201)
    # a refused order counts for nothing
    poor = await api.user()
    expect(await api.order(poor, (vc, 50)), 409, "INSUFFICIENT_BALANCE")

    body = expect(await api.get("/products/popular", params={"metric": "quantity"}), 200)
    assert set(body) == {"metric", "window_start", "window_end", "items"}
    assert body["metric"] == "quantity"
    assert _ranked(body) == [(a["id"], 5, 1), (b["id"], 4, 1), (c["id"], 3, 3)]
    first = body["items"][0]
    assert set(first) == {"rank", "product_id", "name", "price", "quantity", "orders"}
    assert [i["rank"] for i in body["items"]] == [1, 2, 3]
    assert (first["name"], first["price"]) == (a["name"], 1_000)
    assert body["items"][1]["price"] == 1_500  # lowest variant price

    body = expect(await api.get("/products/popular", params={"metric": "orders"}), 200)
    assert body["metric"] == "orders"
    # C has 3 orders; A and B tie on 1 order: lower product id first
    assert _ranked(body) == [(c["id"], 3, 3), (a["id"], 5, 1), (b["id"], 4, 1)]

    body = expect(await api.get("/products/popular", params={"limit": 1}), 200)
    assert _ranked(body) == [(a["id"], 5, 1)]


async def test_ties_go_to_the_lower_product_id(api: Api) -> None:
    user = await api.user(balance=1_000_000)
    products = [await api.product((1_000, 100)) for _ in range(4)]
    for p in reversed(products):  # sell the higher ids first
        await _sell(api, user, p["variants"][0]["id"], 2)
    for metric in ("quantity", "orders"):
        body = expect(await api.get("/products/popular", params={"metric": metric}), 200)
        assert [i["product_id"] for i in body["items"]] == [p["id"] for p in products]


async def test_window_bounds(api: Api) -> None:
    for days in (1, 3, 7):
        body = expect(await api.get("/products/popular", params={"days": days}), 200)
        start = datetime.fromisoformat(body["window_start"])
        end = datetime.fromisoformat(body["window_end"])
        assert end - start == timedelta(days=days)
        assert start.tzinfo is not None


async def test_bad_query_is_422(api: Api, subtests: pytest.Subtests) -> None:
    cases: list[dict[str, object]] = [
        {"limit": 0},
        {"limit": 51},
        {"limit": 10**30},
        {"days": 0},
        {"days": 8},
        {"days": -1},
        {"days": 10**30},
        {"metric": "revenue"},
        {"metric": ""},
        {"limit": "five"},
    ]
    for params in cases:
        with subtests.test(params=params):
            r = await api.get("/products/popular", params=params)
            expect(r, 422, "VALIDATION_ERROR")


async def test_bounds_are_inclusive(api: Api) -> None:
    for params in ({"limit": 1, "days": 1}, {"limit": 50, "days": 7}):
        expect(await api.get("/products/popular", params=params), 200)


async def test_ranking_survives_a_restart(api: Api, start_app: StartApp) -> None:
    user = await api.user(balance=1_000_000)
    a = await api.product((1_000, 100))
    b = await api.product((1_000, 100))
    await _sell(api, user, a["variants"][0]["id"], 1, times=2)
    await _sell(api, user, b["variants"][0]["id"], 3)
    before = {
        m: _ranked(expect(await api.get("/products/popular", params={"metric": m}), 200))
        for m in ("quantity", "orders")
    }
    async with start_app() as restarted:  # rebuilt from PAID orders in the database
        for metric, ranked in before.items():
            body = await restarted.get("/products/popular", params={"metric": metric})
            assert _ranked(expect(body, 200)) == ranked
    api.assert_audit_ok()


async def test_sales_of_another_instance_are_followed(api: Api, start_app: StartApp) -> None:
    p = await api.product((1_000, 100))
    async with start_app(ranking_poll_s=0.05) as other:
        user = await other.user(balance=100_000)
        expect(await other.order(user, (p["variants"][0]["id"], 4)), 201)
        # api's follower polls every 0.5 s (the default)
        with anyio.fail_after(5):
            while True:
                body = expect(await api.get("/products/popular"), 200)
                if body["items"]:
                    break
                await anyio.sleep(0.1)
        assert _ranked(body) == [(p["id"], 4, 1)]
        # and the instance that sold it counts it once
        assert _ranked(expect(await other.get("/products/popular"), 200)) == [(p["id"], 4, 1)]


async def _hide_event(api: Api, order_id: int) -> dict[str, object]:
    """Delete an order's outbox row and return it: to the follower it looks like the
    event of a transaction that has not committed yet (PostgreSQL hands out ids before
    commit, so a lower id can become visible after a higher one)."""

    def hide(tx: Tx) -> dict[str, object]:
        row = tx.conn.execute(select(outbox).where(outbox.c.order_id == order_id)).one()
        tx.conn.execute(delete(outbox).where(outbox.c.id == row.id))
        return dict(row._mapping)

    return await api.state.writer.submit(hide)


async def _show_event(api: Api, row: dict[str, object]) -> None:
    """Put the hidden row back with its own id: the late commit."""
    await api.state.writer.submit(lambda tx: tx.conn.execute(insert(outbox).values(**row)))


async def test_an_event_that_commits_after_a_later_one_is_still_followed(
    api: Api, start_app: StartApp
) -> None:
    p = await api.product((1_000, 100))
    q = await api.product((1_000, 100))
    user = await api.user(balance=100_000)
    async with start_app(ranking_poll_s=2.0) as follower:
        ranking = follower.state.ranking
        early = expect(await api.order(user, (p["variants"][0]["id"], 2)), 201)
        expect(await api.order(user, (q["variants"][0]["id"], 5)), 201)
        hidden = await _hide_event(api, early["order_id"])
        await follow_order_events(follower.state)
        assert ranking.pending_gaps == 1  # the lower id is waited for
        popular = expect(await follower.get("/products/popular"), 200)
        assert _ranked(popular) == [(q["id"], 5, 1)]
        await _show_event(api, hidden)
        await follow_order_events(follower.state)
        assert ranking.pending_gaps == 0
        popular = expect(await follower.get("/products/popular"), 200)
        assert _ranked(popular) == [(q["id"], 5, 1), (p["id"], 2, 1)]  # each once
        await follow_order_events(follower.state)
        assert _ranked(expect(await follower.get("/products/popular"), 200)) == _ranked(popular)


async def test_a_gap_that_never_fills_is_given_up(api: Api, start_app: StartApp) -> None:
    p = await api.product((1_000, 100))
    user = await api.user(balance=100_000)
    async with start_app(ranking_gap_timeout_s=0.2) as follower:
        ranking = follower.state.ranking
        first = expect(await api.order(user, (p["variants"][0]["id"], 1)), 201)
        expect(await api.order(user, (p["variants"][0]["id"], 1)), 201)
        await _hide_event(api, first["order_id"])  # a rolled-back transaction's id
        await follow_order_events(follower.state)
        await anyio.sleep(0.3)
        await follow_order_events(follower.state)
        assert ranking.pending_gaps == 0
