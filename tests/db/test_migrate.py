"""Migrations build the schema (docs/data-model.md) with the constraints behind the
invariants (docs/invariants.md; the audit's own detection tests are in ``test_audit.py``)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from flashsale.audit import run_audit
from flashsale.db.engine import make_sync_engine
from flashsale.db.migrate import alembic_config, upgrade
from flashsale.db.models import Base
from flashsale.db.provision import create_database, drop_database

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
    "refresh_tokens",
    "password_reset_codes",
}
NOW = datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)


@pytest.fixture
def url(db_url: str) -> str:
    """A migrated database of the test backend (SQLite or PostgreSQL)."""
    return db_url


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


def _schema_diff(url: str) -> list[object]:
    """What autogenerate would change to make the database match the models."""
    engine = make_sync_engine(url, immediate=False)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_sync_engine(url, immediate=False)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models_schema(url: str) -> None:
    assert _schema_diff(url) == []


def test_0003_downgrades_and_upgrades_again(url: str) -> None:
    """0003 (refresh tokens) goes down to 0002 and up again, with data in the other
    tables and tokens in its own."""
    _seed(url)
    _run(
        url,
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) "
        "VALUES (1, 'f', 'h', :t, :t)",
    )
    command.downgrade(alembic_config(url), "0002")
    assert "refresh_tokens" not in _tables(url)
    assert _tables(url) >= TABLES - {"refresh_tokens", "password_reset_codes"}
    upgrade(url)
    assert _tables(url) >= TABLES
    assert _schema_diff(url) == []
    assert run_audit(url).ok
    _run(
        url,
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) "
        "VALUES (1, 'f', 'h', :t, :t)",
    )


_RESET_CODE = (
    "INSERT INTO password_reset_codes (user_id, code_hash, created_at, expires_at, "
    "failed_attempts, used_at) VALUES (1, 'h', :t, :t, 0, NULL)"
)


def test_0004_downgrades_and_upgrades_again(url: str) -> None:
    """0004 (password reset codes) goes down to 0003 and up again, with data in the
    other tables (refresh tokens included) and a code in its own."""
    _seed(url)
    _run(
        url,
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) "
        "VALUES (1, 'f', 'h', :t, :t)",
        _RESET_CODE,
    )
    command.downgrade(alembic_config(url), "0003")
    assert "password_reset_codes" not in _tables(url)
    assert _tables(url) >= TABLES - {"password_reset_codes"}
    upgrade(url)
    assert _tables(url) >= TABLES
    assert _schema_diff(url) == []
    assert run_audit(url).ok
    _run(url, _RESET_CODE)


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
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) "
        "VALUES (1, 'f', 'h', :t, :t), (1, 'g', 'h', :t, :t)",
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) "
        "VALUES (2, 'f', 'h', :t, :t)",
        _RESET_CODE + ", (1, 'g', :t, :t, 0, NULL)",  # one code per user
        _RESET_CODE.replace("VALUES (1,", "VALUES (2,"),  # no such user
        _RESET_CODE.replace(":t, 0, NULL", ":t, -1, NULL"),
    ],
)
def test_constraints_refuse_impossible_rows(url: str, statement: str) -> None:
    _seed(url)
    with pytest.raises(IntegrityError):
        _run(url, statement)


def test_instances_starting_together_migrate_one_after_another(
    postgres_server_url: str,
) -> None:
    """``flashsale serve`` migrates first: several instances may start at once. On
    PostgreSQL an advisory lock makes the second wait and then find nothing to do."""
    name = f"flashsale_m_{secrets.token_hex(4)}"
    url = create_database(postgres_server_url, name)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "flashsale", "migrate", "--database-url", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 4, outputs
        engine = make_sync_engine(url)
        try:
            assert set(inspect(engine).get_table_names()) >= TABLES
        finally:
            engine.dispose()
    finally:
        drop_database(postgres_server_url, name)
