"""Refusals answered from the gates before any database session (the flash crowd's
losers): same status and body as the full route, no session opened, and everything
the edge cannot answer the same way (an Idempotency-Key, a bad token, a bad body)
still gets the route's answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flashsale.metrics import REQUEST_LATENCY

from .support import Api, StartApp, expect, writer_ops

pytestmark = pytest.mark.anyio


class _CountingFactory:
    """Stands in for a session factory and counts the sessions opened through it."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self.factory = factory
        self.opened = 0

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncSession:
        self.opened += 1
        return self.factory(*args, **kwargs)


class _Writes:
    """The writer operations submitted in a block (``opened``: how many)."""

    def __init__(self, ops: list[Any]) -> None:
        self.ops = ops

    @property
    def opened(self) -> int:
        return len(self.ops)


@contextmanager
def counting_sessions(api: Api) -> Iterator[tuple[_Writes, _CountingFactory]]:
    """Count the writes (operations of the process's group-commit writer: the server
    has no write session) and the read sessions the app opens inside the block."""
    db = api.state.db
    read = _CountingFactory(db.read_session)
    db.read_session = read  # type: ignore[assignment]
    try:
        with writer_ops(api.state) as ops:
            yield _Writes(ops), read
    finally:
        db.read_session = read.factory


def _latency_count(route: str, status: str) -> float:
    for metric in REQUEST_LATENCY.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("route") == route
                and sample.labels.get("status") == status
            ):
                return sample.value
    return 0.0


async def test_sold_out_and_held_coupons_are_refused_without_a_session(api: Api) -> None:
    coupon = await api.coupon(total_quantity=1)
    holder, late = await api.user(), await api.user()
    await api.issue(holder, coupon["id"])
    before = api.snapshot()
    route = "/api/v1/coupons/{coupon_id}/issue"
    counted = _latency_count(route, "409")
    with counting_sessions(api) as (write, read):
        sold_out = expect(await api.post(f"/coupons/{coupon['id']}/issue", late), 409)
        held = expect(await api.post(f"/coupons/{coupon['id']}/issue", holder), 409)
    assert (write.opened, read.opened) == (0, 0)
    assert sold_out == {
        "code": "COUPON_SOLD_OUT",
        "message": "Coupon sold out",
        "details": {"coupon_id": coupon["id"]},
    }
    assert held["code"] == "COUPON_ALREADY_ISSUED"
    assert _latency_count(route, "409") == counted + 2  # labelled with the route
    assert api.snapshot() == before


async def test_an_order_the_gate_knows_is_short_opens_no_session(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 1), (2_000, 5))
    short, plenty = (v["id"] for v in p["variants"])
    before = api.snapshot()
    with counting_sessions(api) as (write, read):
        err = expect(await api.order(user, (plenty, 1), (short, 2)), 409, "OUT_OF_STOCK")
    assert (write.opened, read.opened) == (0, 0)
    assert err["details"] == {"variant_id": short, "requested": 2, "available": 1}
    assert api.snapshot() == before
    expect(await api.order(user, (plenty, 1), (short, 1)), 201)  # admitted: the route runs


async def test_what_the_edge_cannot_answer_goes_to_the_route(api: Api) -> None:
    user = await api.user(balance=100_000)
    coupon = await api.coupon(total_quantity=1)
    await api.issue(user, coupon["id"])
    p = await api.product((1_000, 1))
    v = p["variants"][0]["id"]
    path = f"/coupons/{coupon['id']}/issue"
    # No token, or a bad one: the route's 401.
    expect(await api.client.post("/api/v1" + path), 401, "UNAUTHENTICATED")
    bad = {"Authorization": "Bearer not-a-token"}
    expect(await api.client.post("/api/v1" + path, headers=bad), 401, "UNAUTHENTICATED")
    # A body the route refuses with 422 stays a 422 with the route's details.
    body = {"items": [{"variant_id": v, "quantity": 2}], "pay": "yes"}
    err = expect(await api.post("/orders", user, json=body), 422, "VALIDATION_ERROR")
    assert any(e["loc"][-1] == "pay" for e in err["details"]["errors"])
    # With an Idempotency-Key the refusal is stored and replayed by the route.
    keyed = {**user.headers, "Idempotency-Key": "edge-1"}
    first = await api.client.post("/api/v1" + path, headers=keyed)
    again = await api.client.post("/api/v1" + path, headers=keyed)
    expect(first, 409, "COUPON_ALREADY_ISSUED")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()


async def test_a_stale_sold_out_is_reread_once_for_everyone(start_app: StartApp) -> None:
    async with start_app(gate_freshness_s=0.2) as api:
        coupon = await api.coupon(total_quantity=1)
        await api.issue(await api.user(), coupon["id"])
        users = [await api.user() for _ in range(20)]
        await anyio.sleep(0.3)  # the local "sold out" is older than the bound now
        # Count the sessions the gate's re-reads open (the background tasks open read
        # sessions of their own at any time).
        gate = api.state.coupon_gate
        reread, rereads = gate.reread, 0

        async def counted_reread(reader: Any, coupon_id: int) -> None:
            def counting_reader() -> Any:
                nonlocal rereads
                rereads += 1
                return reader()

            await reread(counting_reader, coupon_id)

        gate.reread = counted_reread
        codes: list[str] = []
        try:
            with counting_sessions(api) as (write, _read):
                async with anyio.create_task_group() as tg:
                    for user in users:

                        async def one(user: Any = user) -> None:
                            r = await api.post(f"/coupons/{coupon['id']}/issue", user)
                            codes.append(expect(r, 409)["code"])

                        tg.start_soon(one)
        finally:
            del gate.reread
        assert codes == ["COUPON_SOLD_OUT"] * 20
        assert (write.opened, rereads) == (0, 1)


