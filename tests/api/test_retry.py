"""Requests whose transaction the database aborted (deadlock, serialization failure)
are run again, and the client sees one answer with one effect: no deadlock or
serialization error reaches a client.

The middleware is checked on a small ASGI app (what is retried, how often, what is
not), and on the real service with an abort injected in the middle of an order's
transaction (after the stock and the wallet were touched).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flashsale.api.retry import TransactionRetryMiddleware
from flashsale.db.dialect import retryable_sqlstate
from flashsale.metrics import DB_RETRIES

from .support import PREFIX, Api, expect

pytestmark = pytest.mark.anyio


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def aborted(sqlstate: str = "40P01") -> DBAPIError:
    """What SQLAlchemy raises when PostgreSQL aborts a transaction."""
    return DBAPIError("UPDATE variants ...", {}, _PgError(sqlstate))


def test_retryable_errors_are_recognised() -> None:
    assert retryable_sqlstate(aborted("40P01")) == "40P01"
    assert retryable_sqlstate(aborted("40001")) == "40001"
    assert retryable_sqlstate(aborted("23505")) is None  # unique violation: a real answer
    assert retryable_sqlstate(IntegrityError("INSERT", {}, _PgError("23505"))) is None
    assert retryable_sqlstate(ValueError("no")) is None
    try:
        try:
            raise aborted()
        except DBAPIError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert retryable_sqlstate(outer) == "40P01"


def _app(failures: int, sqlstate: str = "40P01", *, status: int = 201) -> tuple[Any, list[bytes]]:
    bodies: list[bytes] = []

    async def endpoint(request: Request) -> JSONResponse:
        bodies.append(await request.body())
        if len(bodies) <= failures:
            raise aborted(sqlstate)
        return JSONResponse({"runs": len(bodies)}, status_code=status)

    # Inside Starlette's ServerErrorMiddleware, as in the service (which answers 500 to
    # what the middleware lets through).
    app = Starlette(
        routes=[Route("/x", endpoint, methods=["GET", "POST"])],
        middleware=[Middleware(TransactionRetryMiddleware, attempts=3, backoff_s=0.001)],
    )
    return app, bodies


async def _call(app: Any, method: str = "POST") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, "/x", content=b'{"a": 1}')


async def test_an_aborted_write_runs_again_with_the_same_body() -> None:
    before = DB_RETRIES.labels(sqlstate="40P01")._value.get()
    app, bodies = _app(failures=2)
    response = await _call(app)
    assert response.status_code == 201 and response.json() == {"runs": 3}
    assert bodies == [b'{"a": 1}'] * 3
    assert DB_RETRIES.labels(sqlstate="40P01")._value.get() == before + 2


async def test_after_the_last_attempt_the_error_is_raised() -> None:
    app, bodies = _app(failures=5, sqlstate="40001")
    assert (await _call(app)).status_code == 500
    assert len(bodies) == 3


async def test_reads_and_other_errors_are_not_retried() -> None:
    app, bodies = _app(failures=1)
    assert (await _call(app, "GET")).status_code == 500
    assert len(bodies) == 1
    app, bodies = _app(failures=1, sqlstate="23505")
    assert (await _call(app)).status_code == 500
    assert len(bodies) == 1


async def test_an_order_aborted_mid_transaction_is_placed_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flashsale.orders.service as orders_service

    # The first run aborts once stock is taken, the wallet debited and the payment
    # written (all rolled back): on SQLite when the event is added, on PostgreSQL right
    # after the statement that wrote the whole order.
    real_event, real_write = orders_service.add_order_event, orders_service.repository.write_order
    calls = 0

    def abort_first_run() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise aborted()

    def event_deadlocked_once(*args: Any, **kwargs: Any) -> str:
        abort_first_run()
        return real_event(*args, **kwargs)

    def write_deadlocked_once(*args: Any, **kwargs: Any) -> Any:
        outcome = real_write(*args, **kwargs)
        abort_first_run()
        return outcome

    monkeypatch.setattr(orders_service, "add_order_event", event_deadlocked_once)
    monkeypatch.setattr(orders_service.repository, "write_order", write_deadlocked_once)
    user = await api.user(balance=50_000)
    product = await api.product((10_000, 5))
    variant_id = product["variants"][0]["id"]
    response = await api.client.post(
        PREFIX + "/orders",
        json={"items": [{"variant_id": variant_id, "quantity": 2}], "pay": True},
        headers={**user.headers, "Idempotency-Key": "retry-1"},
    )
    order = expect(response, 201)
    assert calls == 2
    assert order["status"] == "PAID" and order["paid_amount"] == 20_000
    assert await api.stock(variant_id, product["id"]) == 3
    orders = expect(await api.get("/me/orders", user), 200)["items"]
    assert [o["order_id"] for o in orders] == [order["order_id"]]
    wallet = expect(await api.get("/me/wallet", user), 200)
    assert wallet["balance"] == 30_000
    # The key was stored by the run that succeeded: a re-send replays it.
    again = await api.client.post(
        PREFIX + "/orders",
        json={"items": [{"variant_id": variant_id, "quantity": 2}], "pay": True},
        headers={**user.headers, "Idempotency-Key": "retry-1"},
    )
    assert expect(again, 201) == order
    api.assert_audit_ok()
