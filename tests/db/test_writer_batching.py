"""Batched equals one by one: the same operations, committed in groups by the writer or
each in its own transaction, give every caller the same answer and leave the same
shop behind (balances, ledgers, stock, movements, coupons, orders, events per user;
ids and timestamps normalised).

Hypothesis draws a sequence of operations (orders paid at once or later, payments,
cancellations, coupon issues, charges) on a small shop where refusals are common
(little stock, small wallets, two coupons), cut into batches. One copy of the shop
runs them one at a time, the other submits each batch at once so that its operations
share a transaction, each in its savepoint.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, insert, text

from flashsale.coupons.service import issue_op
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import (
    coupons,
    inventory_movements,
    products,
    users,
    variants,
    wallet_transactions,
    wallets,
)
from flashsale.db.provision import create_database, drop_database
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter, Tx
from flashsale.errors import FlashsaleError
from flashsale.gates import CouponIssueGate, StockGate
from flashsale.orders.schemas import OrderIn, OrderOut
from flashsale.orders.service import cancel_order_op, pay_order_op, place_order_op
from flashsale.ranking.service import RankingService
from flashsale.wallet.service import charge_op

pytestmark = pytest.mark.anyio

USERS = (1, 2, 3)
VARIANTS = (1, 2, 3)  # product i has variant i, price i × 10,000 KRW, 4 units
COUPONS = (1, 2)  # 1: FIXED 5,000 KRW × 2; 2: PERCENT 10 % × 1

# -- the operations -------------------------------------------------------------------

Line = tuple[int, int]
place = st.tuples(
    st.just("place"),
    st.sampled_from(USERS),
    st.lists(st.tuples(st.sampled_from(VARIANTS), st.integers(1, 3)), min_size=1, max_size=2),
    st.booleans(),  # pay now
    st.booleans(),  # use the user's first unused coupon
)
pay = st.tuples(st.just("pay"), st.sampled_from(USERS), st.integers(0, 3))
cancel = st.tuples(st.just("cancel"), st.sampled_from(USERS), st.integers(0, 3))
issue = st.tuples(st.just("issue"), st.sampled_from(USERS), st.sampled_from(COUPONS))
charge = st.tuples(st.just("charge"), st.sampled_from(USERS), st.sampled_from((1_000, 30_000)))
operation = st.one_of(place, pay, cancel, issue, charge)
batches = st.lists(st.lists(operation, min_size=1, max_size=8), min_size=1, max_size=5)


@dataclass
class Shop:
    """One copy of the shop: its database, writer, gates and what its operations made."""

    url: str
    writer: GroupCommitWriter
    stock: StockGate = field(default_factory=StockGate)
    coupon_gate: CouponIssueGate = field(default_factory=CouponIssueGate)
    ranking: RankingService = field(default_factory=lambda: RankingService(7 * 86400, 60))
    orders: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    user_coupons: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))

    def op(self, spec: tuple[Any, ...]) -> Callable[[Tx], Any]:
        """The writer operation for ``spec``; it records what it creates as it runs, so
        a later operation of the same batch can name it."""
        kind, user = spec[0], spec[1]
        if kind == "place":
            _kind, _user, lines, pay_now, use_coupon = spec

            def place_op(tx: Tx) -> Any:
                dedup = dict(lines)
                coupon = (
                    self.user_coupons[user][0] if use_coupon and self.user_coupons[user] else None
                )
                body = OrderIn.model_validate(
                    {
                        "items": [
                            {"variant_id": v, "quantity": q} for v, q in sorted(dedup.items())
                        ],
                        "pay": pay_now,
                        "user_coupon_id": coupon,
                    }
                )
                order = place_order_op(
                    tx, gate=self.stock, ranking=self.ranking, user_id=user, body=body
                )
                self.orders[user].append(order.order_id)
                if coupon is not None:
                    self.user_coupons[user].remove(coupon)
                return order

            return place_op
        if kind in ("pay", "cancel"):
            index = spec[2]

            def order_op(tx: Tx) -> Any:
                if index >= len(self.orders[user]):
                    return "no such order"
                order_id = self.orders[user][index]
                if kind == "pay":
                    return pay_order_op(tx, ranking=self.ranking, user_id=user, order_id=order_id)
                return cancel_order_op(
                    tx, gate=self.stock, ranking=self.ranking, user_id=user, order_id=order_id
                )

            return order_op
        if kind == "issue":

            def issue_coupon(tx: Tx) -> Any:
                issued = issue_op(tx, gate=self.coupon_gate, coupon_id=spec[2], user_id=user)
                self.user_coupons[user].append(issued.user_coupon_id)
                return issued

            return issue_coupon
        return partial(charge_op, user_id=user, amount=spec[2])


# -- normalising -----------------------------------------------------------------------


def answer(result: Any) -> Any:
    """An operation's answer without ids and timestamps."""
    if isinstance(result, FlashsaleError):
        return ("refused", result.code)
    if isinstance(result, BaseException):
        raise result
    if isinstance(result, OrderOut):
        return (
            result.status,
            result.total_amount,
            result.discount_amount,
            result.paid_amount,
            tuple((i.variant_id, i.quantity, i.amount) for i in result.items),
            tuple((p.kind, p.amount) for p in result.payments),
        )
    if isinstance(result, tuple):  # a charge: (transaction id, balance, time)
        return ("charged", result[1])
    if isinstance(result, str):
        return result
    return ("issued", result.coupon_id, result.status)


