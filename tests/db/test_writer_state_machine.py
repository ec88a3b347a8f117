"""Batched equals one by one, as a Hypothesis state machine.

Two copies of the same freshly seeded shop (the seed of ``test_writer_batching``:
three one-variant products with 4 units each, product 3 limited to 3 per user, a
FIXED coupon of 2 issues and a PERCENT coupon of 1, three users with 40,000 KRW)
receive the same operations: the writer operations of the service (``place_order_op``
paid or pay-later with 1 to 3 lines and maybe a coupon, ``pay_order_op``,
``cancel_order_op``, ``charge_op``, the coupon ``issue_op``, ``expire_overdue_op``),
all with an explicit ``now`` taken from a clock the machine moves.

Each step queues an operation, moves the clock, or flushes the queue. A flush runs
the queued operations on shop A as ONE batch of a real :class:`GroupCommitWriter`
(each in its savepoint of one transaction; checked from inside the operations and in
``flashsale_writer_batch_size``), and on shop B one by one, each in its own
transaction. After each flush both shops must agree on every operation's answer
(result or refusal with its details), balances, wallet ledgers, stock, inventory
movements, coupons and user coupons, orders with their items and payments, outbox
events per user (payload included), the gates' view of stock and coupons and the
ranking, with ids replaced by stable labels and timestamps by their offset on the
machine's clock. Each shop must also pass ``flashsale audit`` and its in-memory
ranking must equal the same top-k computed in SQL.

Gates and rankings are separate instances per shop, and the gates never count as
stale (they re-read nothing on their own), so what they know comes from the writer's
hooks alone: a hook that ran too late in a batch shows as a different answer. The
operations resolve the orders and coupons they name when they run, in the writer's
thread, so an operation may name an order placed earlier in its own batch.

Batches the search rarely hits but the hooks exist for (a refused order's units, a
cancelled or expired order's units and coupon, needed by the batch's next order) are
replayed by hand on the same machine in ``test_batches_the_search_finds_rarely``.
The databases come from the test backend (SQLite files, or PostgreSQL databases in
the PostgreSQL pass), like ``test_writer_batching``'s.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Transaction

from flashsale.audit import run_audit, sql_top_k
from flashsale.coupons.service import issue_op
from flashsale.db.engine import make_sync_engine
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx
from flashsale.errors import FlashsaleError
from flashsale.metrics import WRITER_BATCH_SIZE
from flashsale.orders.schemas import OrderIn
from flashsale.orders.service import (
    cancel_order_op,
    expire_overdue_op,
    pay_order_op,
    place_order_op,
)
from flashsale.wallet.service import charge_op

from . import test_writer_batching as batching
from .test_writer_batching import COUPONS, USERS, VARIANTS, Databases, Shop

#: Fresh seeded databases of the test backend (the fixture of ``test_writer_batching``).
databases = batching.databases

MAX_QUEUE = 8  # operations per flush at most
FOREVER_S = 10.0**9

# -- the operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    user: int
    lines: tuple[tuple[str, int, int], ...]  # ("variant" | "product", id, quantity)
    pay: bool
    #: (holder, coupon id): the user coupon the holder (None: the buyer) was issued, if any.
    coupon: tuple[int | None, int] | None


@dataclass(frozen=True)
class Pay:
    index: int  # the index-th newest order placed (modulo how many), whoever placed it
    by: int | None  # who pays (None: its owner; another user gets ORDER_NOT_FOUND)


@dataclass(frozen=True)
class Cancel:
    index: int
    by: int | None


@dataclass(frozen=True)
class Charge:
    user: int
    amount: int


@dataclass(frozen=True)
class Issue:
    user: int
    coupon: int


@dataclass(frozen=True)
class Expire:
    limit: int
    advance: int  # seconds the clock moves first


Spec = Place | Pay | Cancel | Charge | Issue | Expire
NO_SUCH_ORDER = "no such order"


@dataclass
class Side:
    """One shop (``test_writer_batching.Shop``: database, writer, gates, ranking, the
    orders placed per user), the user coupons it issued by (holder, coupon) and its
    orders in the order they were placed."""

    shop: Shop
    base: datetime
    held: dict[tuple[int, int], int] = field(default_factory=dict)
    placed: list[tuple[int, int]] = field(default_factory=list)  # (user, order id)

    def op(self, spec: Spec, at: int) -> Callable[[Tx], Any]:
        """The writer operation for ``spec`` at ``at`` seconds on the clock: it names
        orders and coupons by what this shop has when it runs (in the writer's
        thread), and records what it creates."""
        shop, now = self.shop, self.base + timedelta(seconds=at)
        if isinstance(spec, Place):

            def place(tx: Tx) -> Any:
                coupon = None
                if spec.coupon is not None:
                    holder, coupon_id = spec.coupon
                    coupon = self.held.get((holder or spec.user, coupon_id))
                items = [{f"{kind}_id": i, "quantity": q} for kind, i, q in spec.lines]
                body = OrderIn.model_validate(
                    {"items": items, "pay": spec.pay, "user_coupon_id": coupon}
                )
                order = place_order_op(
                    tx,
                    gate=shop.stock,
                    ranking=shop.ranking,
                    user_id=spec.user,
                    body=body,
                    now=now,
                )
                shop.orders[spec.user].append(order.order_id)
                self.placed.append((spec.user, order.order_id))
                return order

            return place
        if isinstance(spec, Pay | Cancel):

            def pay_or_cancel(tx: Tx) -> Any:
                if not self.placed:
                    return NO_SUCH_ORDER
                owner, order_id = self.placed[-1 - spec.index % len(self.placed)]
                user = owner if spec.by is None else spec.by
                if isinstance(spec, Pay):
                    return pay_order_op(
                        tx, ranking=shop.ranking, user_id=user, order_id=order_id, now=now
                    )
                return cancel_order_op(
                    tx,
                    gate=shop.stock,
                    ranking=shop.ranking,
                    user_id=user,
                    order_id=order_id,
                    now=now,
                )

            return pay_or_cancel
        if isinstance(spec, Issue):

            def issue(tx: Tx) -> Any:
                issued = issue_op(
                    tx, gate=shop.coupon_gate, coupon_id=spec.coupon, user_id=spec.user, now=now
                )
                self.held[(spec.user, spec.coupon)] = issued.user_coupon_id
                return issued

            return issue
        if isinstance(spec, Charge):
            return lambda tx: charge_op(tx, user_id=spec.user, amount=spec.amount, now=now)
        return lambda tx: expire_overdue_op(tx, gate=shop.stock, now=now, limit=spec.limit)


# -- normalising ------------------------------------------------------------------------


class Normaliser:
    """Replaces a shop's ids by labels that do not depend on how its ids were allotted
    (orders: ``(user, n)``, the user's n-th order; user coupons: ``(coupon, user)``;
    payments: ``(order label, kind)``; ledger rows: ``(user, n)``; event ids dropped)
    and its timestamps by seconds on the machine's clock (``"seed"`` before it)."""

    def __init__(self, conn: Any, base: datetime) -> None:
        self.base = base
        self.orders = _label_per_user(conn.execute(text("SELECT id, user_id FROM orders")))
        self.ledger = _label_per_user(
            conn.execute(text("SELECT id, user_id FROM wallet_transactions"))
        )
        self.user_coupons = {
            r[0]: ("uc", r[1], r[2])
            for r in conn.execute(text("SELECT id, coupon_id, user_id FROM user_coupons"))
        }
        self.payments = {
            r[0]: ("payment", self.order(r[1]), r[2])
            for r in conn.execute(text("SELECT id, order_id, kind FROM payments"))
        }

    def order(self, order_id: int | None) -> Any:
        if order_id is None:
            return None
        return self.orders.get(order_id, ("unknown order", order_id))

    def user_coupon(self, user_coupon_id: int | None) -> Any:
        if user_coupon_id is None:
            return None
        return self.user_coupons.get(user_coupon_id, ("unknown user coupon", user_coupon_id))

    def time(self, value: datetime | str | None) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return "seed" if value < self.base else (value - self.base).total_seconds()

    def value(self, value: Any, key: str = "", within: str = "") -> Any:
        """A result, error details or event payload, normalised field by field."""
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict):
            return {k: self.value(v, k, key or within) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            return [self.value(v, key, within) for v in value]
        if key == "order_id":
            return self.order(value)
        if key == "user_coupon_id":
            return self.user_coupon(value)
        if key == "id" and within == "payments":
            return self.payments.get(value, ("unknown payment", value))
        if key == "event_id":
            return "<event id>"
        if isinstance(value, datetime) or (key.endswith("_at") and isinstance(value, str)):
            return self.time(value)
        return value

    def answer(self, spec: Spec, result: Any) -> Any:
        """An operation's answer: its refusal (code and details) or its result."""
        if isinstance(result, FlashsaleError):
            return ("refused", result.code, self.value(result.details))
        if isinstance(result, BaseException):
            raise AssertionError(f"{spec} failed unexpectedly: {result!r}") from result
        if isinstance(spec, Charge):
            tx_id, balance, at = result
            return ("charged", self.ledger.get(tx_id), balance, self.time(at))
        if isinstance(spec, Expire):
            return ("expired", [self.order(i) for i in result])
        return self.value(result)


def _label_per_user(rows: Any) -> dict[int, tuple[int, int]]:
    """``{id: (user, n)}``: the n-th row of the user in id order."""
    counts: dict[int, int] = defaultdict(int)
    labels = {}
    for row_id, user in sorted(rows):
        labels[row_id] = (user, counts[user])
        counts[user] += 1
    return labels


def snapshot(side: Side, clock: datetime) -> tuple[Normaliser, dict[str, Any]]:
    """Everything the two shops must agree on, normalised; and the normaliser."""
    shop = side.shop
    engine = make_sync_engine(shop.url, immediate=False)
    try:
        with engine.connect() as conn:
            n = Normaliser(conn, side.base)

            def rows(sql: str) -> list[Any]:
                return list(conn.execute(text(sql)))

            state: dict[str, Any] = {
                "wallets": [
                    (u, balance, n.time(at))
                    for u, balance, at in rows(
                        "SELECT user_id, balance, updated_at FROM wallets ORDER BY user_id"
                    )
                ],
                "ledger": [
                    (u, kind, amount, after, n.order(o), n.time(at))
                    for u, kind, amount, after, o, at in rows(
                        "SELECT user_id, type, amount, balance_after, order_id, created_at "
                        "FROM wallet_transactions ORDER BY user_id, id"
                    )
                ],
                "stock": rows("SELECT id, stock FROM variants ORDER BY id"),
                "movements": [
                    (v, kind, q, n.order(o), n.time(at))
                    for v, kind, q, o, at in rows(
                        "SELECT variant_id, kind, quantity, order_id, created_at "
                        "FROM inventory_movements ORDER BY variant_id, id"
                    )
                ],
                "coupons": rows("SELECT id, issued_count FROM coupons ORDER BY id"),
                "user_coupons": [
                    (u, c, status, n.time(issued), n.time(expires), n.time(used), n.order(o))
                    for u, c, status, issued, expires, used, o in rows(
                        "SELECT user_id, coupon_id, status, issued_at, expires_at, used_at, "
                        "order_id FROM user_coupons ORDER BY user_id, coupon_id"
                    )
                ],
                "orders": [
                    (
                        n.order(i),
                        status,
                        total,
                        discount,
                        paid,
                        n.user_coupon(uc),
                        *map(n.time, times),
                    )
                    for i, status, total, discount, paid, uc, *times in rows(
                        "SELECT id, status, total_amount, discount_amount, paid_amount, "
                        "user_coupon_id, created_at, paid_at, expires_at, cancelled_at "
                        "FROM orders ORDER BY user_id, id"
                    )
                ],
                "order_items": [
                    (n.order(o), *rest)
                    for o, *rest in rows(
                        "SELECT order_id, product_id, variant_id, product_name, variant_name, "
                        "unit_price, quantity, amount FROM order_items ORDER BY order_id, id"
                    )
                ],
                "payments": [
                    (n.order(o), u, kind, amount, n.time(at))
                    for o, u, kind, amount, at in rows(
                        "SELECT order_id, user_id, kind, amount, created_at FROM payments "
                        "ORDER BY user_id, id"
                    )
                ],
                "events": [
                    (u, kind, n.order(o), n.value(json.loads(payload)), n.time(at), n.time(av))
                    for u, kind, o, payload, at, av in rows(
                        "SELECT o.user_id, e.type, e.order_id, e.payload, e.created_at, "
                        "e.available_at FROM outbox e JOIN orders o ON o.id = e.order_id "
                        "ORDER BY o.user_id, e.id"
                    )
                ],
                "events without order": rows("SELECT COUNT(*) FROM outbox WHERE order_id IS NULL"),
            }
            mismatches = _ranking_against_sql(conn, side, clock)
    finally:
        engine.dispose()
    gate = shop.coupon_gate.gate
    state["stock gate"] = [(v, shop.stock.pool.available(v)) for v in VARIANTS]
    state["coupon gate"] = [
        (c, gate.remaining(c), [gate.issued_to(c, u) for u in USERS]) for c in COUPONS
    ]
    now = clock.timestamp()
    state["ranking"] = [
        (metric, days, [(e.product_id, e.quantity, e.orders) for e in top])
        for metric in ("quantity", "orders")
        for days in (1, 7)
        for top in [shop.ranking.top(10, days=days, metric=metric, now=now)]
    ]
    state["ranking against SQL"] = mismatches
    return n, state


def _ranking_against_sql(conn: Any, side: Side, clock: datetime) -> list[str]:
    """The shop's in-memory ranking against the same top-k over PAID orders in SQL
    (the audit's invariant 5, in process)."""
    found = []
    now = clock.timestamp()
    for metric in ("quantity", "orders"):
        for days in (1, 7):
            start, end = side.shop.ranking.window_bounds(days, now=now)
            served = [
                (e.product_id, e.quantity, e.orders)
                for e in side.shop.ranking.top(10, days=days, metric=metric, now=now)
            ]
            expected = sql_top_k(conn, start, end, metric, 10)
            if served != expected:
                found.append(f"{metric}/{days}d: ranking {served} != SQL {expected}")
    return found


def _batch_sizes() -> tuple[float, float]:
    """(batches, operations) the writers of this process have committed or tried so far."""
    count = total = 0.0
    for metric in WRITER_BATCH_SIZE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


# -- the machine ------------------------------------------------------------------------

users = st.sampled_from(USERS)
others = st.none() | users  # None: the buyer's own coupon
line = st.tuples(
    st.sampled_from(("variant", "product")), st.sampled_from(VARIANTS), st.integers(1, 3)
)


def places(*, pay: bool) -> st.SearchStrategy[Place]:
    return st.builds(
        Place,
        users,
        st.lists(line, min_size=1, max_size=3, unique_by=lambda line: line[1]).map(tuple),
        st.just(pay),
        st.none() | st.tuples(others, st.sampled_from(COUPONS)),
    )


pays = st.builds(Pay, st.integers(0, 3), st.none() | users)
cancels = st.builds(Cancel, st.integers(0, 3), st.none() | users)
charges = st.builds(Charge, users, st.sampled_from((30_000, 1_000, 30_000, 2_000_000)))
issues = st.builds(Issue, users, st.sampled_from((*COUPONS, *COUPONS, 99)))  # 99: no such coupon
expires = st.builds(Expire, st.sampled_from((50, 1)), st.sampled_from((0, 601, 120)))


class BatchedLikeOneByOne(RuleBasedStateMachine):
    """Queue operations, move the clock, flush: batched on A, one by one on B."""

    def __init__(self, made: Databases) -> None:
        super().__init__()
        self.made = made
        self.loop = asyncio.new_event_loop()
        self.sides: list[Side] = []
        self.queue: list[tuple[Spec, int]] = []  # (operation, seconds on the clock)
        self.clock = 0  # seconds since self.base
        self.places = 0  # orders queued so far (before the first, paying is pointless)
        self.flushes = 0
        self.last: tuple[list[tuple[Spec, int]], list[Any], list[Any]] = ([], [], [])
        self.outcomes: list[str] = []  # the last flush's answers, in short (see _outcome)
        self.checked = True

    @initialize()
    def open_shops(self) -> None:
        urls = [self.made.new(), self.made.new()]
        # Whole seconds after the seed: every seeded time reads "seed", every time an
        # operation writes is a whole number of seconds on the clock.
        self.base = (utcnow() + timedelta(seconds=1)).replace(microsecond=0)
        # A: its operations submitted together (the window is only a fallback: the
        # flush holds the writer until every operation is queued). B: one at a time.
        for url, window_s in ((urls[0], 0.05), (urls[1], 0.0)):
            shop = self.loop.run_until_complete(batching._open(url, window_s=window_s))
            # Never stale: the gates re-read nothing on their own, so what they know
            # comes from the writer's hooks alone, whatever the wall clock says.
            shop.stock.freshness_s = shop.coupon_gate.freshness_s = FOREVER_S
            self.sides.append(Side(shop, self.base))
        self.checked = False

    def teardown(self) -> None:
        try:
            for side in self.sides:
                self.loop.run_until_complete(side.shop.writer.stop())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            self.made.drop_all()
            for side in self.sides:
                if side.shop.url.startswith("sqlite:///"):
                    Path(side.shop.url.removeprefix("sqlite:///")).unlink(missing_ok=True)

    # -- queueing (each operation is timed by the clock when queued) --------------------

    def _queue(self, spec: Spec) -> None:
        self.queue.append((spec, self.clock))

    @precondition(lambda self: len(self.queue) < MAX_QUEUE)
    @rule(spec=places(pay=True))
    def place_paid(self, spec: Place) -> None:
        self.places += 1
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE)
    @rule(spec=places(pay=False))
    def place_pay_later(self, spec: Place) -> None:
        self.places += 1
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE and self.places > 0)
    @rule(spec=pays)
    def pay(self, spec: Pay) -> None:
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE and self.places > 0)
    @rule(spec=cancels)
    def cancel(self, spec: Cancel) -> None:
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE)
    @rule(spec=charges)
    def charge(self, spec: Charge) -> None:
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE)
    @rule(spec=issues)
    def issue(self, spec: Issue) -> None:
        self._queue(spec)

    @precondition(lambda self: len(self.queue) < MAX_QUEUE)
    @rule(spec=expires)
    def expire(self, spec: Expire) -> None:
        """The sweeper, after the clock moved by ``spec.advance`` seconds."""
        self.clock += spec.advance
        self._queue(spec)

    @rule(advance=st.sampled_from((1, 300, 601, 8 * 86400)))
    def tick(self, advance: int) -> None:
        """Time passes: pay-later orders (600 s) and coupons (7 days) run out."""
        self.clock += advance

    # -- flushing ----------------------------------------------------------------------

    @precondition(lambda self: len(self.queue) >= 2)
    @rule()
    def flush(self) -> None:
        specs, self.queue = self.queue, []
        batched, one_by_one = self.sides
        got_a = self.loop.run_until_complete(self._as_one_batch(batched, specs))
        got_b = self.loop.run_until_complete(self._one_by_one(one_by_one, specs))
        self.last = (specs, got_a, got_b)
        self.flushes += 1
        self.checked = False

    async def _as_one_batch(self, side: Side, specs: Sequence[tuple[Spec, int]]) -> list[Any]:
        """Run ``specs`` as one batch of A's writer: a first operation holds the writer
        thread until all of them are queued, so its next batch takes them all."""
        writer = side.shop.writer
        holding, go = threading.Event(), threading.Event()

        def hold(tx: Tx) -> None:
            holding.set()
            go.wait(10)

        held = asyncio.ensure_future(writer.submit(hold))
        transactions: list[Transaction | None] = []
        try:
            assert await asyncio.to_thread(holding.wait, 10), "the writer did not start"
            batches_before, ops_before = _batch_sizes()
            futures = [
                asyncio.ensure_future(writer.submit(_traced(side.op(*spec), transactions)))
                for spec in specs
            ]
            await asyncio.sleep(0)  # each submit puts its operation in the queue
        finally:
            go.set()
        await held
        results = await asyncio.gather(*futures, return_exceptions=True)
        batches, ops = _batch_sizes()
        assert (batches - batches_before, ops - ops_before) == (1, len(specs)), (
            "the flush was not one batch"
        )
        assert len(transactions) == len(specs)
        assert all(t is not None and t is transactions[0] for t in transactions), (
            "the flush's operations did not share one transaction"
        )
        return results

    async def _one_by_one(self, side: Side, specs: Sequence[tuple[Spec, int]]) -> list[Any]:
        """Run ``specs`` on B's writer one at a time: each its own transaction."""
        results: list[Any] = []
        transactions: list[Transaction | None] = []
        for spec in specs:
            try:
                results.append(await side.shop.writer.submit(_traced(side.op(*spec), transactions)))
            except Exception as exc:
                results.append(exc)
        assert len({id(t) for t in transactions}) == len(specs), "an operation shared a batch"
        return results

    # -- checking ----------------------------------------------------------------------

    @invariant()
    def shops_agree(self) -> None:
        """After each flush (and at the start): same answers, same shop, clean audits."""
        if self.checked or not self.sides:
            return
        self.checked = True
        clock = self.base + timedelta(seconds=self.clock)
        (norm_a, state_a), (norm_b, state_b) = (snapshot(s, clock) for s in self.sides)
        if self.flushes:
            specs, got_a, got_b = self.last
            answers_a = [norm_a.answer(s, r) for (s, _at), r in zip(specs, got_a, strict=True)]
            answers_b = [norm_b.answer(s, r) for (s, _at), r in zip(specs, got_b, strict=True)]
            for (spec, at), a, b in zip(specs, answers_a, answers_b, strict=True):
                assert a == b, f"{spec} at {at} s: batched answered {a}, one by one {b}"
            self.outcomes = [_outcome(a) for a in answers_a]
            if currently_in_test_context():  # --hypothesis-show-statistics
                for (spec, _at), outcome in zip(specs, self.outcomes, strict=True):
                    event(f"{type(spec).__name__}: {outcome}")
                event(f"flush of {len(specs)} operations")
        for key in state_a:
            assert state_a[key] == state_b[key], (
                f"{key} differs: batched {state_a[key]} != one by one {state_b[key]}"
            )
        assert state_a["ranking against SQL"] == [], state_a["ranking against SQL"]
        for side in self.sides:
            report = run_audit(side.shop.url)
            assert report.ok, report.render()


