"""Prepared statements on the driver's cursor answer exactly what
``Connection.execute`` answers for the same Core statement: rows, types (UTC
datetimes), ``IN`` lists of any length, literals the statement binds itself, and
the same SQLAlchemy error classes; on the sync drivers and inside an async session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from flashsale.db.engine import Database, make_sync_engine
from flashsale.db.models import products, variants
from flashsale.db.prepared import Prepared
from flashsale.settings import Settings

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

_INSERT_PRODUCT = Prepared(
    insert(products).returning(products.c.id, products.c.sale_starts_at),
    columns=["name", "description", "created_at", "sale_starts_at"],
)
_INSERT_VARIANT = Prepared(
    insert(variants), columns=["product_id", "sku", "name", "price", "stock"]
)
_BY_IDS = Prepared(
    select(variants.c.id, variants.c.stock, products.c.name.label("product"))
    .join(products, products.c.id == variants.c.product_id)
    .where(
        variants.c.id.in_(bindparam("p_ids", expanding=True)),
        products.c.name.in_(("alpha", "beta")),  # literals the statement binds itself
    )
    .order_by(variants.c.id),
    expanding=["p_ids"],
)
_TAKE = Prepared(
    update(variants)
    .where(variants.c.id == bindparam("p_id"), variants.c.stock >= bindparam("p_q"))
    .values(stock=variants.c.stock - bindparam("p_q"))
    .returning(variants.c.stock)
)


def _seed(conn) -> list[int]:  # type: ignore[no-untyped-def]
    pid, starts = _INSERT_PRODUCT.first(
        conn, {"name": "alpha", "description": "", "created_at": T0, "sale_starts_at": T0}
    )
    assert starts == T0 and starts.tzinfo is not None
    _INSERT_VARIANT.run_many(
        conn,
        [
            {"product_id": pid, "sku": f"A-{i}", "name": f"v{i}", "price": 1_000, "stock": i}
            for i in range(1, 5)
        ],
    )
    ids = [r.id for r in conn.execute(select(variants.c.id).order_by(variants.c.id))]
    return ids


def test_rows_types_and_in_lists_match_connection_execute(db_url: str) -> None:
    engine = make_sync_engine(db_url)
    try:
        with engine.connect() as conn, conn.begin():
            ids = _seed(conn)
            for n in (1, 2, 4):
                got = _BY_IDS.rows(conn, {"p_ids": ids[:n]})
                want = conn.execute(_BY_IDS.statement, {"p_ids": ids[:n]}).all()
                assert [tuple(r) for r in got] == [tuple(r) for r in want]
                assert [r.product for r in got] == ["alpha"] * n
            assert _TAKE.scalar(conn, {"p_id": ids[1], "p_q": 2}) == 0
            assert _TAKE.scalar(conn, {"p_id": ids[1], "p_q": 1}) is None  # refused
            row = conn.execute(select(products.c.sale_starts_at)).one()
            assert row.sale_starts_at == T0 + timedelta(0)
    finally:
        engine.dispose()


def test_driver_errors_are_sqlalchemy_errors_and_missing_columns_are_refused(
    db_url: str,
) -> None:
    engine = make_sync_engine(db_url)
    try:
        with engine.connect() as conn, conn.begin():
            ids = _seed(conn)
        with engine.connect() as conn, conn.begin():
            with pytest.raises(IntegrityError):  # no such product: a foreign key
                _INSERT_VARIANT.run_many(
                    conn,
                    [{"product_id": 10**9, "sku": "X", "name": "x", "price": 1, "stock": 1}],
                )
            conn.rollback()  # PostgreSQL aborted the transaction
        with engine.connect() as conn, conn.begin():
            with pytest.raises(KeyError):  # an insert names every column it fills
                _INSERT_VARIANT.run_many(conn, [{"product_id": 1, "name": "x"}])
            with pytest.raises(ValueError, match="no columns"):
                Prepared(insert(variants), columns=["product_id", "created_at"])
            assert _TAKE.scalar(conn, {"p_id": ids[3], "p_q": 1}) == 3
    finally:
        engine.dispose()


async def test_inside_an_async_session(db_url: str) -> None:
    """Through ``run_sync`` the same statement runs on the async driver's adapter
    (aiosqlite, asyncpg), in the session's transaction."""
    db = Database.from_settings(Settings(database_url=db_url))
    try:
        async with db.write_session() as session, session.begin():

            def work(sync_session):  # type: ignore[no-untyped-def]
                conn = sync_session.connection()
                ids = _seed(conn)
                return [tuple(r) for r in _BY_IDS.rows(conn, {"p_ids": ids[:3]})]

            rows = await session.run_sync(work)
        assert [stock for _id, stock, _name in rows] == [1, 2, 3]
    finally:
        await db.dispose()
