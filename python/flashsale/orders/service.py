"""Placing, paying, cancelling, expiring and reading orders (rules: docs/rules.md; the
invariants they keep: docs/invariants.md).

The order path, in one short write transaction with rows updated in a fixed
order (wallet, then variants by ascending id, then the user coupon) so that
concurrent orders cannot deadlock:

1. the C++ stock gate admits the lines or answers ``OUT_OF_STOCK`` at once;
2. the rules are checked against the database: variants exist, sale window,
   per-user purchase limit, coupon ownership/validity/minimum, balance;
3. conditional writes confirm every grant: ``balance >= paid``,
   ``stock >= quantity`` per variant, the coupon still ``ISSUED``; each writes
   its ledger row (wallet transaction, inventory movement, payment);
4. a paid order writes its ``order.paid`` outbox event in the same transaction;
5. after commit the sale is recorded in this process's ranking and the gate's
   listeners (the catalog read cache) learn which products' stock changed; after
   a rollback the gate's reservation is released and corrected from the database.

:func:`place_order` runs three steps: validate (lines, variants, sale windows,
purchase limits), price (items, coupon discount, balance) and write (the
conditional writes and their ledger rows). The rules are pure functions in
:mod:`flashsale.orders.rules`, the SQL is in :mod:`flashsale.orders.repository`.

Pay-later orders are PENDING and hold stock and coupon until ``expires_at``;
payment, cancellation and expiry change the status with conditional updates
(``WHERE status = ...``), so each order ends in exactly one final state even
when instances race. Cancelling and expiring write RELEASE movements, return the
coupon, and (cancelling a PAID order) refund and write ``order.cancelled``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.db.types import utcnow
from flashsale.db.writer import Tx, run_in_session
from flashsale.errors import (
    CouponNotUsable,
    FlashsaleError,
    InsufficientBalance,
    OrderNotCancellable,
    OrderNotFound,
    OrderNotPayable,
    OutOfStock,
    ProductNotFound,
    ValidationFailed,
    VariantRequired,
)
from flashsale.gates import Reader, StockGate
from flashsale.metrics import observe_order
from flashsale.orders import repository, rules
from flashsale.orders.schemas import OrderIn, OrderItemOut, OrderOut, PaymentOut
from flashsale.outbox.events import (
    ORDER_CANCELLED,
    ORDER_PAID,
    add_order_event,
    new_order_event,
)
from flashsale.ranking.service import RankingService
from flashsale.wallet.service import debit, get_balance, refund


def resolve_lines(conn: Connection, body: OrderIn) -> list[tuple[int, int]]:
    """``[(variant_id, quantity)]`` sorted by variant id.

    A line with only ``product_id`` names that product's single variant.

    Raises:
        ProductNotFound: a product_id-only line names no product (404).
        VariantRequired: that product has several variants (422).
        ValidationFailed: a variant appears twice (422).
    """
    lines: list[tuple[int, int]] = []
    for line in body.items:
        variant_id = line.variant_id
        if variant_id is None:
            assert line.product_id is not None
            ids = repository.variants_of_product(conn, line.product_id)
            if not ids:
                raise ProductNotFound(product_id=line.product_id)
            if len(ids) > 1:
                raise VariantRequired(product_id=line.product_id)
            variant_id = ids[0]
        lines.append((variant_id, line.quantity))
    seen = [v for v, _ in lines]
    if len(set(seen)) != len(seen):
        raise ValidationFailed("A variant may appear at most once per order", field="items")
    return sorted(lines)


async def refuse_early(gate: StockGate, reader: Reader, body: OrderIn) -> None:
    """Answer an order the stock gate knows to be hopeless, before any write session.

    Only lines naming a ``variant_id`` are looked at (a ``product_id``-only line needs
    the database to find its variant). A shortfall older than the freshness bound is
    re-read first (one read-only query shared by the requests that meet it, in a
    session of ``reader``); a fresh one answers ``OUT_OF_STOCK`` with the same details
    as :func:`place_order`. Returns when the order may succeed or the gate cannot
    tell. Refusals are counted like :func:`place_order`'s.

    Raises:
        OutOfStock: a variant has fewer units than asked, as this process knows (409).
    """
    lines = [(line.variant_id, line.quantity) for line in body.items if line.variant_id is not None]
    if len(lines) != len(body.items) or len({v for v, _ in lines}) != len(lines):
        return  # resolved (and refused if invalid) by place_order
    lines.sort()
    short = gate.shortfall(lines)
    if short == "STALE":
        await gate.reread(reader, [v for v, _ in lines])
        short = gate.shortfall(lines)
    if isinstance(short, tuple):
        variant_id, available = short
        error = OutOfStock(
            variant_id=variant_id, requested=dict(lines)[variant_id], available=available
        )
        observe_order(error.code)
        raise error


async def place_order(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    *,
    payment_timeout_s: int = 600,
    now: datetime | None = None,
) -> OrderOut:
    """:func:`place_order_op` in ``session``'s transaction (``flashsale seed``)."""
    op = partial(
        place_order_op,
        gate=gate,
        ranking=ranking,
        user_id=user_id,
        body=body,
        payment_timeout_s=payment_timeout_s,
        now=now,
    )
    return await run_in_session(session, op)