_STATE = {
    "wallets": "SELECT user_id, balance FROM wallets ORDER BY user_id",
    "ledger": "SELECT user_id, type, amount, balance_after FROM wallet_transactions "
    "ORDER BY user_id, id",
    "stock": "SELECT id, stock FROM variants ORDER BY id",
    "movements": "SELECT variant_id, kind, quantity FROM inventory_movements "
    "ORDER BY variant_id, id",
    "coupons": "SELECT id, issued_count FROM coupons ORDER BY id",
    "user_coupons": "SELECT user_id, coupon_id, status FROM user_coupons ORDER BY user_id, id",
    "orders": "SELECT user_id, status, total_amount, discount_amount, paid_amount FROM orders "
    "ORDER BY user_id, id",
    "payments": "SELECT user_id, kind, amount FROM payments ORDER BY user_id, id",
    "events": "SELECT o.user_id, e.type FROM outbox e JOIN orders o ON o.id = e.order_id "
    "ORDER BY o.user_id, e.id",
}


def state_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_sync_engine(url, immediate=False)
    try:
        with engine.connect() as conn:
            return {k: [tuple(r) for r in conn.execute(text(q))] for k, q in _STATE.items()}
    finally:
        engine.dispose()


# -- the shop ----------------------------------------------------------------------------


def _seed(conn: Connection) -> None:
    now = utcnow()
    for u in USERS:
        conn.execute(
            insert(users).values(
                id=u, email=f"u{u}@example.com", name="u", password_hash="x", created_at=now
            )
        )
        conn.execute(insert(wallets).values(user_id=u, balance=40_000, updated_at=now))
        conn.execute(
            insert(wallet_transactions).values(
                user_id=u, type="CHARGE", amount=40_000, balance_after=40_000, created_at=now
            )
        )
    for v in VARIANTS:
        limit = 3 if v == 3 else None
        conn.execute(
            insert(products).values(
                id=v, name=f"p{v}", description="", per_user_limit=limit, created_at=now
            )
        )
        conn.execute(
            insert(variants).values(
                id=v, product_id=v, sku=f"s{v}", name="v", price=v * 10_000, stock=4
            )
        )
        conn.execute(
            insert(inventory_movements).values(
                variant_id=v, kind="RESTOCK", quantity=4, created_at=now
            )
        )
    terms = {"issued_count": 0, "valid_days": 7, "created_at": now - timedelta(seconds=1)}
    conn.execute(
        insert(coupons).values(
            id=1, name="c1", discount_type="FIXED", discount_value=5_000, total_quantity=2, **terms
        )
    )
    conn.execute(
        insert(coupons).values(
            id=2, name="c2", discount_type="PERCENT", discount_value=10, total_quantity=1, **terms
        )
    )


class Databases:
    """Fresh migrated databases of the test backend, copied from the session's template."""

    def __init__(
        self, template: Path | None, tmp: Path, server: str | None, pg_template: str | None
    ):
        self.template, self.tmp, self.server, self.pg_template = template, tmp, server, pg_template
        self.made: list[str] = []

    def new(self) -> str:
        name = f"flashsale_t_{secrets.token_hex(6)}"
        if self.server is not None:
            url = create_database(self.server, name, template=self.pg_template)
            self.made.append(name)
        else:
            assert self.template is not None
            path = self.tmp / f"{name}.db"
            shutil.copyfile(self.template, path)
            url = f"sqlite:///{path}"
        engine = make_sync_engine(url)
        try:
            with engine.begin() as conn:
                _seed(conn)
        finally:
            engine.dispose()
        return url

    def drop_all(self) -> None:
        for name in self.made:
            assert self.server is not None
            drop_database(self.server, name)
        self.made.clear()


@pytest.fixture
def databases(database_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if database_kind == "postgresql":
        server = request.getfixturevalue("postgres_server_url")
        made = Databases(None, tmp_path, server, request.getfixturevalue("postgres_template"))
    else:
        made = Databases(request.getfixturevalue("template_db"), tmp_path, None, None)
    yield made
    made.drop_all()


async def _open(url: str, window_s: float) -> Shop:
    shop = Shop(url, GroupCommitWriter(make_sync_engine(url), window_s=window_s))
    engine = make_sync_engine(url, immediate=False)
    try:
        with engine.connect() as conn:
            for v, stock in conn.execute(text("SELECT id, stock FROM variants")):
                shop.stock.learn(v, stock)
            for c, left, starts, ends, days in conn.execute(
                text(
                    "SELECT id, total_quantity - issued_count, issue_starts_at, issue_ends_at, "
                    "valid_days FROM coupons"
                )
            ):
                shop.coupon_gate.configure(c, left, (starts, ends, days))
    finally:
        engine.dispose()
    shop.writer.start()
    return shop


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=batches)
async def test_batched_operations_end_like_one_by_one(databases: Databases, plan: Any) -> None:
    one_by_one = await _open(databases.new(), window_s=0)
    grouped = await _open(databases.new(), window_s=0.05)
    try:
        answers_a: list[Any] = []
        answers_b: list[Any] = []
        for batch in plan:
            for spec in batch:
                try:
                    answers_a.append(answer(await one_by_one.writer.submit(one_by_one.op(spec))))
                except FlashsaleError as refused:
                    answers_a.append(answer(refused))
            # Submitted together: queued in this order, committed as one batch.
            results = await asyncio.gather(
                *(grouped.writer.submit(grouped.op(spec)) for spec in batch),
                return_exceptions=True,
            )
            answers_b.extend(answer(r) for r in results)
    finally:
        await one_by_one.writer.stop()
        await grouped.writer.stop()
    assert answers_b == answers_a
    assert state_of(grouped.url) == state_of(one_by_one.url)
    databases.drop_all()