async def test_a_stale_sold_out_sees_a_restock_elsewhere(start_app: StartApp) -> None:
    async with start_app(gate_freshness_s=0.2) as api:
        user = await api.user(balance=100_000)
        p = await api.product((1_000, 1))
        v = p["variants"][0]["id"]
        expect(await api.order(user, (v, 1)), 201)
        expect(await api.order(user, (v, 1)), 409, "OUT_OF_STOCK")
        api.restock_directly(v, 2)
        await anyio.sleep(0.3)
        expect(await api.order(user, (v, 2)), 201)
        api.assert_audit_ok()


async def test_a_crash_between_commit_and_response_is_replayed_by_the_retry(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order committed but its answer was lost (the process died before sending
    it): the client's retry with the same Idempotency-Key gets the committed order."""
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 5))
    v = p["variants"][0]["id"]
    writer = api.state.writer
    real_submit = writer.submit

    calls = 0

    async def lost_answer(op: Any, locks: Any = None) -> Any:
        nonlocal calls
        calls += 1
        result = await real_submit(op, locks)
        if calls == 2:  # 1: the key's claim, 2: the order (committed with its answer)
            raise ConnectionResetError("the answer never left the process")
        return result

    monkeypatch.setattr(writer, "submit", lost_answer)
    body = {"items": [{"variant_id": v, "quantity": 2}], "pay": True}
    headers = {**user.headers, "Idempotency-Key": "lost-1"}
    first = await api.client.post("/api/v1/orders", json=body, headers=headers)
    assert first.status_code == 500
    monkeypatch.setattr(writer, "submit", real_submit)
    retry = await api.client.post("/api/v1/orders", json=body, headers=headers)
    order = expect(retry, 201)
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert order["status"] == "PAID"
    assert await api.stock(v, p["id"]) == 3  # one order, not two
    assert await api.balance(user) == 100_000 - 2_000
    api.assert_audit_ok()


async def test_admitted_orders_and_issues_are_answered_at_the_edge(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A winner without an Idempotency-Key is written and answered by the edge (the
    route's authentication never runs), with the route's status and body: the same
    order that GET /orders/{id} shows, the same shape as the route's answer to a
    keyed request."""
    user = await api.user(balance=100_000)
    coupon = await api.coupon(total_quantity=5)
    p = await api.product((1_000, 5), (2_000, 5))
    a, b = (v["id"] for v in p["variants"])
    routed = expect(
        await api.client.post(
            "/api/v1/orders",
            json={"items": [{"variant_id": a, "quantity": 1}], "pay": True},
            headers={**user.headers, "Idempotency-Key": "via-route"},
        ),
        201,
    )
    issued_via_route = expect(
        await api.client.post(
            f"/api/v1/coupons/{coupon['id']}/issue",
            headers={**(await api.user()).headers, "Idempotency-Key": "via-route"},
        ),
        201,
    )

    def route_must_not_run(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the route answered an admitted request")

    monkeypatch.setattr("flashsale.api.deps.decode_access_token", route_must_not_run)
    counted = _latency_count("/api/v1/orders", "201")
    order = expect(await api.order(user, (a, 2), (b, 1)), 201)
    issued = expect(await api.post(f"/coupons/{coupon['id']}/issue", user), 201)
    monkeypatch.undo()

    assert _latency_count("/api/v1/orders", "201") == counted + 1
    assert order["status"] == "PAID" and order["paid_amount"] == 4_000
    assert [(i["variant_id"], i["quantity"]) for i in order["items"]] == [(a, 2), (b, 1)]
    assert set(order) == set(routed) and set(issued) == set(issued_via_route)
    assert expect(await api.get(f"/orders/{order['order_id']}", user), 200) == order
    assert issued["status"] == "ISSUED"
    assert await api.balance(user) == 100_000 - 1_000 - 4_000
    api.assert_audit_ok()


async def test_an_admitted_order_refused_by_the_database_is_answered_at_the_edge(
    api: Api,
) -> None:
    """The gate admits it, the rules refuse it (a wallet too small): the edge sends
    the operation's refusal, exactly as the route would, and nothing changes."""
    user = await api.user(balance=1_000)
    p = await api.product((5_000, 5))
    v = p["variants"][0]["id"]
    before = api.snapshot()
    err = expect(await api.order(user, (v, 1)), 409, "INSUFFICIENT_BALANCE")
    assert err["details"] == {"required": 5_000, "balance": 1_000}
    assert api.snapshot() == before
    expect(await api.order(user, (v, 1)), 409, "INSUFFICIENT_BALANCE")  # the gate gave it back
    api.assert_audit_ok()


async def test_a_failed_batch_at_the_edge_goes_to_the_route(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's batch failed (nothing written): the route gets the request, body
    included, and answers it."""
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 5))
    v = p["variants"][0]["id"]
    writer = api.state.writer
    real_submit = writer.submit
    calls = 0

    async def fail_once(op: Any, locks: Any = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("the batch's connection dropped")
        return await real_submit(op, locks)

    monkeypatch.setattr(writer, "submit", fail_once)
    order = expect(await api.order(user, (v, 2)), 201)
    assert calls == 2 and order["status"] == "PAID"
    assert await api.stock(v, p["id"]) == 3
    api.assert_audit_ok()