def place_order_op(
    tx: Tx,
    *,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    payment_timeout_s: int = 600,
    now: datetime | None = None,
) -> OrderOut:
    """Create an order; pay it at once unless ``body.pay`` is false (a writer operation).

    A paid order debits the wallet, writes its PAYMENT and its ``order.paid``
    outbox event. A pay-later order is PENDING: it holds its stock and coupon
    until ``expires_at = now + payment_timeout_s``. ``now`` (UTC) defaults to the
    current time; ``flashsale seed`` passes past times. Counted in
    ``flashsale_orders_total`` (a refusal by its code, an order once committed).

    Raises:
        OutOfStock: a variant has fewer units than asked (409; details variant_id,
            requested, available).
        InsufficientBalance, CouponNotUsable, CouponMinOrderNotMet, SaleNotOpen,
        PurchaseLimitExceeded (409); ProductNotFound, VariantNotFound (404);
        VariantRequired, ValidationFailed (422).
    """
    try:
        order = _place_order(tx, gate, ranking, user_id, body, payment_timeout_s, now)
    except FlashsaleError as exc:
        observe_order(exc.code)
        raise
    tx.after_commit(partial(observe_order, order.status))
    return order


@dataclass
class _Priced:
    """An order after the validate and price steps, before anything is written."""

    lines: list[tuple[int, int]]
    items: list[OrderItemOut]
    total: int
    discount: int
    reads: repository.OrderReads

    @property
    def paid(self) -> int:
        """What the buyer pays (KRW): total less the coupon's discount."""
        return self.total - self.discount


def _validate(
    conn: Connection, user_id: int, body: OrderIn, lines: list[tuple[int, int]], now: datetime
) -> repository.OrderReads:
    """Read what the rules need and check them: variants, sale windows, purchase limits.

    The buyer's wallet is locked first (the lock order: wallet, variants by id, user
    coupon). Returns what was read (:class:`~flashsale.orders.repository.OrderReads`).
    """
    reads = repository.order_reads(conn, user_id, [v for v, _ in lines], pay=body.pay)
    rows = reads.variants
    by_id = {r.id: r for r in rows}
    rules.check_variants(lines, by_id, body)
    rules.check_sale_windows(rows, now)
    limits = rules.purchase_limits(rows)
    if limits:
        held = repository.held_units(conn, user_id, list(limits))
        rules.check_purchase_limits(limits, held, rules.units_per_product(lines, by_id))
    return reads


def _price(
    conn: Connection,
    user_id: int,
    body: OrderIn,
    lines: list[tuple[int, int]],
    reads: repository.OrderReads,
    now: datetime,
) -> _Priced:
    """Items at today's prices, the coupon's discount, and (``pay``) the balance check."""
    items = rules.price_lines(lines, {r.id: r for r in reads.variants})
    total = sum(i.amount for i in items)
    discount = 0
    if body.user_coupon_id is not None:
        coupon = repository.user_coupon(conn, body.user_coupon_id)
        discount = rules.coupon_discount(coupon, user_id, total, now)
    priced = _Priced(lines, items, total, discount, reads)
    if body.pay:
        rules.check_balance(reads.balance, priced.paid)
    return priced


