"""Model-based tests: each C++ class against an obvious pure-Python model.

Hypothesis drives random operation sequences, bad arguments included; a bad
call must raise (ValueError / KeyError) and change nothing.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flashsale import CouponGate, IssueResult, RankEntry, SlidingWindowRanking, StockPool

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ids = st.integers(min_value=-3, max_value=6)
lines_st = st.lists(st.tuples(ids, st.integers(min_value=-1, max_value=8)), max_size=4)


def line_error(lines: list[tuple[int, int]], known: dict[int, int]) -> type[Exception] | None:
    """The exception StockPool must raise for these lines, if any (ValueError first)."""
    skus = [sku for sku, _ in lines]
    if not lines or any(q <= 0 for _, q in lines) or len(set(skus)) != len(skus):
        return ValueError
    if any(sku not in known for sku in skus):
        return KeyError
    return None


class StockPoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = StockPool()
        self.model: dict[int, int] = {}

    @rule(sku=ids, available=st.integers(min_value=-2, max_value=20))
    def set(self, sku: int, available: int) -> None:
        if available < 0:
            with pytest.raises(ValueError):
                self.pool.set(sku, available)
            return
        self.pool.set(sku, available)
        self.model[sku] = available

    @rule(sku=ids)
    def available(self, sku: int) -> None:
        if sku not in self.model:
            with pytest.raises(KeyError):
                self.pool.available(sku)
        else:
            assert self.pool.available(sku) == self.model[sku]

    @rule(lines=lines_st, use_list=st.booleans())
    def try_reserve(self, lines: list[tuple[int, int]], use_list: bool) -> None:
        arg = [list(line) for line in lines] if use_list else lines
        error = line_error(lines, self.model)
        if error is not None:
            with pytest.raises(error):
                self.pool.try_reserve(arg)  # type: ignore[arg-type]
            return
        fits = all(self.model[sku] >= q for sku, q in lines)
        assert self.pool.try_reserve(arg) is fits  # type: ignore[arg-type]
        if fits:
            for sku, q in lines:
                self.model[sku] -= q

    @rule(lines=lines_st)
    def release(self, lines: list[tuple[int, int]]) -> None:
        error = line_error(lines, self.model)
        if error is not None:
            with pytest.raises(error):
                self.pool.release(lines)
            return
        self.pool.release(lines)
        for sku, q in lines:
            self.model[sku] += q

    @rule(lines=st.sampled_from([None, 5, [1], [(1, 2, 3)], [(1.5, 1)], ["ab"]]))
    def malformed(self, lines: object) -> None:
        with pytest.raises(TypeError):
            self.pool.try_reserve(lines)  # type: ignore[arg-type]

    @invariant()
    def same_counters(self) -> None:
        assert len(self.pool) == len(self.model)
        for sku in range(-3, 7):
            assert (sku in self.pool) == (sku in self.model)
        for sku, available in self.model.items():
            assert self.pool.available(sku) == available
        assert "sku" not in self.pool
        assert 2**80 not in self.pool


@dataclass
class CouponModel:
    remaining: int
    limit: int
    users: dict[int, int] = field(default_factory=dict)


class CouponGateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.gate = CouponGate()
        self.model: dict[int, CouponModel] = {}

    @rule(
        coupon=ids,
        remaining=st.integers(min_value=-1, max_value=5),
        limit=st.integers(min_value=0, max_value=3),
    )
    def configure(self, coupon: int, remaining: int, limit: int) -> None:
        if remaining < 0 or limit < 1:
            with pytest.raises(ValueError):
                self.gate.configure(coupon, remaining, limit)
            return
        self.gate.configure(coupon, remaining, per_user_limit=limit)
        if coupon in self.model:
            self.model[coupon].remaining = remaining
            self.model[coupon].limit = limit
        else:
            self.model[coupon] = CouponModel(remaining, limit)

    @rule(coupon=ids, user=ids)
    def try_issue(self, coupon: int, user: int) -> None:
        if coupon not in self.model:
            with pytest.raises(KeyError):
                self.gate.try_issue(coupon, user)
            return
        c = self.model[coupon]
        held = c.users.get(user, 0)
        if held >= c.limit:
            expected = IssueResult.ALREADY_ISSUED
        elif c.remaining == 0:
            expected = IssueResult.SOLD_OUT
        else:
            expected = IssueResult.ISSUED
            c.remaining -= 1
            c.users[user] = held + 1
        assert self.gate.try_issue(coupon, user) is expected

    @rule(coupon=ids, user=ids)
    def revoke(self, coupon: int, user: int) -> None:
        if coupon not in self.model:
            with pytest.raises(KeyError):
                self.gate.revoke(coupon, user)
            return
        c = self.model[coupon]
        if c.users.get(user, 0) == 0:
            with pytest.raises(ValueError):
                self.gate.revoke(coupon, user)
            return
        self.gate.revoke(coupon, user)
        c.users[user] -= 1
        c.remaining += 1

    @rule(coupon=ids, user=ids, count=st.integers(min_value=-1, max_value=4))
    def mark_issued(self, coupon: int, user: int, count: int) -> None:
        # Bad arguments are reported before unknown ids, as everywhere in the core.
        if count < 0:
            with pytest.raises(ValueError):
                self.gate.mark_issued(coupon, user, count)
            return
        if coupon not in self.model:
            with pytest.raises(KeyError):
                self.gate.mark_issued(coupon, user, count)
            return
        self.gate.mark_issued(coupon, user, count)
        users = self.model[coupon].users
        users[user] = max(users.get(user, 0), count)

    @rule(coupon=ids)
    def unknown_reads(self, coupon: int) -> None:
        if coupon not in self.model:
            with pytest.raises(KeyError):
                self.gate.remaining(coupon)
            with pytest.raises(KeyError):
                self.gate.issued_to(coupon, 1)

    @invariant()
    def same_state(self) -> None:
        for coupon in range(-3, 7):
            assert (coupon in self.gate) == (coupon in self.model)
        for coupon, c in self.model.items():
            assert self.gate.remaining(coupon) == c.remaining
            for user in range(-3, 7):
                assert self.gate.issued_to(coupon, user) == c.users.get(user, 0)


BUCKET = 60
N_BUCKETS = 5
WINDOW = BUCKET * N_BUCKETS
windows = st.sampled_from([None, None, 0, 60, 90, 120, 180, 300, 360, -60])
metrics = st.sampled_from(["quantity", "quantity", "orders", "revenue"])
offsets = st.sampled_from([0.0, 0.25, 30.0, 59.999])


class RankingModel:
    """The window rule written the slow, obvious way (the SQL audit does the same)."""

    def __init__(self) -> None:
        self.horizon: int | None = None
        self.buckets: dict[int, dict[int, tuple[int, int]]] = {}

    def record(self, product: int, quantity: int, orders: int, ts: float) -> None:
        b = math.floor(ts / BUCKET)
        if self.horizon is not None and b <= self.horizon - N_BUCKETS:
            return
        cell = self.buckets.setdefault(b, {})
        q, o = cell.get(product, (0, 0))
        q, o = q + quantity, o + orders
        if (q, o) == (0, 0):
            del cell[product]
        else:
            cell[product] = (q, o)

    def totals(self, now: float, window: int | None) -> dict[int, tuple[int, int]]:
        cur = math.floor(now / BUCKET)
        if self.horizon is None or cur > self.horizon:
            self.horizon = cur
            for b in [b for b in self.buckets if b <= cur - N_BUCKETS]:
                del self.buckets[b]
        nb = (window or WINDOW) // BUCKET
        out: dict[int, tuple[int, int]] = {}
        for b, cell in self.buckets.items():
            if cur - nb < b <= cur:
                for p, (q, o) in cell.items():
                    oq, oo = out.get(p, (0, 0))
                    out[p] = (oq + q, oo + o)
        return {p: c for p, c in out.items() if c != (0, 0)}

    def pairs(self) -> int:
        return sum(len(cell) for cell in self.buckets.values())


def window_ok(window: int | None) -> bool:
    return window is None or (0 < window <= WINDOW and window % BUCKET == 0)


class RankingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ranking = SlidingWindowRanking(window_seconds=WINDOW, bucket_seconds=BUCKET)
        self.model = RankingModel()
        self.clock = 1000  # in buckets

    def ts(self, delta: int, offset: float) -> float:
        return (self.clock + delta) * BUCKET + offset

    @rule(steps=st.integers(min_value=0, max_value=4))
    def advance(self, steps: int) -> None:
        self.clock += steps

    @rule(
        product=st.integers(min_value=0, max_value=6),
        quantity=st.integers(min_value=-3, max_value=5),
        orders=st.integers(min_value=-2, max_value=3),
        delta=st.integers(min_value=-7, max_value=2),
        offset=offsets,
    )
    def record(self, product: int, quantity: int, orders: int, delta: int, offset: float) -> None:
        ts = self.ts(delta, offset)
        if quantity == 0 and orders == 0:
            with pytest.raises(ValueError):
                self.ranking.record(product, quantity, orders, ts)
            return
        self.ranking.record(product, quantity, orders, ts)
        self.model.record(product, quantity, orders, ts)

    @rule(
        events=st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=6),
                st.integers(min_value=-3, max_value=5),
                st.integers(min_value=-2, max_value=3),
                st.integers(min_value=-7, max_value=2),
                offsets,
            ),
            max_size=8,
        ),
        as_buffers=st.booleans(),
        int_times=st.booleans(),
        truncate=st.booleans(),
    )
    def record_many(
        self,
        events: list[tuple[int, int, int, int, float]],
        as_buffers: bool,
        int_times: bool,
        truncate: bool,
    ) -> None:
        products = [e[0] for e in events]
        quantities = [e[1] for e in events]
        orders = [e[2] for e in events]
        times: list[float] = [self.ts(e[3], 0.0 if int_times else e[4]) for e in events]
        ts_column: object = times
        if int_times:
            ts_column = array.array("q", [int(t) for t in times])
        elif as_buffers:
            ts_column = array.array("d", times)
        columns: list[object] = [products, quantities, orders]
        if as_buffers:
            columns = [array.array("q", c) for c in (products, quantities, orders)]
        if truncate and events:
            columns[1] = quantities[:-1]
        empty = any(q == 0 and o == 0 for q, o in zip(quantities, orders, strict=True))
        if (truncate and events) or empty:
            with pytest.raises(ValueError):
                self.ranking.record_many(*columns, ts_column)  # type: ignore[arg-type]
            return
        self.ranking.record_many(*columns, ts_column)  # type: ignore[arg-type]
        for (p, q, o, _, _), t in zip(events, times, strict=True):
            self.model.record(p, q, o, t)

    @rule(
        k=st.integers(min_value=0, max_value=6),
        delta=st.integers(min_value=-3, max_value=0),
        offset=offsets,
        metric=metrics,
        window=windows,
    )
    def top(self, k: int, delta: int, offset: float, metric: str, window: int | None) -> None:
        now = self.ts(delta, offset)
        if k < 1 or metric not in ("quantity", "orders") or not window_ok(window):
            with pytest.raises(ValueError):
                self.ranking.top(k, now, metric, window)
            return
        totals = self.model.totals(now, window)
        index = 0 if metric == "quantity" else 1
        ranked = sorted(
            (p for p, c in totals.items() if c[index] > 0),
            key=lambda p: (-totals[p][index], p),
        )[:k]
        expected = [RankEntry(p, *totals[p]) for p in ranked]
        assert self.ranking.top(k, now, metric=metric, window_seconds=window) == expected

    @rule(delta=st.integers(min_value=-3, max_value=0), offset=offsets, window=windows)
    def totals(self, delta: int, offset: float, window: int | None) -> None:
        now = self.ts(delta, offset)
        if not window_ok(window):
            with pytest.raises(ValueError):
                self.ranking.totals(now, window)
            return
        assert self.ranking.totals(now, window) == self.model.totals(now, window)

    @rule(ts=st.sampled_from([math.nan, math.inf, -math.inf, 1e300]))
    def bad_time(self, ts: float) -> None:
        with pytest.raises(ValueError):
            self.ranking.record(1, 1, 1, ts)
        with pytest.raises(ValueError):
            self.ranking.record_many([1], [1], [1], [ts])
        with pytest.raises(ValueError):
            self.ranking.top(1, ts)

    @precondition(lambda self: self.clock % 7 == 0)
    @rule()
    def clear(self) -> None:
        self.ranking.clear()
        self.model = RankingModel()

    @invariant()
    def same_pairs(self) -> None:
        assert self.ranking.pair_count() == self.model.pairs()


TestStockPoolModel = StockPoolMachine.TestCase
TestStockPoolModel.settings = SETTINGS
TestCouponGateModel = CouponGateMachine.TestCase
TestCouponGateModel.settings = SETTINGS
TestRankingModel = RankingMachine.TestCase
TestRankingModel.settings = SETTINGS


def test_ranking_constructor_and_properties() -> None:
    r = SlidingWindowRanking()
    assert (r.window_seconds, r.bucket_seconds) == (259200, 60)
    for window, bucket in [(0, 60), (180, 0), (-60, 60), (100, 60), (60, -60)]:
        with pytest.raises(ValueError):
            SlidingWindowRanking(window, bucket)


def test_rank_entry_value_semantics() -> None:
    e = RankEntry(product_id=3, quantity=5, orders=2)
    assert (e.product_id, e.quantity, e.orders) == (3, 5, 2)
    assert e == RankEntry(3, 5, 2)
    assert e != RankEntry(3, 5, 1)
    assert e != (3, 5, 2)
    assert hash(e) == hash(RankEntry(3, 5, 2))
    assert repr(e) == "RankEntry(product_id=3, quantity=5, orders=2)"
    with pytest.raises(AttributeError):
        e.quantity = 1  # type: ignore[misc]


def test_issue_result_is_an_enum() -> None:
    assert [m.name for m in IssueResult] == ["ISSUED", "SOLD_OUT", "ALREADY_ISSUED"]
    assert IssueResult.ISSUED.name == "ISSUED"


def test_unknown_ids_raise_key_error_with_the_id() -> None:
    with pytest.raises(KeyError) as excinfo:
        StockPool().available(42)
    assert excinfo.value.args == (42,)
    with pytest.raises(KeyError) as excinfo:
        CouponGate().try_issue(7, 1)
    assert excinfo.value.args == (7,)
