"""The group-commit writer: many operations per transaction, each in its own savepoint.

A refusal in the middle of a batch leaves its neighbours committed; a batch whose
commit fails gives every operation the error and writes nothing; callers hear their
results only after the commit; hooks run on the event loop, after the outcome.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from flashsale.audit import run_audit
from flashsale.bench.http.seed import Layout, seed
from flashsale.db.engine import make_sync_engine, writer_lock_path
from flashsale.db.models import products
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter, Tx
from flashsale.errors import OutOfStock
from flashsale.gates import StockGate
from flashsale.orders.schemas import OrderIn, OrderOut
from flashsale.orders.service import place_order_op
from flashsale.ranking.service import RankingService

pytestmark = pytest.mark.anyio


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[GroupCommitWriter]:
    # A long window: the operations submitted together land in one batch.
    w = GroupCommitWriter(
        make_sync_engine(db_url), window_s=0.05, lock_path=writer_lock_path(db_url)
    )
    w.start()
    try:
        yield w
    finally:
        await w.stop()


def _names(db_url: str) -> list[str]:
    engine = make_sync_engine(db_url, immediate=False)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(select(products.c.name).order_by(products.c.id))]
    finally:
        engine.dispose()


def _add_product(name: str, refuse: bool = False) -> Any:
    def op(tx: Tx) -> str:
        tx.conn.execute(insert(products).values(name=name, description="", created_at=utcnow()))
        tx.after_commit(lambda: events.append(f"committed {name}"))
        tx.after_rollback(lambda: events.append(f"rolled back {name}"))
        if refuse:  # after its write: the savepoint must undo it
            raise OutOfStock(variant_id=1, requested=1, available=0)
        return name

    return op


events: list[str] = []


async def test_a_refusal_in_the_middle_of_a_batch_leaves_its_neighbours(
    writer: GroupCommitWriter, db_url: str
) -> None:
    events.clear()
    ops = [_add_product(f"p{i}", refuse=i in (1, 3)) for i in range(5)]
    results = await asyncio.gather(*(writer.submit(op) for op in ops), return_exceptions=True)
    assert results[0::2] == ["p0", "p2", "p4"]
    assert all(isinstance(r, OutOfStock) for r in results[1::2])
    assert _names(db_url) == ["p0", "p2", "p4"]
    assert sorted(events) == sorted(
        ["committed p0", "rolled back p1", "committed p2", "rolled back p3", "committed p4"]
    )


async def test_a_failed_commit_fails_every_operation_and_writes_nothing(
    writer: GroupCommitWriter, db_url: str
) -> None:
    events.clear()
    failures = 1

    def fail_once(_conn: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(writer.engine, "commit", fail_once)
    try:
        ops = [_add_product(f"q{i}") for i in range(4)]
        results = await asyncio.gather(*(writer.submit(op) for op in ops), return_exceptions=True)
    finally:
        event.remove(writer.engine, "commit", fail_once)
    assert all(isinstance(r, OperationalError) for r in results), results
    assert _names(db_url) == []
    assert sorted(events) == [f"rolled back q{i}" for i in range(4)]
    # The writer goes on: the next batch commits.
    assert await writer.submit(_add_product("after")) == "after"
    assert _names(db_url) == ["after"]


async def test_a_broken_statement_fails_its_whole_batch(
    writer: GroupCommitWriter, db_url: str
) -> None:
    def broken(tx: Tx) -> None:
        tx.conn.execute(text("SELECT * FROM no_such_table"))

    results = await asyncio.gather(
        writer.submit(_add_product("r0")), writer.submit(broken), return_exceptions=True
    )
    assert all(isinstance(r, DBAPIError) for r in results), results
    assert _names(db_url) == []


async def test_the_result_comes_after_the_commit(writer: GroupCommitWriter, db_url: str) -> None:
    seen: list[list[str]] = []

    def op(tx: Tx) -> str:
        tx.conn.execute(insert(products).values(name="s", description="", created_at=utcnow()))
        return "s"

    assert await writer.submit(op) == "s"
    # Another connection sees the row as soon as the caller has its answer.
    seen.append(_names(db_url))
    assert seen == [["s"]]


async def test_hooks_run_on_the_event_loop_thread(writer: GroupCommitWriter) -> None:
    threads: list[int] = []

    def op(tx: Tx) -> None:
        tx.conn.execute(insert(products).values(name="h", description="", created_at=utcnow()))
        tx.after_commit(lambda: threads.append(threading.get_ident()))

    await writer.submit(op)
    assert threads == [threading.get_ident()]


async def test_batches_group_concurrent_operations(writer: GroupCommitWriter, db_url: str) -> None:
    commits = 0

    def count(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(writer.engine, "commit", count)
    try:
        await asyncio.gather(*(writer.submit(_add_product(f"g{i}")) for i in range(20)))
    finally:
        event.remove(writer.engine, "commit", count)
    assert len(_names(db_url)) == 20
    assert commits < 20  # some shared a commit


def _counts(db_url: str) -> dict[str, Any]:
    engine = make_sync_engine(db_url, immediate=False)
    try:
        with engine.connect() as conn:
            one = lambda sql: conn.execute(text(sql)).scalar_one()  # noqa: E731
            return {
                "orders": one("SELECT count(*) FROM orders"),
                "items": one("SELECT count(*) FROM order_items"),
                "movements": one(
                    "SELECT count(*) FROM inventory_movements WHERE order_id IS NOT NULL"
                ),
                "payments": one("SELECT count(*) FROM payments"),
                "events": one("SELECT count(*) FROM outbox"),
                "ledger": one("SELECT count(*) FROM wallet_transactions WHERE type = 'PAYMENT'"),
                "stock": dict(conn.execute(text("SELECT id, stock FROM variants")).all()),
                "balance": one("SELECT balance FROM wallets WHERE user_id = 1"),
            }
    finally:
        engine.dispose()


async def test_an_order_refused_by_its_last_write_leaves_no_row_and_spares_its_neighbour(
    writer: GroupCommitWriter, db_url: str
) -> None:
    """The stock gate believes in units the database no longer has: the order's first
    line and its other rows are written (on PostgreSQL by the same statement) before the
    second line is refused. All of it goes; the order after it in the batch commits."""
    seed(db_url, Layout(users=1, catalog=2))
    engine = make_sync_engine(db_url)
    with engine.begin() as conn:
        # Variant 2 never had stock (audit-clean: no RESTOCK movement either).
        conn.execute(text("DELETE FROM inventory_movements WHERE variant_id = 2"))
        conn.execute(text("UPDATE variants SET stock = 0 WHERE id = 2"))
    engine.dispose()
    before = _counts(db_url)
    gate, ranking = StockGate(), RankingService(3600, 60)
    gate.learn(1, before["stock"][1])
    gate.learn(2, 5)  # stale: the database has 0

    def order(variant_ids: list[int]) -> Any:
        body = OrderIn(items=[{"variant_id": v, "quantity": 1} for v in variant_ids])
        return partial(place_order_op, gate=gate, ranking=ranking, user_id=1, body=body)

    refused, placed = await asyncio.gather(
        writer.submit(order([1, 2])), writer.submit(order([1])), return_exceptions=True
    )
    assert isinstance(refused, OutOfStock)
    assert (refused.details["variant_id"], refused.details["available"]) == (2, 0)
    assert isinstance(placed, OrderOut) and placed.status == "PAID"
    after = _counts(db_url)
    assert (after["stock"][1], after["stock"][2]) == (before["stock"][1] - 1, 0)
    assert after["balance"] == before["balance"] - placed.paid_amount
    grew = {k: after[k] - before[k] for k in ("orders", "items", "movements", "payments")}
    assert grew == {"orders": 1, "items": 1, "movements": 1, "payments": 1}
    assert (after["events"] - before["events"], after["ledger"] - before["ledger"]) == (1, 1)
    assert run_audit(db_url).ok
    assert gate.shortfall([(2, 1)]) == (2, 0)  # the gate learnt the database's stock