def _order_row(
    user_id: int, body: OrderIn, priced: _Priced, payment_timeout_s: int, now: datetime
) -> dict[str, Any]:
    """The new order's ``orders`` row, without its id: PAID at ``now`` when ``pay``,
    else PENDING until ``now + payment_timeout_s``."""
    return {
        "user_id": user_id,
        "status": "PAID" if body.pay else "PENDING",
        "total_amount": priced.total,
        "discount_amount": priced.discount,
        "paid_amount": priced.paid,
        "user_coupon_id": body.user_coupon_id,
        "created_at": now,
        "paid_at": now if body.pay else None,
        "expires_at": None if body.pay else now + timedelta(seconds=payment_timeout_s),
    }


def _order_out(order_id: int, row: dict[str, Any], items: list[OrderItemOut]) -> OrderOut:
    """The answer for the order of ``row`` (:func:`_order_row`), before any payment."""
    fields = {k: v for k, v in row.items() if k != "user_id"}
    return OrderOut(order_id=order_id, items=items, payments=[], **fields)


def _short_line(tx: Tx, gate: StockGate, variant_id: int, quantity: int) -> OutOfStock:
    """The refusal of a line the database had too few units for; the gate learns the
    database's stock if the operation rolls back."""
    stock = repository.stock_of(tx.conn, variant_id)
    tx.after_rollback(partial(gate.learn, variant_id, stock))
    return OutOfStock(variant_id=variant_id, requested=quantity, available=stock)


def _write(
    tx: Tx,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    priced: _Priced,
    payment_timeout_s: int,
    now: datetime,
) -> OrderOut:
    """The conditional writes that confirm every grant, with their ledger rows: the
    order, stock per line (RESERVE movements), the coupon, and for ``pay`` the
    payment (:func:`_take_payment`)."""
    conn = tx.conn
    row = _order_row(user_id, body, priced, payment_timeout_s, now)
    order_id = repository.insert_order(conn, row)
    for variant_id, quantity in priced.lines:
        if repository.take_stock(conn, variant_id, quantity) is None:
            raise _short_line(tx, gate, variant_id, quantity)
    tx.after_commit(partial(gate.stock_changed, {i.product_id for i in priced.items}))
    repository.insert_items(conn, order_id, priced.items)
    repository.insert_movements(conn, order_id, "RESERVE", [(v, -q) for v, q in priced.lines], now)
    if body.user_coupon_id is not None and not repository.use_coupon(
        conn, body.user_coupon_id, order_id, now
    ):
        raise CouponNotUsable("Coupon was used concurrently")
    order = _order_out(order_id, row, priced.items)
    if body.pay:
        _take_payment(tx, ranking, user_id, order, now)
    return order


def _write_at_once(
    tx: Tx,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    priced: _Priced,
    payment_timeout_s: int,
    now: datetime,
) -> OrderOut:
    """:func:`_write` in one statement (PostgreSQL, where each statement is a round
    trip): the order and its event are built first, with the ids taken by the reads,
    then :func:`flashsale.orders.repository.write_order` writes them. Its grants are
    checked in :func:`_write`'s order (stock, coupon, balance); a refusal raises and
    the writer rolls back all that the statement wrote."""
    conn = tx.conn
    order_id, payment_id = priced.reads.order_id, priced.reads.payment_id
    assert order_id is not None and (payment_id is not None) == body.pay
    row = _order_row(user_id, body, priced, payment_timeout_s, now)
    order = _order_out(order_id, row, priced.items)
    event = None
    if payment_id is not None:
        order.payments.append(
            PaymentOut(id=payment_id, kind="PAYMENT", amount=order.paid_amount, created_at=now)
        )
        event = new_order_event(ORDER_PAID, order, user_id, now)
    outcome = repository.write_order(
        conn,
        {**row, "id": order_id},
        priced.lines,
        priced.items,
        payment_id=payment_id,
        event=event,
    )
    for variant_id, quantity in priced.lines:
        if variant_id not in outcome.stocked:
            raise _short_line(tx, gate, variant_id, quantity)
    tx.after_commit(partial(gate.stock_changed, {i.product_id for i in priced.items}))
    if body.user_coupon_id is not None and not outcome.coupon_used:
        raise CouponNotUsable("Coupon was used concurrently")
    if event is not None:
        if outcome.balance is None:
            current = get_balance(conn, user_id)
            raise InsufficientBalance(required=order.paid_amount, balance=current)
        sold = [(i.product_id, i.quantity) for i in order.items]
        _book_sale(tx, ranking, event[0], sold, now, 1)
    return order


