"""``flashsale bench core``: each C++ primitive against a plain-Python equivalent.

Measures, in one run and with 1 and 2 threads (each figure the best of a few
interleaved rounds, since the machine may be busy), calls per second of
``StockPool.try_reserve``, ``CouponGate.try_issue`` and
``SlidingWindowRanking.record`` (each with the GIL kept and released, to justify
which one the bindings use; the released variants are the extension's benchmark
API, ``_try_reserve_nogil``, ``_try_issue_nogil`` and ``_record_nogil``, which only
this module calls), events per second of ``record_many`` from
``array.array`` buffers, the latency of ``top(5)`` over a 3-day window of
60-second buckets, and the ranking's memory per (product, bucket) pair. The
Python equivalents are a dict guarded by a ``threading.Lock`` (stock, coupons)
and a ``Counter`` per bucket ranked with ``heapq.nlargest``.

Targets: try_reserve >= 2,000,000 calls/s per thread, record_many >= 10,000,000
events/s, top(5) over 100,000 products <= 2 ms.
"""

from __future__ import annotations

import argparse
import array
import heapq
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flashsale import CouponGate, IssueResult, SlidingWindowRanking, StockPool
from flashsale.bench import print_columns

TARGET_RESERVE_PER_THREAD = 2_000_000
TARGET_RECORD_MANY = 10_000_000
TARGET_TOP_MS = 2.0
NOW = 1_700_000_000.0
WINDOW = 259_200
BUCKET = 60
CHUNK = 1_000  # calls between two looks at the clock


# --- plain-Python equivalents -------------------------------------------------------------


class PyStockPool:
    """StockPool as a dict and one lock (same validation, same all-or-nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._available: dict[int, int] = {}

    def set(self, sku: int, available: int) -> None:
        if available < 0:
            raise ValueError("available must be >= 0")
        with self._lock:
            self._available[sku] = available

    def try_reserve(self, lines: Sequence[tuple[int, int]]) -> bool:
        if not lines:
            raise ValueError("lines must not be empty")
        if any(q <= 0 for _, q in lines):
            raise ValueError("quantity must be > 0")
        if len({sku for sku, _ in lines}) != len(lines):
            raise ValueError("a sku appears twice in lines")
        with self._lock:
            available = self._available
            for sku, q in lines:
                if available[sku] < q:
                    return False
            for sku, q in lines:
                available[sku] -= q
            return True


class PyCouponGate:
    """CouponGate as dicts and one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._coupons: dict[int, list[int]] = {}  # id -> [remaining, per_user_limit]
        self._users: dict[int, dict[int, int]] = {}

    def configure(self, coupon_id: int, remaining: int, per_user_limit: int = 1) -> None:
        with self._lock:
            self._coupons[coupon_id] = [remaining, per_user_limit]
            self._users.setdefault(coupon_id, {})

    def try_issue(self, coupon_id: int, user_id: int) -> IssueResult:
        with self._lock:
            coupon = self._coupons[coupon_id]
            users = self._users[coupon_id]
            held = users.get(user_id, 0)
            if held >= coupon[1]:
                return IssueResult.ALREADY_ISSUED
            if coupon[0] == 0:
                return IssueResult.SOLD_OUT
            coupon[0] -= 1
            users[user_id] = held + 1
            return IssueResult.ISSUED


class PyRanking:
    """A Counter per bucket (quantity and orders); top-k by summing the window."""

    def __init__(self, window_seconds: int = WINDOW, bucket_seconds: int = BUCKET) -> None:
        self._lock = threading.Lock()
        self._bucket = bucket_seconds
        self._n_buckets = window_seconds // bucket_seconds
        self._quantity: dict[int, Counter[int]] = {}
        self._orders: dict[int, Counter[int]] = {}

    def record(self, product_id: int, quantity: int, orders: int, ts: float) -> None:
        b = math.floor(ts / self._bucket)
        with self._lock:
            q = self._quantity.get(b)
            if q is None:
                q = self._quantity[b] = Counter()
                self._orders[b] = Counter()
            q[product_id] += quantity
            self._orders[b][product_id] += orders

    def record_many(
        self,
        product_ids: Sequence[int],
        quantities: Sequence[int],
        orders: Sequence[int],
        timestamps: Sequence[float],
    ) -> None:
        for p, q, o, ts in zip(product_ids, quantities, orders, timestamps, strict=True):
            self.record(p, q, o, ts)

    def top(self, k: int, now: float) -> list[tuple[int, int]]:
        cur = math.floor(now / self._bucket)
        total: Counter[int] = Counter()
        with self._lock:
            for b, counts in self._quantity.items():
                if cur - self._n_buckets < b <= cur:
                    total.update(counts)
        positive = ((p, q) for p, q in total.items() if q > 0)
        return heapq.nlargest(k, positive, key=lambda e: (e[1], -e[0]))


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    threads: int
    cpp: float  # ops/s, or ms for latencies
    python: float | None
    unit: str = "ops/s"
    note: str = ""


