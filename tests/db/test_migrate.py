"""Migrations build the schema of DESIGN §4 with the constraints behind §6
(the audit's own detection tests are in ``test_audit.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from flashsale.audit import run_audit
from flashsale.db.engine import make_sync_engine
from flashsale.db.migrate import upgrade

TABLES = {
    "users",
    "wallets",
    "wallet_transactions",
    "products",
    "variants",
    "inventory_movements",
    "coupons",
    "user_coupons",
    "orders",
    "order_items",
    "payments",
    "cart_items",
    "outbox",
    "idempotency_keys",
}
NOW = datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def url(template: Path, tmp_path: Path) -> str:
    path = tmp_path / "flashsale.db"
    path.write_bytes(template.read_bytes())
    return f"sqlite:///{path}"


def _run(url: str, *statements: str) -> None:
    engine = make_sync_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), {"t": NOW})
    finally:
        engine.dispose()


def _seed(url: str) -> None:
    """A consistent little world: one user with 10,000 KRW, one variant with 5 units, a coupon."""
    _run(
        url,
        "INSERT INTO users (id, email, name, password_hash, role, created_at) "
        "VALUES (1, 'a@example.com', 'A', 'x', 'customer', :t)",
        "INSERT INTO wallets (user_id, balance, updated_at) VALUES (1, 10000, :t)",
        "INSERT INTO wallet_transactions (user_id, type, amount, balance_after, order_id, "
        "created_at) VALUES (1, 'CHARGE', 10000, 10000, NULL, :t)",
        "INSERT INTO products (id, name, description, created_at) VALUES (1, 'P', '', :t)",
        "INSERT INTO variants (id, product_id, sku, name, price, stock) "
        "VALUES (1, 1, 'S1', 'v', 1000, 5)",
        "INSERT INTO inventory_movements (variant_id, kind, quantity, order_id, created_at) "
        "VALUES (1, 'RESTOCK', 5, NULL, :t)",
        "INSERT INTO coupons (id, name, discount_type, discount_value, min_order_amount, "
        "total_quantity, issued_count, valid_days, created_at) "
        "VALUES (1, 'C', 'FIXED', 100, 0, 1, 0, 7, :t)",
    )


def test_upgrade_creates_the_schema_and_is_idempotent(url: str) -> None:
    upgrade(url)  # already at head: nothing to do, no error
    engine = make_sync_engine(url, immediate=False)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert names >= TABLES | {"alembic_version"}


def test_audit_of_an_empty_and_a_consistent_database(url: str) -> None:
    report = run_audit(url)
    assert report.ok and report.checks
    assert "audit: OK" in report.render()
    _seed(url)
    assert run_audit(url).ok


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE variants SET stock = -1 WHERE id = 1",
        "UPDATE wallets SET balance = -1 WHERE user_id = 1",
        "UPDATE coupons SET issued_count = 2 WHERE id = 1",
        "INSERT INTO user_coupons (coupon_id, user_id, status, issued_at, expires_at) "
        "VALUES (1, 1, 'ISSUED', :t, :t), (1, 1, 'ISSUED', :t, :t)",
        "INSERT INTO users (email, name, password_hash, role, created_at) "
        "VALUES ('a@example.com', 'dup', 'x', 'customer', :t)",
    ],
)
def test_constraints_refuse_impossible_rows(url: str, statement: str) -> None:
    _seed(url)
    with pytest.raises(IntegrityError):
        _run(url, statement)
