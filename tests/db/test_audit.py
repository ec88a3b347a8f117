"""``flashsale audit`` finds each broken invariant (docs/invariants.md) and names the rows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, update

from flashsale.audit import run_audit
from flashsale.db.engine import make_sync_engine
from flashsale.db.migrate import upgrade
from flashsale.db.models import (
    coupons,
    inventory_movements,
    order_items,
    orders,
    outbox,
    payments,
    products,
    user_coupons,
    users,
    variants,
    wallet_transactions,
    wallets,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(conn: Connection) -> None:
    """A consistent shop: one paid order of 2 units with a coupon."""
    conn.execute(
        insert(users).values(
            id=1,
            email="a@example.com",
            name="A",
            password_hash="x",
            role="customer",
            created_at=NOW,
        )
    )
    conn.execute(insert(wallets).values(user_id=1, balance=45_000, updated_at=NOW))
    conn.execute(insert(products).values(id=1, name="P", description="", created_at=NOW))
    conn.execute(
        insert(variants).values(id=1, product_id=1, sku="P-1", name="v", price=30_000, stock=8)
    )
    conn.execute(
        insert(coupons).values(
            id=1,
            name="C",
            discount_type="FIXED",
            discount_value=5_000,
            min_order_amount=0,
            total_quantity=10,
            issued_count=1,
            valid_days=7,
            created_at=NOW,
        )
    )
    conn.execute(
        insert(orders).values(
            id=1,
            user_id=1,
            status="PAID",
            total_amount=60_000,
            discount_amount=5_000,
            paid_amount=55_000,
            user_coupon_id=1,
            created_at=NOW,
            paid_at=NOW,
        )
    )
    conn.execute(
        insert(user_coupons).values(
            id=1,
            coupon_id=1,
            user_id=1,
            status="USED",
            issued_at=NOW,
            expires_at=NOW,
            used_at=NOW,
            order_id=1,
        )
    )
    conn.execute(
        insert(order_items).values(
            order_id=1,
            product_id=1,
            variant_id=1,
            product_name="P",
            variant_name="v",
            unit_price=30_000,
            quantity=2,
            amount=60_000,
        )
    )
    conn.execute(
        insert(inventory_movements),
        [
            {
                "variant_id": 1,
                "kind": "RESTOCK",
                "quantity": 10,
                "order_id": None,
                "created_at": NOW,
            },
            {"variant_id": 1, "kind": "RESERVE", "quantity": -2, "order_id": 1, "created_at": NOW},
        ],
    )
    conn.execute(
        insert(wallet_transactions),
        [
            {
                "user_id": 1,
                "type": "CHARGE",
                "amount": 100_000,
                "balance_after": 100_000,
                "order_id": None,
                "created_at": NOW,
            },
            {
                "user_id": 1,
                "type": "PAYMENT",
                "amount": -55_000,
                "balance_after": 45_000,
                "order_id": 1,
                "created_at": NOW,
            },
        ],
    )
    conn.execute(
        insert(payments).values(
            order_id=1, user_id=1, kind="PAYMENT", amount=55_000, created_at=NOW
        )
    )
    conn.execute(
        insert(outbox).values(
            event_id="00000000-0000-4000-8000-000000000001",
            type="order.paid",
            order_id=1,
            payload="{}",
            created_at=NOW,
            available_at=NOW,
            attempts=0,
        )
    )


@pytest.fixture
def shop(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    engine = make_sync_engine(url)
    with engine.begin() as conn:
        _seed(conn)
    engine.dispose()
    return url


def _corrupt(url: str, change: Callable[[Connection], object]) -> None:
    engine = make_sync_engine(url)
    with engine.begin() as conn:
        change(conn)
    engine.dispose()


def test_consistent_shop_passes(shop: str) -> None:
    report = run_audit(shop)
    assert report.ok, report.render()
    assert {c.split(":")[0] for c in report.checks} == {
        "1.stock",
        "2.money",
        "3.coupons",
        "4.events",
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.execute(update(variants).values(stock=9)), "1.stock: variant stock = sum"),
        (
            lambda c: c.execute(
                insert(order_items).values(
                    order_id=1,
                    product_id=1,
                    variant_id=1,
                    product_name="P",
                    variant_name="v",
                    unit_price=1,
                    quantity=20,
                    amount=20,
                )
            ),
            "1.stock: units held",
        ),
        (lambda c: c.execute(update(wallets).values(balance=1)), "2.money: wallet balance = sum"),
        (lambda c: c.execute(update(payments).values(amount=1)), "2.money: each PAID order"),
        (
            lambda c: c.execute(
                update(wallet_transactions)
                .where(wallet_transactions.c.type == "PAYMENT")
                .values(amount=-1, balance_after=99_999)
            ),
            "2.money: each paid order's wallet PAYMENT",
        ),
        (lambda c: c.execute(update(coupons).values(issued_count=2)), "3.coupons: issued_count"),
        (
            lambda c: c.execute(update(user_coupons).values(order_id=None)),
            "3.coupons: a USED coupon",
        ),
        (
            lambda c: c.execute(
                insert(inventory_movements).values(
                    variant_id=1, kind="RESTOCK", quantity=1, order_id=1, created_at=NOW
                )
            ),
            "1.stock: an order's movements",
        ),
        (lambda c: c.execute(outbox.delete()), "4.events: every paid order"),
        (
            # cancelled after payment, but neither refunded nor reported
            lambda c: c.execute(update(orders).values(status="CANCELLED")),
            "4.events: every order cancelled after payment",
        ),
        (
            lambda c: c.execute(update(orders).values(status="CANCELLED")),
            "2.money: each refunded order",
        ),
    ],
)
def test_each_broken_invariant_is_named(
    shop: str, change: Callable[[Connection], object], expected: str
) -> None:
    _corrupt(shop, change)
    report = run_audit(shop)
    assert not report.ok
    assert any(f.startswith(expected) for f in report.failures), report.failures
    # The failure names the offending row.
    assert any("id=1" in f or "user_id=1" in f for f in report.failures), report.failures


def test_cli_exit_codes(shop: str) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "flashsale", "audit", "--database-url", shop],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit: OK" in ok.stdout
    _corrupt(shop, lambda c: c.execute(update(variants).values(stock=3)))
    bad = subprocess.run(
        [sys.executable, "-m", "flashsale", "audit", "--database-url", shop],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout and "id=1" in bad.stdout
