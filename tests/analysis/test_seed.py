"""``flashsale seed``: a realistic month through the services, and a clean audit."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select

from flashsale.analysis import detect_spikes, load_orders, load_products, load_sales
from flashsale.audit import run_audit
from flashsale.cli import main
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import inventory_movements, order_items, orders, variants

from .conftest import Seeded

pytestmark = pytest.mark.slow  # seeding runs every order through the services


def test_the_audit_is_clean(seeded: Seeded) -> None:
    report = run_audit(seeded.url)
    assert report.ok, report.render()


def test_about_five_percent_of_paid_orders_are_cancelled(seeded: Seeded) -> None:
    orders = load_orders(seeded.url)
    paid = orders["paid_at"].notna()
    cancelled = paid & (orders["status"] == "CANCELLED")
    assert paid.sum() > 0.85 * seeded.orders
    assert 0.02 <= cancelled.sum() / paid.sum() <= 0.09
    assert (orders.loc[cancelled, "cancelled_at"] > orders.loc[cancelled, "paid_at"]).all()
    assert (orders["status"] == "EXPIRED").any()  # some pay-later orders were abandoned


def test_coupons_are_used_on_some_orders(seeded: Seeded) -> None:
    orders = load_orders(seeded.url)
    paid = orders[orders["status"] == "PAID"]
    share = paid["coupon_id"].notna().mean()
    assert 0.03 <= share <= 0.3
    assert paid["coupon_id"].nunique() >= 2


def test_history_covers_the_days_asked_in_time_order(seeded: Seeded) -> None:
    orders = load_orders(seeded.url)
    span = orders["created_at"].max() - orders["created_at"].min()
    assert (
        pd.Timedelta(days=seeded.history_days - 1) < span <= pd.Timedelta(days=seeded.history_days)
    )
    # Placed in time order: ids follow creation times.
    assert orders.sort_values("order_id")["created_at"].is_monotonic_increasing


def test_popularity_is_skewed_and_follows_the_shops_day(seeded: Seeded) -> None:
    sales = load_sales(seeded.url)
    sold = sales[sales["status"] == "PAID"]
    per_product = sold.groupby("product_id").size().sort_values(ascending=False)
    top_tenth = per_product.head(max(1, len(per_product) // 10)).sum()
    assert top_tenth / per_product.sum() > 0.3  # Zipf-like: a few products take much
    hours = sold["paid_at"].dt.tz_convert("Asia/Seoul").dt.hour
    assert hours.isin([19, 20, 21, 22]).sum() > 3 * hours.isin([2, 3, 4, 5]).sum()


def test_flash_sales_sell_out_in_a_spike(seeded: Seeded) -> None:
    products = load_products(seeded.url)
    limited = products[products["per_user_limit"].notna()]
    assert len(limited) == 3
    # (Nearly) sold out: most of each item's stocked units went in its rush. Counted as
    # units paid for, cancelled or not: a cancellation after the two-hour sale gives
    # units back that nobody can buy any more (3 cancelled orders can be a third of 14).
    engine = make_sync_engine(seeded.url)
    try:
        with engine.connect() as conn:
            stocked = dict(
                conn.execute(
                    select(variants.c.product_id, func.sum(inventory_movements.c.quantity))
                    .join(variants, variants.c.id == inventory_movements.c.variant_id)
                    .where(inventory_movements.c.kind == "RESTOCK")
                    .group_by(variants.c.product_id)
                ).all()
            )
            paid_for = dict(
                conn.execute(
                    select(order_items.c.product_id, func.sum(order_items.c.quantity))
                    .join(orders, orders.c.id == order_items.c.order_id)
                    .where(orders.c.paid_at.is_not(None))
                    .group_by(order_items.c.product_id)
                ).all()
            )
    finally:
        engine.dispose()
    for product_id in limited["product_id"]:
        sold = paid_for.get(product_id, 0)
        assert sold >= 0.7 * stocked[product_id], (product_id, sold, stocked[product_id])
    spikes = detect_spikes(load_sales(seeded.url), min_units=10, min_orders=5)
    assert set(limited["product_id"]) <= set(spikes["product_id"])


def test_cli_seeds_an_empty_database_and_refuses_a_seeded_one(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db_url
    argv = ["seed", "--history-days", "3", "--orders", "40", "--products", "8", "--seed", "2"]
    assert main([*argv, "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "audit: OK" in out
    assert "40 attempts" in out
    assert main([*argv, "--database-url", url]) == 2
    assert "seed a fresh database" in capsys.readouterr().err
