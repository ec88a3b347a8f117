"""The group-commit writer: many operations per transaction, each in its own savepoint.

A refusal in the middle of a batch leaves its neighbours committed; a batch whose
commit fails gives every operation the error and writes nothing; callers hear their
results only after the commit; hooks run on the event loop, after the outcome.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from flashsale.db.engine import make_sync_engine, writer_lock_path
from flashsale.db.models import products
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter, Tx
from flashsale.errors import OutOfStock

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
