"""``Idempotency-Key`` (docs/api.md; Stripe's semantics)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from flashsale.api.idempotency import fingerprint, has_expired_keys, purge_expired_keys
from flashsale.db.session import transaction
from flashsale.db.types import utcnow

from .support import Api, StartApp, User, expect, utc

pytestmark = pytest.mark.anyio


def _with_key(user: User, key: str) -> dict[str, str]:
    return {**user.headers, "Idempotency-Key": key, "Content-Type": "application/json"}


async def _post(api: Api, path: str, user: User, key: str, **kw: Any) -> httpx.Response:
    return await api.client.post("/api/v1" + path, headers=_with_key(user, key), **kw)


def _order_body(variant_id: int, quantity: int = 1) -> dict[str, Any]:
    return {"items": [{"variant_id": variant_id, "quantity": quantity}], "pay": True}


async def test_same_key_same_body_replays_the_first_response(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((10_000, 5))
    v = p["variants"][0]["id"]
    first = await _post(api, "/orders", user, "order-1", json=_order_body(v))
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    before = api.snapshot()
    again = await _post(api, "/orders", user, "order-1", json=_order_body(v))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert api.snapshot() == before  # one order, one payment
    assert await api.balance(user) == 90_000
    assert await api.stock(v, p["id"]) == 4


async def test_same_key_different_body_is_422(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    expect(await _post(api, "/orders", user, "k", json=_order_body(v)), 201)
    before = api.snapshot()
    for path, body in (("/orders", _order_body(v, 2)), ("/me/wallet/charges", {"amount": 1000})):
        r = await _post(api, path, user, "k", json=body)
        assert expect(r, 422)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert api.snapshot() == before


async def test_keys_are_scoped_per_user(api: Api) -> None:
    a, b = await api.user(), await api.user()
    ra = await _post(api, "/me/wallet/charges", a, "same", json={"amount": 5_000})
    rb = await _post(api, "/me/wallet/charges", b, "same", json={"amount": 5_000})
    assert expect(ra, 201)["transaction_id"] != expect(rb, 201)["transaction_id"]
    assert "Idempotent-Replayed" not in rb.headers
    assert (await api.balance(a), await api.balance(b)) == (5_000, 5_000)


async def test_a_business_refusal_is_replayed(api: Api) -> None:
    user = await api.user(balance=1_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    first = await _post(api, "/orders", user, "poor", json=_order_body(v))
    assert expect(first, 409)["code"] == "INSUFFICIENT_BALANCE"
    expect(await api.post("/me/wallet/charges", user, json={"amount": 100_000}), 201)
    # Stripe's rule: the key's outcome is final, even though the order would succeed now.
    again = await _post(api, "/orders", user, "poor", json=_order_body(v))
    assert again.status_code == 409
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


async def test_validation_errors_store_nothing(api: Api) -> None:
    user = await api.user(balance=100_000)
    v = (await api.product((10_000, 5)))["variants"][0]["id"]
    before = api.snapshot()
    bad = await _post(api, "/orders", user, "fix-me", json={"items": [], "pay": True})
    assert expect(bad, 422)["code"] == "VALIDATION_ERROR"
    out_of_range = await _post(api, "/me/wallet/charges", user, "fix-me", json={"amount": 1})
    assert expect(out_of_range, 422)["code"] == "CHARGE_AMOUNT_OUT_OF_RANGE"
    assert api.snapshot() == before
    # the corrected request may use the same key
    good = await _post(api, "/orders", user, "fix-me", json=_order_body(v))
    assert good.status_code == 201 and "Idempotent-Replayed" not in good.headers


async def test_bad_keys_are_422(api: Api) -> None:
    user = await api.user(balance=100_000)
    before = api.snapshot()
    for key in ("", "x" * 256):
        r = await _post(api, "/me/wallet/charges", user, key, json={"amount": 1_000})
        assert expect(r, 422)["code"] == "VALIDATION_ERROR"
    assert api.snapshot() == before
    ok = await _post(api, "/me/wallet/charges", user, "x" * 255, json={"amount": 1_000})
    assert ok.status_code == 201


async def test_unauthenticated_requests_store_nothing(api: Api) -> None:
    before = api.snapshot()
    r = await api.client.post(
        "/api/v1/me/wallet/charges", headers={"Idempotency-Key": "k"}, json={"amount": 1_000}
    )
    assert expect(r, 401)["code"] == "UNAUTHENTICATED"
    assert api.snapshot() == before


async def test_a_key_in_flight_is_409(api: Api) -> None:
    user = await api.user(balance=100_000)
    # A first request that is still running: its key is IN_PROGRESS and freshly locked.
    now = utc().replace(tzinfo=None)
    api.sql(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, created_at, locked_at) "
        "VALUES (:u, 'busy', :f, 'IN_PROGRESS', :t, :t)",
        u=user.user_id,
        f=fingerprint("POST", "/api/v1/me/wallet/charges", b'{"amount":1000}'),
        t=now,
    )
    before = api.snapshot()
    r = await _post(api, "/me/wallet/charges", user, "busy", content=b'{"amount":1000}')
    assert expect(r, 409)["code"] == "IDEMPOTENCY_KEY_IN_USE"
    assert api.snapshot() == before


async def test_a_dead_request_s_key_is_taken_over(start_app: StartApp) -> None:
    async with start_app(idempotency_lock_s=0.5) as api:
        user = await api.user()
        print_ = fingerprint("POST", "/api/v1/me/wallet/charges", b'{"amount":2000}')
        stale = utc(seconds=-5).replace(tzinfo=None)
        api.sql(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, created_at, "
            "locked_at) VALUES (:u, 'dead', :f, 'IN_PROGRESS', :t, :t)",
            u=user.user_id,
            f=print_,
            t=stale,
        )
        r = await api.client.post(
            "/api/v1/me/wallet/charges",
            headers=_with_key(user, "dead"),
            content=b'{"amount":2000}',
        )
        assert r.status_code == 201, r.text
        again = await _post(api, "/me/wallet/charges", user, "dead", content=b'{"amount":2000}')
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == r.json()
        assert await api.balance(user) == 2_000


async def test_every_money_post_takes_a_key(api: Api) -> None:
    user = await api.user(balance=100_000)
    p = await api.product((1_000, 50))
    v = p["variants"][0]["id"]
    coupon = await api.coupon()
    pending = expect(await api.post("/orders", user, json={**_order_body(v), "pay": False}), 201)
    paid = expect(await api.order(user, (v, 1)), 201)
    await api.client.put(f"/api/v1/me/cart/items/{v}", headers=user.headers, json={"quantity": 1})
    calls: list[tuple[str, Any]] = [
        ("/me/wallet/charges", {"amount": 1_000}),
        (f"/coupons/{coupon['id']}/issue", None),
        (f"/orders/{pending['order_id']}/payment", None),
        (f"/orders/{paid['order_id']}/cancel", None),
        ("/me/cart/checkout", {}),
        ("/orders", _order_body(v)),
    ]
    for i, (path, body) in enumerate(calls):
        first = await _post(api, path, user, f"key-{i}", json=body)
        assert first.status_code in (200, 201), (path, first.text)
        before = api.snapshot()
        again = await _post(api, path, user, f"key-{i}", json=body)
        assert (again.status_code, again.json()) == (first.status_code, first.json()), path
        assert again.headers["Idempotent-Replayed"] == "true"
        assert api.snapshot() == before, path
    api.assert_audit_ok()


async def test_old_keys_are_purged(api: Api) -> None:
    user = await api.user()
    expect(await _post(api, "/me/wallet/charges", user, "old", json={"amount": 1_000}), 201)
    expect(await _post(api, "/me/wallet/charges", user, "new", json={"amount": 1_000}), 201)
    api.sql(
        "UPDATE idempotency_keys SET created_at = :t WHERE key = 'old'",
        t=(utcnow() - timedelta(hours=25)).replace(tzinfo=None),
    )
    cutoff = utcnow() - timedelta(hours=24)
    async with transaction(api.state.db.read_session) as session:
        assert await has_expired_keys(session, cutoff)
    assert await api.state.writer.submit(partial(purge_expired_keys, cutoff=cutoff)) == 1
    # after the purge the key is free again: a new charge, not a replay
    r = await _post(api, "/me/wallet/charges", user, "old", json={"amount": 1_000})
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    r = await _post(api, "/me/wallet/charges", user, "new", json={"amount": 1_000})
    assert r.headers["Idempotent-Replayed"] == "true"
    assert await api.balance(user) == 3_000