def best_rates(
    variants: list[Callable[[int], Callable[[], object]]], threads: int, seconds: float, rounds: int
) -> list[float]:
    """Best calls/s of each variant over `rounds` interleaved runs (the machine may be shared)."""
    best = [0.0] * len(variants)
    for _ in range(rounds):
        for i, make_call in enumerate(variants):
            best[i] = max(best[i], calls_per_second(make_call, threads, seconds / rounds))
    return best


def calls_per_second(
    make_call: Callable[[int], Callable[[], object]], threads: int, seconds: float
) -> float:
    """Total calls/s of `threads` threads, each looping over make_call(thread_index)()."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    stop_at = [0.0]

    def body(index: int) -> None:
        call = make_call(index)
        call()  # warm up outside the timed part
        barrier.wait()
        deadline = stop_at[0]
        n = 0
        while True:
            for _ in range(CHUNK):
                call()
            n += CHUNK
            if time.perf_counter() >= deadline:
                break
        counts[index] = n

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def gil_rows(
    name: str,
    threads: int,
    seconds: float,
    rounds: int,
    kept: Callable[[int], Callable[[], object]],
    released: Callable[[int], Callable[[], object]],
    python: Callable[[int], Callable[[], object]],
) -> list[Row]:
    cpp_kept, cpp_released, py_rate = best_rates([kept, released, python], threads, seconds, rounds)
    return [
        Row(f"{name}, GIL kept", threads, cpp_kept, py_rate),
        Row(f"{name}, GIL released", threads, cpp_released, py_rate),
    ]


def bench_stock(threads: int, seconds: float, rounds: int) -> list[Row]:
    pool = StockPool()
    py_pool = PyStockPool()
    for sku in range(threads):
        pool.set(sku, 10**15)
        py_pool.set(sku, 10**15)

    def cpp(index: int) -> Callable[[], object]:
        lines = [(index, 1)]
        return lambda: pool.try_reserve(lines)

    def cpp_nogil(index: int) -> Callable[[], object]:
        lines = [(index, 1)]
        return lambda: pool._try_reserve_nogil(lines)

    def python(index: int) -> Callable[[], object]:
        lines = [(index, 1)]
        return lambda: py_pool.try_reserve(lines)

    return gil_rows("StockPool.try_reserve", threads, seconds, rounds, cpp, cpp_nogil, python)


def bench_coupons(threads: int, seconds: float, rounds: int) -> list[Row]:
    gate = CouponGate()
    py_gate = PyCouponGate()
    # Never sold out, no user limit reached: every call takes the ISSUED path.
    gate.configure(1, 10**15, per_user_limit=10**15)
    py_gate.configure(1, 10**15, per_user_limit=10**15)

    def users(index: int) -> Callable[[], int]:
        cycle = iter(range(index, 10**12, threads))  # distinct users per thread
        return cycle.__next__

    def cpp(index: int) -> Callable[[], object]:
        user = users(index)
        return lambda: gate.try_issue(1, user() % 100_000)

    def cpp_nogil(index: int) -> Callable[[], object]:
        user = users(index)
        return lambda: gate._try_issue_nogil(1, user() % 100_000)

    def python(index: int) -> Callable[[], object]:
        user = users(index)
        return lambda: py_gate.try_issue(1, user() % 100_000)

    return gil_rows("CouponGate.try_issue", threads, seconds, rounds, cpp, cpp_nogil, python)


def bench_record(threads: int, seconds: float, rounds: int) -> list[Row]:
    ranking = SlidingWindowRanking()
    py_ranking = PyRanking()

    def cpp(index: int) -> Callable[[], object]:
        return lambda: ranking.record(index, 1, 1, NOW)

    def cpp_nogil(index: int) -> Callable[[], object]:
        return lambda: ranking._record_nogil(index, 1, 1, NOW)

    def python(index: int) -> Callable[[], object]:
        return lambda: py_ranking.record(index, 1, 1, NOW)

    rows = gil_rows("SlidingWindowRanking.record", threads, seconds, rounds, cpp, cpp_nogil, python)
    ranking.top(1, NOW)  # drains what is left in the queue
    return rows


def make_events(
    n: int, products: int, seed: int
) -> tuple[array.array[int], array.array[int], array.array[int], array.array[float]]:
    """n sales spread over the 3-day window, in time order (like a load from the database)."""
    rng = random.Random(seed)
    start = NOW - WINDOW + 1
    step = (WINDOW - 1) / n
    ids = array.array("q", (rng.randrange(products) for _ in range(n)))
    quantities = array.array("q", (rng.randint(1, 5) for _ in range(n)))
    orders = array.array("q", [1]) * n
    timestamps = array.array("d", (start + i * step for i in range(n)))
    return ids, quantities, orders, timestamps


def bench_record_many(threads: int, events: int, products: int, rounds: int) -> list[Row]:
    """Two cases: a cold load (before the first top, as at start-up) only fills the
    buckets; a live one (after a top) also keeps the running totals up to date."""
    per_thread = events // threads
    columns = [make_events(per_thread, products, seed=i) for i in range(threads)]

    def load(live: bool) -> float:
        ranking = SlidingWindowRanking()
        if live:
            ranking.top(1, NOW)
        barrier = threading.Barrier(threads + 1)

        def body(index: int) -> None:
            barrier.wait()
            ranking.record_many(*columns[index])  # releases the GIL

        workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        start = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        return per_thread * threads / (time.perf_counter() - start)

    cold = max(load(live=False) for _ in range(rounds))
    live = max(load(live=True) for _ in range(rounds))

    py_n = min(per_thread, 200_000)
    py_ranking = PyRanking()
    ids, qty, ords, ts = columns[0]
    start = time.perf_counter()
    py_ranking.record_many(ids[:py_n], qty[:py_n], ords[:py_n], ts[:py_n])
    py_rate = py_n / (time.perf_counter() - start)
    return [
        Row("SlidingWindowRanking.record_many, cold", threads, cold, py_rate, "events/s"),
        Row("SlidingWindowRanking.record_many, live", threads, live, py_rate, "events/s"),
    ]


def bench_top(products: int, events: int, repeat: int) -> tuple[list[Row], int, float]:
    ids, qty, ords, ts = make_events(events, products, seed=7)
    # Every product sells at least once, so all of them compete for the top.
    ids[:products] = array.array("q", range(products))
    ranking = SlidingWindowRanking()
    empty_bytes = ranking.memory_bytes()
    ranking.record_many(ids, qty, ords, ts)
    ranking.top(5, NOW)  # first call builds the running totals
    pairs = ranking.pair_count()
    bytes_per_pair = (ranking.memory_bytes() - empty_bytes) / pairs

    def latency_ms(call: Callable[[], object], n: int) -> float:
        best = math.inf
        for _ in range(n):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        return best * 1e3

    py_ranking = PyRanking()
    py_ranking.record_many(ids, qty, ords, ts)
    note = f"{products:,} products, {pairs:,} pairs"
    rows = [
        Row(
            "top(5), 3-day window (running totals)",
            1,
            latency_ms(lambda: ranking.top(5, NOW), repeat),
            latency_ms(lambda: py_ranking.top(5, NOW), 2),
            "ms",
            note,
        ),
        Row(
            "top(5), 1-day window (from buckets)",
            1,
            latency_ms(lambda: ranking.top(5, NOW, window_seconds=86_400), max(1, repeat // 10)),
            None,
            "ms",
            note,
        ),
    ]
    return rows, pairs, bytes_per_pair


# --- report ---------------------------------------------------------------------------------


def format_rate(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms"
    return f"{value:,.0f}"


def print_table(rows: list[Row]) -> None:
    header = ("primitive", "threads", "C++", "Python", "C++/Python", "unit")
    table = [header]
    for r in rows:
        if r.python is None:
            ratio = "-"
        elif r.unit == "ms":
            ratio = f"{r.python / r.cpp:,.0f}x faster" if r.cpp > 0 else "-"
        else:
            ratio = f"{r.cpp / r.python:,.1f}x"
        python = "-" if r.python is None else format_rate(r.python, r.unit)
        table.append((r.what, str(r.threads), format_rate(r.cpp, r.unit), python, ratio, r.unit))
    print_columns(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashsale bench core",
        description="Benchmark the C++ core against plain-Python equivalents.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="time per call-rate measurement (split over the rounds)",
    )
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="thread counts to run (default: 1 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved repetitions; the best is reported"
    )
    parser.add_argument("--ops", type=int, default=2_000_000, help="events loaded by record_many")
    parser.add_argument("--products", type=int, default=100_000, help="products ranked by top(5)")
    parser.add_argument(
        "--top-events", type=int, default=1_000_000, help="sales in the top(5) window"
    )
    parser.add_argument(
        "--repeat", type=int, default=50, help="top(5) calls (the best is reported)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if min(args.seconds, args.ops, args.products, args.repeat, args.rounds) <= 0:
        print(
            "flashsale bench core: --seconds, --ops, --products, --repeat and --rounds must be > 0",
            file=sys.stderr,
        )
        return 2
    if any(t < 1 for t in args.threads):
        print("flashsale bench core: --threads must be >= 1", file=sys.stderr)
        return 2
    top_events = max(args.top_events, args.products)

    rows: list[Row] = []
    for threads in args.threads:
        rows += bench_stock(threads, args.seconds, args.rounds)
        rows += bench_coupons(threads, args.seconds, args.rounds)
        rows += bench_record(threads, args.seconds, args.rounds)
        rows += bench_record_many(threads, args.ops, args.products, args.rounds)
    top_rows, pairs, bytes_per_pair = bench_top(args.products, top_events, args.repeat)
    rows += top_rows
    print_table(rows)

    def best(prefix: str, threads: int) -> float:
        return max(r.cpp for r in rows if r.what.startswith(prefix) and r.threads == threads)

    print()
    print("targets:")
    for threads in args.threads:
        rate = best("StockPool.try_reserve", threads)
        if threads == 1:
            ok = "ok" if rate >= TARGET_RESERVE_PER_THREAD else "MISSED"
            print(
                f"  try_reserve, one thread: {rate:,.0f} calls/s "
                f"(target >= {TARGET_RESERVE_PER_THREAD:,} per thread) {ok}"
            )
        else:
            # The calling loop is Python bytecode, serialized by the GIL whatever C++ does.
            print(f"  try_reserve, {threads} threads together: {rate:,.0f} calls/s")
        for case in ("cold", "live"):
            rate = best(f"SlidingWindowRanking.record_many, {case}", threads)
            ok = "ok" if rate >= TARGET_RECORD_MANY else "MISSED"
            print(
                f"  record_many {case} ({threads} threads): {rate:,.0f} events/s "
                f"(target >= {TARGET_RECORD_MANY:,}) {ok}"
            )
    top_ms = top_rows[0].cpp
    ok = "ok" if top_ms <= TARGET_TOP_MS else "MISSED"
    print(
        f"  top(5) over {args.products:,} products, 3-day window: {top_ms:.3f} ms "
        f"(target <= {TARGET_TOP_MS} ms) {ok}"
    )
    print(f"  memory: {bytes_per_pair:.1f} bytes per (product, bucket) pair ({pairs:,} pairs)")
    print()
    print("GIL for single calls (kept is what the bindings do; released costs a hand-off):")
    for prefix in ("StockPool.try_reserve", "CouponGate.try_issue", "SlidingWindowRanking.record"):
        for threads in args.threads:
            kept = next(
                r.cpp for r in rows if r.what == f"{prefix}, GIL kept" and r.threads == threads
            )
            released = next(
                r.cpp for r in rows if r.what == f"{prefix}, GIL released" and r.threads == threads
            )
            winner = "kept" if kept >= released else "released"
            print(
                f"  {prefix} ({threads} threads): kept {kept:,.0f}/s, "
                f"released {released:,.0f}/s -> {winner} is faster"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
