"""Loaders on a database seeded through the services, and the replay on real history."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from sqlalchemy import text

from flashsale import RankEntry
from flashsale.analysis import (
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    SALES_COLUMNS,
    check_sales,
    load_orders,
    load_products,
    load_sales,
    rolling_top,
    rolling_top_reference,
    top_at,
)
from flashsale.db.engine import Database, make_sync_engine
from flashsale.ranking.service import RankingService
from flashsale.settings import Settings

from .conftest import Seeded

pytestmark = pytest.mark.slow  # the session's seed takes a few seconds


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


def expected(columns: dict[str, str]) -> dict[str, str]:
    return {c: str(pd.Series(dtype=t).dtype) for c, t in columns.items()}


def test_frames_have_their_schema(seeded: Seeded) -> None:
    sales = load_sales(seeded.url)
    check_sales(sales)
    assert dtypes(sales) == expected(SALES_COLUMNS)
    assert dtypes(load_products(seeded.url)) == expected(PRODUCT_COLUMNS)
    assert dtypes(load_orders(seeded.url)) == expected(ORDER_COLUMNS)
    assert sales["paid_at"].is_monotonic_increasing
    assert (sales.loc[sales["status"] == "PAID", "quantity"] > 0).all()
    assert (sales.loc[sales["status"] == "CANCELLED", "quantity"] < 0).all()


def test_net_sales_equal_sql_over_paid_orders(seeded: Seeded) -> None:
    """A cancelled order's two lines cancel out: what is left is the PAID orders (invariant 5)."""
    sales = load_sales(seeded.url)
    net = sales.groupby("product_id")[["quantity", "amount"]].sum()
    net = net[net["quantity"] != 0]
    engine = make_sync_engine(seeded.url, immediate=False)
    try:
        with engine.connect() as conn:
            sql = pd.read_sql_query(
                text(
                    "SELECT i.product_id, SUM(i.quantity) AS quantity, SUM(i.amount) AS amount "
                    "FROM order_items i JOIN orders o ON o.id = i.order_id "
                    "WHERE o.status = 'PAID' GROUP BY i.product_id ORDER BY i.product_id"
                ),
                conn,
            ).set_index("product_id")
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(net, sql, check_dtype=False)


def test_cancellations_are_restated_or_dated_when_they_happened(seeded: Seeded) -> None:
    orders = load_orders(seeded.url).set_index("order_id")
    restated = load_sales(seeded.url)
    undo = restated[restated["status"] == "CANCELLED"]
    assert len(undo) > 0
    sold = restated[restated["status"] == "PAID"].set_index(["order_id", "product_id"])
    pairs = sold.loc[list(zip(undo["order_id"], undo["product_id"], strict=True))]
    assert (pairs["quantity"].to_numpy() == -undo["quantity"].to_numpy()).all()
    assert (pairs["paid_at"].to_numpy() == undo["paid_at"].to_numpy()).all()

    live = load_sales(seeded.url, cancellations="at_cancel")
    live_undo = live[live["status"] == "CANCELLED"]
    cancelled_at = orders.loc[live_undo["order_id"], "cancelled_at"].to_numpy()
    assert (live_undo["paid_at"].to_numpy() == cancelled_at).all()
    assert live["paid_at"].is_monotonic_increasing
    with pytest.raises(ValueError):
        load_sales(seeded.url, cancellations="never")


def test_since_and_until_cut_on_paid_at(seeded: Seeded) -> None:
    sales = load_sales(seeded.url)
    middle = sales["paid_at"].iloc[len(sales) // 2]
    later = load_sales(seeded.url, since=middle)
    earlier = load_sales(seeded.url, until=middle)
    assert len(later) + len(earlier) == len(sales)
    assert (later["paid_at"] >= middle).all()
    with pytest.raises(ValueError, match="naive"):
        load_sales(seeded.url, since="2026-01-01")


def test_orders_frame_matches_the_sales(seeded: Seeded) -> None:
    orders = load_orders(seeded.url)
    sales = load_sales(seeded.url)
    paid = orders[orders["paid_at"].notna()]
    assert set(sales["order_id"]) == set(paid["order_id"])
    assert orders["status"].isin(["PENDING", "PAID", "CANCELLED", "EXPIRED"]).all()
    with_coupon = orders["coupon_id"].notna()
    assert (orders.loc[with_coupon, "discount_amount"] > 0).all()
    assert (orders["paid_amount"] == orders["total_amount"] - orders["discount_amount"]).all()


@pytest.mark.parametrize(("step", "window"), [("1h", "1D"), ("1D", "1D"), ("1D", "3D")])
@pytest.mark.parametrize("metric", ["quantity", "orders"])
def test_replay_of_the_seeded_month_equals_the_reference(
    seeded: Seeded, step: str, window: str, metric: str
) -> None:
    sales = load_sales(seeded.url)
    kwargs = {"k": 5, "step": step, "window": window, "metric": metric}
    pd.testing.assert_frame_equal(
        rolling_top(sales, **kwargs),
        rolling_top_reference(sales, **kwargs),
    )


async def served_top(url: str, now: pd.Timestamp, days: int, metric: str) -> list[RankEntry]:
    """The top 5 the service's own ranking serves after rebuilding from the database."""
    settings = Settings(database_url=url)
    db = Database.from_settings(settings)
    ranking = RankingService(settings.ranking_window_s, settings.ranking_bucket_s)
    try:
        async with db.read_session() as session:
            await ranking.rebuild(session, now=now.timestamp())
    finally:
        await db.dispose()
    return ranking.top(5, days=days, metric=metric, now=now.timestamp())


@pytest.mark.parametrize("metric", ["quantity", "orders"])
@pytest.mark.parametrize("days", [1, 3])
def test_top_at_equals_what_the_service_serves(seeded: Seeded, metric: str, days: int) -> None:
    sales = load_sales(seeded.url)
    now = sales["paid_at"].max() + pd.Timedelta("1s")
    served = asyncio.run(served_top(seeded.url, now, days, metric))
    mine = top_at(sales, now, k=5, window=f"{days}D", metric=metric)
    assert [(e.product_id, e.quantity, e.orders) for e in served] == list(
        mine[["product_id", "quantity", "orders"]].itertuples(index=False, name=None)
    )