def _place_order(
    tx: Tx,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    body: OrderIn,
    payment_timeout_s: int,
    now: datetime | None,
) -> OrderOut:
    """Admit the lines at the stock gate, then validate, price and write."""
    lines = resolve_lines(tx.conn, body)
    short = gate.reserve(tx.conn, lines)
    if short is not None:
        variant_id, available = short
        requested = dict(lines)[variant_id]
        raise OutOfStock(variant_id=variant_id, requested=requested, available=available)
    tx.after_rollback(lambda: gate.release(lines))

    now = utcnow() if now is None else now
    reads = _validate(tx.conn, user_id, body, lines, now)
    priced = _price(tx.conn, user_id, body, lines, reads, now)
    if reads.order_id is not None:
        return _write_at_once(tx, gate, ranking, user_id, body, priced, payment_timeout_s, now)
    return _write(tx, gate, ranking, user_id, body, priced, payment_timeout_s, now)


def _book_sale(
    tx: Tx,
    ranking: RankingService,
    event_id: str,
    sold: list[tuple[int, int]],
    paid_at: datetime,
    sign: int,
) -> None:
    """The ranking's bookkeeping of a sale (``sign`` 1) or its cancellation (-1), in
    one place: this process claims the outbox event (its follower skips it), gives
    the claim back if the transaction rolls back, and records ``sold``
    (``[(product_id, units)]``) in the bucket of ``paid_at`` once it commits."""
    ranking.claim(event_id)
    tx.after_rollback(lambda: ranking.unclaim(event_id))
    tx.after_commit(lambda: ranking.record_sale(sold, paid_at, sign=sign))


def _take_payment(
    tx: Tx, ranking: RankingService, user_id: int, order: OrderOut, now: datetime
) -> None:
    """Debit the wallet, append the PAYMENT, write ``order.paid``; ``order`` gains the payment."""
    debit(tx.conn, user_id, order.paid_amount, order.order_id, now)
    payment_id = repository.insert_payment(
        tx.conn, order.order_id, user_id, "PAYMENT", order.paid_amount, now
    )
    order.payments.append(
        PaymentOut(id=payment_id, kind="PAYMENT", amount=order.paid_amount, created_at=now)
    )
    event_id = add_order_event(tx.conn, ORDER_PAID, order, user_id, now)
    sold = [(i.product_id, i.quantity) for i in order.items]
    _book_sale(tx, ranking, event_id, sold, now, 1)


def _locked_order(conn: Connection, user_id: int, order_id: int) -> tuple[Any, int]:
    """The caller's order row and wallet balance, both locked for update (wallet first:
    the same lock order as placing an order).

    Raises:
        OrderNotFound: no such order, or another user's (404).
    """
    balance = repository.lock_wallet(conn, user_id)
    row = repository.lock_order(conn, user_id, order_id)
    if row is None:
        raise OrderNotFound(order_id=order_id)
    return row, int(balance or 0)


async def pay_order(
    session: AsyncSession,
    ranking: RankingService,
    user_id: int,
    order_id: int,
    *,
    now: datetime | None = None,
) -> OrderOut:
    """:func:`pay_order_op` in ``session``'s transaction."""
    op = partial(pay_order_op, ranking=ranking, user_id=user_id, order_id=order_id, now=now)
    return await run_in_session(session, op)