def _outcome(answer: Any) -> str:
    """What kind of answer (for ``--hypothesis-show-statistics``)."""
    if isinstance(answer, tuple):
        if answer[0] == "expired":
            return f"expired {len(answer[1])}"
        return str(answer[1]) if answer[0] == "refused" else str(answer[0])
    if isinstance(answer, dict):
        return str(answer.get("status", "ok"))
    return str(answer)


def _traced(op: Callable[[Tx], Any], seen: list[Transaction | None]) -> Callable[[Tx], Any]:
    """``op``, noting the transaction it runs in."""

    def run(tx: Tx) -> Any:
        seen.append(tx.conn.get_transaction())
        return op(tx)

    return run


def test_batched_operations_end_like_one_by_one_step_by_step(databases: Databases) -> None:
    run_state_machine_as_test(
        lambda: BatchedLikeOneByOne(databases),  # type: ignore[arg-type]  # a factory will do
        settings=settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- batches the search finds rarely: a hook must run before the batch's next operation --

V1, V2 = (("variant", v, 3) for v in (1, 2))  # 3 units of variant 1, of variant 2
#: Steps: an operation to queue, or the outcomes a flush must answer (see _outcome).
SCENARIOS: dict[str, list[Spec | list[str]]] = {
    # INSUFFICIENT_BALANCE after the stock gate admitted the 3 units: they must be back
    # in the gate (rollback hook) for the next order of the batch to get 2 of the 4.
    "a refused order's units": [
        Place(1, (V2,), True, None),
        Place(2, (("variant", 2, 2),), False, None),
        ["INSUFFICIENT_BALANCE", "PENDING"],
    ],
    # PURCHASE_LIMIT_EXCEEDED (product 3: 3 per user), likewise.
    "a refused order's units, per-user limit": [
        Place(1, (("variant", 3, 2),), False, None),
        Place(1, (("product", 3, 2),), False, None),
        Place(2, (("variant", 3, 2),), False, None),
        ["PENDING", "PURCHASE_LIMIT_EXCEEDED", "PENDING"],
    ],
    # A cancellation's units are in the gate for the batch's next order (release hook).
    "a cancelled order's units": [
        Place(1, (V1,), False, None),
        Charge(2, 1_000),
        ["PENDING", "charged"],
        Cancel(0, None),
        Place(2, (V1,), False, None),
        ["CANCELLED", "PENDING"],
    ],
    # An expired order's units too, and its coupon goes back to ISSUED for the next order.
    "an expired order's units and coupon": [
        Issue(1, 1),
        Place(1, (V1,), False, (None, 1)),
        ["ISSUED", "PENDING"],
        Expire(50, 601),
        Place(1, (V1,), False, (None, 1)),
        Pay(0, None),
        ["expired 1", "PENDING", "PAID"],
    ],
    # A paid order cancelled in the batch: refund, coupon back, units back, re-ordered.
    "a refunded order's coupon": [
        Issue(1, 2),
        Issue(2, 2),
        Place(1, (("variant", 1, 1),), True, (None, 2)),
        Cancel(0, None),
        Place(1, (V1,), True, (None, 2)),
        Place(2, (("variant", 1, 2),), True, None),
        ["ISSUED", "COUPON_SOLD_OUT", "PAID", "CANCELLED", "PAID", "OUT_OF_STOCK"],
    ],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_batches_the_search_finds_rarely(databases: Databases, name: str) -> None:
    """The machine's own steps, chosen by hand: each flush must answer as written."""
    machine = BatchedLikeOneByOne(databases)
    try:
        machine.open_shops()
        machine.shops_agree()
        for step in SCENARIOS[name]:
            if isinstance(step, list):
                machine.flush()
                machine.shops_agree()
                assert machine.outcomes == step
            else:
                if isinstance(step, Expire):
                    machine.clock += step.advance
                machine._queue(step)
    finally:
        machine.teardown()
