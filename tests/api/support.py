"""Helpers shared by the API tests: the :class:`Api` driver and assertions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from flashsale.api.state import AppState
from flashsale.audit import run_audit
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import Base

PREFIX = "/api/v1"
PASSWORD = "Passw0rd!"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Adm1n-Passw0rd!"

_ids = itertools.count(1)


def utc(**delta: float) -> datetime:
    """Now (UTC) shifted by ``timedelta(**delta)``."""
    return datetime.now(UTC) + timedelta(**delta)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def expect(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """Assert the status (and the error ``code``), return the JSON body.

    Every error body has ``code``, ``message`` and ``details`` (docs/api.md).
    """
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} -> "
        f"{response.status_code}: {response.text}"
    )
    body = response.json()
    if status >= 400:
        assert set(body) == {"code", "message", "details"}, body
        assert isinstance(body["message"], str) and body["message"]
        assert isinstance(body["details"], dict)
        if code is not None:
            assert body["code"] == code, body
    return body


@dataclass(frozen=True)
class User:
    user_id: int
    email: str
    headers: dict[str, str]


@dataclass
class Api:
    """A running app, its client and the shared helpers."""

    client: httpx.AsyncClient
    state: AppState
    db_url: str
    admin: User

    # -- HTTP ------------------------------------------------------------------
    async def get(self, path: str, user: User | None = None, **kw: Any) -> httpx.Response:
        return await self.client.get(PREFIX + path, headers=user.headers if user else None, **kw)

    async def post(self, path: str, user: User | None = None, **kw: Any) -> httpx.Response:
        return await self.client.post(PREFIX + path, headers=user.headers if user else None, **kw)

    # -- users -----------------------------------------------------------------
    async def token(self, email: str, password: str = PASSWORD) -> str:
        r = await self.client.post(
            PREFIX + "/auth/token", data={"username": email, "password": password}
        )
        return str(expect(r, 200)["access_token"])

    async def user(self, balance: int = 0) -> User:
        """A new customer, logged in, charged ``balance`` KRW (in charges of ≤ 1,000,000)."""
        email = f"user{next(_ids)}@example.com"
        body = expect(
            await self.post(
                "/auth/signup", json={"email": email, "password": PASSWORD, "name": "Test"}
            ),
            201,
        )
        user = User(body["user_id"], email, {"Authorization": f"Bearer {await self.token(email)}"})
        while balance > 0:
            amount = min(balance, 1_000_000)
            expect(await self.post("/me/wallet/charges", user, json={"amount": amount}), 201)
            balance -= amount
        return user

    def fund(self, user: User, amount: int) -> None:
        """Add ``amount`` KRW straight in the database, with its CHARGE ledger row
        (quicker than the up to 100 charges the API would need)."""
        self.sql(
            "UPDATE wallets SET balance = balance + :a WHERE user_id = :u", a=amount, u=user.user_id
        )
        self.sql(
            "INSERT INTO wallet_transactions (user_id, type, amount, balance_after, order_id, "
            "created_at) SELECT user_id, 'CHARGE', :a, balance, NULL, :t FROM wallets "
            "WHERE user_id = :u",
            a=amount,
            u=user.user_id,
            t=utc().replace(tzinfo=None),
        )

    async def balance(self, user: User) -> int:
        return int(expect(await self.get("/me/wallet", user), 200)["balance"])

    async def ledger(self, user: User) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = expect(
            await self.get("/me/wallet/transactions", user, params={"limit": 100}), 200
        )["items"]
        return items

    # -- catalog and coupons (admin) -----------------------------------------------
    async def product(self, *variants: tuple[int, int], **fields: Any) -> dict[str, Any]:
        """Create a product with variants ``(price, stock)`` (default one of 10,000 KRW × 10)."""
        n = next(_ids)
        body: dict[str, Any] = {
            "name": f"Product {n}",
            "description": "test product",
            "variants": [
                {"sku": f"SKU-{n}-{i}", "name": f"Variant {i}", "price": price, "stock": stock}
                for i, (price, stock) in enumerate(variants or [(10_000, 10)])
            ],
        }
        body.update(fields)
        result: dict[str, Any] = expect(
            await self.post("/admin/products", self.admin, json=body), 201
        )
        return result

    async def coupon(self, **fields: Any) -> dict[str, Any]:
        """Create a coupon (default FIXED 1,000 KRW, 100 of them, valid 7 days)."""
        body: dict[str, Any] = {
            "name": f"Coupon {next(_ids)}",
            "discount_type": "FIXED",
            "discount_value": 1_000,
            "total_quantity": 100,
            "valid_days": 7,
        }
        body.update(fields)
        result: dict[str, Any] = expect(
            await self.post("/admin/coupons", self.admin, json=body), 201
        )
        return result

    async def issue(self, user: User, coupon_id: int) -> int:
        r = await self.post(f"/coupons/{coupon_id}/issue", user)
        return int(expect(r, 201)["user_coupon_id"])

    async def restock(self, variant_id: int, quantity: int) -> dict[str, Any]:
        r = await self.post(
            f"/admin/variants/{variant_id}/restock", self.admin, json={"quantity": quantity}
        )
        result: dict[str, Any] = expect(r, 200)
        return result

    # -- orders ----------------------------------------------------------------
    async def order(
        self, user: User, *lines: tuple[int, int], user_coupon_id: int | None = None
    ) -> httpx.Response:
        """``POST /orders`` for ``(variant_id, quantity)`` lines."""
        body: dict[str, Any] = {
            "items": [{"variant_id": v, "quantity": q} for v, q in lines],
            "pay": True,
        }
        if user_coupon_id is not None:
            body["user_coupon_id"] = user_coupon_id
        return await self.post("/orders", user, json=body)

    async def stock(self, variant_id: int, product_id: int) -> int:
        detail = expect(await self.get(f"/products/{product_id}"), 200)
        return next(int(v["stock"]) for v in detail["variants"] if v["id"] == variant_id)

    # -- database --------------------------------------------------------------
    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the tables a refused request must not change."""
        tables = [t.name for t in Base.metadata.sorted_tables]
        engine = make_sync_engine(self.db_url, immediate=False)
        try:
            with engine.connect() as conn:
                return {
                    t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
                    for t in tables
                }
        finally:
            engine.dispose()

    def sql(self, statement: str, **params: Any) -> None:
        """Run one write statement directly on the database (another writer)."""
        engine = make_sync_engine(self.db_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(statement), params)
        finally:
            engine.dispose()

    def restock_directly(self, variant_id: int, quantity: int) -> None:
        """Another writer (process, tool) adds stock with its RESTOCK movement, behind
        this app's gates."""
        self.sql("UPDATE variants SET stock = stock + :q WHERE id = :v", q=quantity, v=variant_id)
        self.sql(
            "INSERT INTO inventory_movements (variant_id, kind, quantity, order_id, created_at) "
            "VALUES (:v, 'RESTOCK', :q, NULL, :t)",
            v=variant_id,
            q=quantity,
            t=utc().replace(tzinfo=None),
        )

    def assert_audit_ok(self) -> None:
        report = run_audit(self.db_url)
        assert report.checks
        assert report.ok, report.failures


@contextmanager
def writer_ops(state: AppState) -> Iterator[list[Any]]:
    """Record the operations submitted to the process's group-commit writer inside the
    block (a spy on ``state.writer.submit``; the operations still run)."""
    ops: list[Any] = []
    writer = state.writer
    submit = writer.submit

    async def spy(op: Any, locks: Any = None) -> Any:
        ops.append(op)
        return await submit(op, locks)

    writer.submit = spy  # type: ignore[method-assign]
    try:
        yield ops
    finally:
        del writer.submit  # the class's method again


#: The ``start_app`` fixture: ``async with start_app(**settings) as api``.
StartApp = Callable[..., AbstractAsyncContextManager[Api]]