def pay_order_op(
    tx: Tx, *, ranking: RankingService, user_id: int, order_id: int, now: datetime | None = None
) -> OrderOut:
    """Pay the caller's PENDING order from the wallet (``POST /orders/{id}/payment``).

    The status change is conditional (``WHERE status = 'PENDING' AND expires_at >
    now``), so a payment racing the expiry sweeper ends in exactly one of PAID or
    EXPIRED.

    Raises:
        OrderNotFound: not the caller's order (404).
        OrderNotPayable: not PENDING, or past ``expires_at`` (409; details status).
        InsufficientBalance: the wallet is short; the order stays PENDING (409).
    """
    now = utcnow() if now is None else now
    row, balance = _locked_order(tx.conn, user_id, order_id)
    if row.status != "PENDING" or row.expires_at is None or row.expires_at <= now:
        status = "EXPIRED" if row.status == "PENDING" else row.status
        raise OrderNotPayable(order_id=order_id, status=status)
    rules.check_balance(balance, row.paid_amount)
    changed = repository.mark_paid(tx.conn, order_id, now)
    if changed is None:
        raise OrderNotPayable(order_id=order_id, status="EXPIRED")
    order = load_orders(tx.conn, [changed])[0]
    _take_payment(tx, ranking, user_id, order, now)
    return order


def _release_holdings(
    tx: Tx, gate: StockGate, order_id: int, user_coupon_id: int | None, now: datetime
) -> list[tuple[int, int, int]]:
    """Put an order's units back (RELEASE movements) and return its coupon.

    The coupon goes back to ISSUED while it is still valid, else EXPIRED. The gate
    gets the units back once the writes are in
    (:meth:`flashsale.db.writer.Tx.after_release`). Returns the order's lines.
    """
    conn = tx.conn
    lines = repository.order_lines(conn, order_id)
    for variant_id, _product_id, quantity in lines:
        repository.put_back_stock(conn, variant_id, quantity)
    repository.insert_movements(conn, order_id, "RELEASE", [(v, q) for v, _p, q in lines], now)
    if user_coupon_id is not None:
        repository.return_coupon(conn, user_coupon_id, now)
    released = [(v, q) for v, _p, q in lines]
    # At once in a writer batch (its next orders may take these units), undone if the
    # batch fails; after the commit in an async session (seed, CLI).
    tx.after_release(lambda: gate.release(released), undo=lambda: gate.withdraw(released))
    tx.after_commit(partial(gate.stock_changed, {p for _v, p, _q in lines}))
    return lines


async def cancel_order(
    session: AsyncSession,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    order_id: int,
    *,
    now: datetime | None = None,
) -> OrderOut:
    """:func:`cancel_order_op` in ``session``'s transaction."""
    op = partial(
        cancel_order_op, gate=gate, ranking=ranking, user_id=user_id, order_id=order_id, now=now
    )
    return await run_in_session(session, op)


def cancel_order_op(
    tx: Tx,
    *,
    gate: StockGate,
    ranking: RankingService,
    user_id: int,
    order_id: int,
    now: datetime | None = None,
) -> OrderOut:
    """Cancel the caller's order in one transaction (``POST /orders/{id}/cancel``).

    PENDING: its stock and coupon are released. PAID: additionally the paid
    amount is refunded (REFUND ledger row and REFUND payment), its sales are
    subtracted from the ranking and an ``order.cancelled`` event is written.
    Any failure rolls all of it back.

    Raises:
        OrderNotFound: not the caller's order (404).
        OrderNotCancellable: already CANCELLED or EXPIRED (409; details status).
    """
    now = utcnow() if now is None else now
    conn = tx.conn
    row, _balance = _locked_order(conn, user_id, order_id)
    if row.status not in ("PENDING", "PAID"):
        raise OrderNotCancellable(order_id=order_id, status=row.status)
    changed = repository.mark_cancelled(conn, order_id, row.status, now)
    if changed is None:  # changed since it was read (another instance's sweeper)
        raise OrderNotCancellable(order_id=order_id, status="CHANGED")
    lines = _release_holdings(tx, gate, order_id, row.user_coupon_id, now)
    if row.status == "PAID":
        refund(conn, user_id, row.paid_amount, order_id, now)
        repository.insert_payment(conn, order_id, user_id, "REFUND", row.paid_amount, now)
    order = load_orders(conn, [changed])[0]
    if row.status == "PAID":
        event_id = add_order_event(conn, ORDER_CANCELLED, order, user_id, now)
        # Subtracted in the bucket where the sale was counted, so the window stays exact.
        _book_sale(tx, ranking, event_id, [(p, q) for _v, p, q in lines], row.paid_at, -1)
    return order


