"""Threaded stress of the C++ core from Python.

Batch calls (record_many, top, totals) release the GIL, so these threads run
the C++ work in parallel; single calls keep it but must be correct without it.
Each test checks the invariants after the run, never timings.
"""

from __future__ import annotations

import array
import random
import threading
from collections import Counter
from collections.abc import Callable

from flashsale import CouponGate, IssueResult, SlidingWindowRanking, StockPool

THREADS = 4


def run_threads(target: Callable[[int], None], n: int = THREADS) -> None:
    """Start n threads together, join them, re-raise the first error."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_stock_pool_reserve_release_keep_the_books() -> None:
    pool = StockPool()
    skus = list(range(8))
    initial = 2_000
    for sku in skus:
        pool.set(sku, initial)
    net: list[Counter[int]] = [Counter() for _ in range(THREADS)]

    def worker(index: int) -> None:
        rng = random.Random(index)
        mine = net[index]
        held: list[list[tuple[int, int]]] = []
        for _ in range(20_000):
            if held and rng.random() < 0.3:
                lines = held.pop(rng.randrange(len(held)))
                pool.release(lines)
                mine.subtract(dict(lines))
                continue
            chosen = rng.sample(skus, rng.randint(1, 3))
            lines = [(sku, rng.randint(1, 9)) for sku in chosen]
            if pool.try_reserve(lines):
                mine.update(dict(lines))
                held.append(lines)

    run_threads(worker)
    for sku in skus:
        reserved = sum(mine[sku] for mine in net)
        final = pool.available(sku)
        assert final >= 0
        assert reserved == initial - final


def test_stock_pool_never_oversells() -> None:
    pool = StockPool()
    pool.set(1, 10_000)
    granted = [0] * THREADS

    def worker(index: int) -> None:
        line = [(1, 1)]
        for _ in range(5_000):
            if pool.try_reserve(line):
                granted[index] += 1
            if pool._try_reserve_nogil(line):
                granted[index] += 1

    run_threads(worker)
    assert sum(granted) == 10_000  # demand 40,000
    assert pool.available(1) == 0


def test_coupon_gate_exact_under_contention() -> None:
    gate = CouponGate()
    gate.configure(1, remaining=5_000, per_user_limit=2)
    issued: list[Counter[int]] = [Counter() for _ in range(THREADS)]

    def worker(index: int) -> None:
        rng = random.Random(100 + index)
        mine = issued[index]
        for i in range(10_000):
            user = rng.randrange(4_000)
            issue = gate.try_issue if i % 2 else gate._try_issue_nogil
            if issue(1, user) is IssueResult.ISSUED:
                mine[user] += 1

    run_threads(worker)
    per_user: Counter[int] = sum(issued, Counter())
    assert sum(per_user.values()) == 5_000  # demand 40,000 tries by 4,000 users x 2
    assert gate.remaining(1) == 0
    assert max(per_user.values()) <= 2
    for user in range(4_000):
        assert gate.issued_to(1, user) == per_user[user]


def test_ranking_batches_and_records_in_parallel() -> None:
    ranking = SlidingWindowRanking()
    now = 1_700_000_000.0
    ranking.top(1, now)  # sets the horizon
    products = 1_000
    batch = 20_000
    expected: list[Counter[int]] = [Counter() for _ in range(THREADS)]
    stop = threading.Event()
    tops: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            top = ranking.top(5, now)
            assert [e.quantity for e in top] == sorted((e.quantity for e in top), reverse=True)
            ranking.top(3, now, metric="orders", window_seconds=3_600)
            tops.append(len(top))

    def worker(index: int) -> None:
        rng = random.Random(index)
        mine = expected[index]
        for round_ in range(10):
            ids = array.array("q", (rng.randrange(products) for _ in range(batch)))
            qty = array.array("q", (rng.randint(1, 3) for _ in range(batch)))
            orders = array.array("q", [1]) * batch
            ts = array.array("d", (now - rng.randrange(250_000) for _ in range(batch)))
            ranking.record_many(ids, qty, orders, ts)  # releases the GIL
            for p, q in zip(ids, qty, strict=True):
                mine[p] += q
            for i in range(200):  # single records go through the lock-free queue
                record = ranking.record if i % 2 else ranking._record_nogil
                record(round_, 1, 1, now)
                mine[round_] += 1

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        run_threads(worker)
    finally:
        stop.set()
        watcher.join()

    assert tops, "the reader ran"
    total: Counter[int] = sum(expected, Counter())
    totals = ranking.totals(now)
    assert {p: q for p, (q, _) in totals.items()} == dict(total)
    assert sum(o for _, o in totals.values()) == THREADS * 10 * (batch + 200)
