"""Every write of a server process is an operation of its group-commit writer: sign-up,
the cart (put, delete, checkout) and the admin routes included. The server has no
async write session at all (on SQLite the writer's is the process's only write
connection), so a route that tried to open one would fail."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import REGISTRY

from flashsale.auth import service as auth
from flashsale.cart import service as cart

from .support import PASSWORD, PREFIX, Api, User, expect, writer_ops

pytestmark = pytest.mark.anyio


def _batches() -> float:
    """Batches the writers of this process have committed or failed (histogram count)."""
    value = REGISTRY.get_sample_value("flashsale_writer_batch_size_count")
    return value or 0.0


async def _put(api: Api, user: User, variant_id: int, quantity: int) -> httpx.Response:
    return await api.client.put(
        f"{PREFIX}/me/cart/items/{variant_id}", headers=user.headers, json={"quantity": quantity}
    )


async def _checkout(api: Api, user: User, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {**user.headers, **({"Idempotency-Key": key} if key else {})}
    return await api.client.post(f"{PREFIX}/me/cart/checkout", headers=headers, json=body)


def _op_func(op: Any) -> Any:
    """The function a submitted operation runs (``functools.partial`` unwrapped)."""
    return getattr(op, "func", op)


async def test_the_server_has_no_write_session(api: Api, database_kind: str) -> None:
    with pytest.raises(RuntimeError, match="GroupCommitWriter"):
        _ = api.state.db.write_session
    if database_kind == "sqlite":  # no second write connection is opened at all
        assert api.state.db.write_engine is None
        assert api.state.db.engines == [api.state.db.read_engine]


async def test_sign_up_is_a_writer_operation(api: Api) -> None:
    batches = _batches()
    body = {"email": "Writer@Example.com", "password": PASSWORD, "name": "W"}
    with writer_ops(api.state) as ops:
        created = expect(await api.post("/auth/signup", json=body), 201)
    assert [_op_func(op) for op in ops] == [auth.create_user_op]
    assert _batches() > batches
    assert created == {"user_id": created["user_id"], "email": "writer@example.com", "name": "W"}
    # committed: the new user logs in and has an empty wallet
    token = await api.token(body["email"])
    user = User(created["user_id"], body["email"], {"Authorization": f"Bearer {token}"})
    assert await api.balance(user) == 0


async def test_concurrent_sign_ups_of_one_email_make_one_user(api: Api) -> None:
    """Sign-ups of one email in the same writer batch: the unique email refuses all but
    one, each refusal rolling back only its own savepoint, and answers 409 as before."""
    before = api.snapshot()
    body = {"email": "race@example.com", "password": PASSWORD, "name": "R"}
    responses: list[httpx.Response] = []
    async with anyio.create_task_group() as group:
        for _ in range(8):

            async def one() -> None:
                responses.append(await api.post("/auth/signup", json=body))

            group.start_soon(one)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7
    for r in responses:
        if r.status_code == 409:
            assert r.json() == {
                "code": "EMAIL_TAKEN",
                "message": "Email already registered",
                "details": {"email": "race@example.com"},
            }
    after = api.snapshot()
    assert len(after["users"]) == len(before["users"]) + 1
    assert len(after["wallets"]) == len(before["wallets"]) + 1


async def test_cart_edits_are_writer_operations(api: Api) -> None:
    user = await api.user()
    v = (await api.product((1_000, 5)))["variants"][0]["id"]
    batches = _batches()
    with writer_ops(api.state) as ops:
        put = expect(await _put(api, user, v, 2), 200)
        deleted = expect(
            await api.client.delete(f"{PREFIX}/me/cart/items/{v}", headers=user.headers), 200
        )
        missing = expect(await _put(api, user, 999_999, 1), 404, "VARIANT_NOT_FOUND")
    assert [_op_func(op) for op in ops] == [
        cart.set_item_op,
        cart.remove_item_op,
        cart.set_item_op,
    ]
    assert _batches() >= batches + 3
    assert [(i["variant_id"], i["quantity"]) for i in put["items"]] == [(v, 2)]
    assert deleted == {"items": [], "total_amount": 0}
    assert missing["details"] == {"variant_id": 999_999}


async def test_checkout_is_one_writer_operation(api: Api) -> None:
    user = await api.user(balance=10_000)
    p = await api.product((1_000, 5), (2_000, 5))
    v1, v2 = (v["id"] for v in p["variants"])
    expect(await _put(api, user, v2, 1), 200)
    expect(await _put(api, user, v1, 2), 200)
    with writer_ops(api.state) as ops:
        order = expect(await _checkout(api, user), 201)
    assert len(ops) == 1  # the cart taken, the order placed and paid: one operation
    assert [(i["variant_id"], i["quantity"]) for i in order["items"]] == [(v1, 2), (v2, 1)]
    assert (order["status"], order["paid_amount"]) == ("PAID", 4_000)
    assert expect(await api.get("/me/cart", user), 200)["items"] == []
    assert await api.balance(user) == 6_000
    api.assert_audit_ok()


async def test_checkout_with_an_idempotency_key_replays(api: Api) -> None:
    user = await api.user(balance=10_000)
    v = (await api.product((1_000, 10)))["variants"][0]["id"]
    expect(await _put(api, user, v, 2), 200)
    first = await _checkout(api, user, "cart-1", pay=True)
    order = expect(first, 201)
    assert "Idempotent-Replayed" not in first.headers
    # The cart fills again; the retry of the first checkout must not order it.
    expect(await _put(api, user, v, 3), 200)
    before = api.snapshot()
    again = await _checkout(api, user, "cart-1", pay=True)
    assert (again.status_code, again.json()) == (201, order)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.snapshot() == before
    assert [i["quantity"] for i in expect(await api.get("/me/cart", user), 200)["items"]] == [3]
    # The same key for another request is refused; a refusal is stored and replayed too.
    reused = await _checkout(api, user, "cart-1", pay=False)
    expect(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    expect(await api.client.delete(f"{PREFIX}/me/cart/items/{v}", headers=user.headers), 200)
    empty = expect(await _checkout(api, user, "cart-2"), 409, "CART_EMPTY")
    expect(await _put(api, user, v, 1), 200)  # a full cart now: still the stored answer
    replayed = await _checkout(api, user, "cart-2")
    assert (replayed.status_code, replayed.json()) == (409, empty)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert await api.balance(user) == 8_000
    api.assert_audit_ok()


async def test_concurrent_checkouts_of_one_cart_make_one_order(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 50), (3_000, 50))
    v1, v2 = (v["id"] for v in p["variants"])
    expect(await _put(api, user, v1, 2), 200)
    expect(await _put(api, user, v2, 1), 200)
    responses: list[httpx.Response] = []
    async with anyio.create_task_group() as group:
        for i in range(10):

            async def one(i: int = i) -> None:
                # Half with their own Idempotency-Key: each is a different request.
                responses.append(await _checkout(api, user, f"race-{i}" if i % 2 else None))

            group.start_soon(one)
    codes = sorted("201" if r.status_code == 201 else expect(r, 409)["code"] for r in responses)
    assert codes == ["201"] + ["CART_EMPTY"] * 9
    (order,) = [r.json() for r in responses if r.status_code == 201]
    assert order["paid_amount"] == 5_000
    orders = expect(await api.get("/me/orders", user), 200)["items"]
    assert [o["order_id"] for o in orders] == [order["order_id"]]
    assert await api.balance(user) == 95_000
    assert (await api.stock(v1, p["id"]), await api.stock(v2, p["id"])) == (48, 49)
    assert expect(await api.get("/me/cart", user), 200)["items"] == []
    api.assert_audit_ok()


async def test_a_refused_checkout_in_a_batch_keeps_the_cart_and_its_neighbours_commit(
    api: Api,
) -> None:
    """A checkout refused in the writer's batch rolls back its own savepoint only: its
    cart is back, and the other users' checkouts of the same batch commit."""
    rich = [await api.user(balance=10_000) for _ in range(4)]
    poor = await api.user()  # balance 0
    v = (await api.product((1_000, 100)))["variants"][0]["id"]
    for user in [*rich, poor]:
        expect(await _put(api, user, v, 1), 200)
    responses: dict[int, httpx.Response] = {}
    async with anyio.create_task_group() as group:
        for user in [*rich, poor]:

            async def one(user: User = user) -> None:
                responses[user.user_id] = await _checkout(api, user)

            group.start_soon(one)
    for user in rich:
        expect(responses[user.user_id], 201)
        assert expect(await api.get("/me/cart", user), 200)["items"] == []
    expect(responses[poor.user_id], 409, "INSUFFICIENT_BALANCE")
    kept = expect(await api.get("/me/cart", poor), 200)["items"]
    assert [(i["variant_id"], i["quantity"]) for i in kept] == [(v, 1)]
    api.assert_audit_ok()


async def test_admin_writes_are_writer_operations_and_tell_the_gates(api: Api) -> None:
    batches = _batches()
    with writer_ops(api.state) as ops:
        product = await api.product((1_000, 0))
        v = product["variants"][0]["id"]
        coupon = await api.coupon(total_quantity=2)
        restocked = await api.restock(v, 4)
    assert len(ops) == 3
    assert _batches() >= batches + 3
    assert restocked == {**product["variants"][0], "stock": 4}
    # After the commit, this process's gates know the new values at once.
    assert api.state.stock_gate.pool.available(v) == 4
    user = await api.user(balance=10_000)
    expect(await api.order(user, (v, 4)), 201)
    assert api.state.coupon_gate.terms[coupon["id"]][2] == coupon["valid_days"]
    await api.issue(user, coupon["id"])
    # A refused admin write (an unknown variant) changes nothing.
    before = api.snapshot()
    r = await api.post("/admin/variants/999999/restock", api.admin, json={"quantity": 1})
    expect(r, 404, "VARIANT_NOT_FOUND")
    assert api.snapshot() == before
    api.assert_audit_ok()