async def order_variant_ids(session: AsyncSession, order_id: int) -> list[int]:
    """The variant ids of an order's lines (any user's: a lock hint, not an answer)."""
    return await run_in_session(
        session, lambda tx: [v for v, _p, _q in repository.order_lines(tx.conn, order_id)]
    )


async def has_overdue(session: AsyncSession, now: datetime | None = None) -> bool:
    """Whether any PENDING order is past ``expires_at`` (a cheap read before sweeping)."""
    at = utcnow() if now is None else now
    return await run_in_session(session, lambda tx: bool(repository.overdue(tx.conn, at, 1)))


async def expire_overdue(
    session: AsyncSession, gate: StockGate, *, now: datetime | None = None, limit: int = 50
) -> list[int]:
    """:func:`expire_overdue_op` in ``session``'s transaction."""
    return await run_in_session(
        session, partial(expire_overdue_op, gate=gate, now=now, limit=limit)
    )


def expire_overdue_op(
    tx: Tx, *, gate: StockGate, now: datetime | None = None, limit: int = 50
) -> list[int]:
    """Expire up to ``limit`` PENDING orders past ``expires_at``; returns their ids.

    Each order's status change is conditional (``WHERE status = 'PENDING' AND
    expires_at <= now``): when several instances sweep at the same time, or a
    payment races the sweep, exactly one wins and the stock and coupon are
    released exactly once.
    """
    now = utcnow() if now is None else now
    expired = []
    for order_id, user_coupon_id in repository.overdue(tx.conn, now, limit):
        if repository.mark_expired(tx.conn, order_id, now):
            _release_holdings(tx, gate, order_id, user_coupon_id, now)
            expired.append(order_id)
    return expired


def load_orders(conn: Connection, order_rows: Sequence[Any]) -> list[OrderOut]:
    """Order rows with their items and payments (two queries for any number of orders)."""
    ids = [r.id for r in order_rows]
    if not ids:
        return []
    item_rows, payment_rows = repository.items_and_payments(conn, ids)
    items: dict[int, list[OrderItemOut]] = defaultdict(list)
    for i in item_rows:
        items[i.order_id].append(OrderItemOut.model_validate(i._mapping))
    pays: dict[int, list[PaymentOut]] = defaultdict(list)
    for p in payment_rows:
        pays[p.order_id].append(PaymentOut.model_validate(p._mapping))
    return [
        OrderOut(
            order_id=r.id,
            status=r.status,
            items=items[r.id],
            total_amount=r.total_amount,
            discount_amount=r.discount_amount,
            paid_amount=r.paid_amount,
            user_coupon_id=r.user_coupon_id,
            created_at=r.created_at,
            paid_at=r.paid_at,
            expires_at=r.expires_at,
            payments=pays[r.id],
        )
        for r in order_rows
    ]


async def get_order(session: AsyncSession, user_id: int, order_id: int) -> OrderOut:
    """The caller's order.

    Raises:
        OrderNotFound: no such order, or another user's (404).
    """

    def read(tx: Tx) -> OrderOut:
        row = repository.order_row(tx.conn, user_id, order_id)
        if row is None:
            raise OrderNotFound(order_id=order_id)
        return load_orders(tx.conn, [row])[0]

    return await run_in_session(session, read)


async def list_orders(
    session: AsyncSession, user_id: int, *, limit: int, before_id: int | None
) -> tuple[list[OrderOut], bool]:
    """The caller's orders, newest first; returns ``(orders, has_more)``."""

    def read(tx: Tx) -> tuple[list[OrderOut], bool]:
        rows = repository.order_rows(tx.conn, user_id, limit=limit + 1, before_id=before_id)
        return load_orders(tx.conn, rows[:limit]), len(rows) > limit

    return await run_in_session(session, read)
