"""The order domain's SQL: every statement the order path runs, and nothing else.

:mod:`flashsale.orders.service` reads as the order's steps and
:mod:`flashsale.orders.rules` as its rules; this module is how they reach the
database. Functions take a synchronous :class:`~sqlalchemy.Connection`: they run in the
group-commit writer's thread, or inside a request's session through
:func:`flashsale.db.writer.run_in_session`. The hot statements are built once and
run as :class:`~flashsale.db.prepared.Prepared` statements (compiled once per dialect,
executed on the driver's cursor): through ``Connection.execute`` each would cost
several times more Python than SQLite spends running it, in the writer thread that
every write of the process waits for. Grants are conditional writes (``stock >= :q``,
``status = 'ISSUED'``, ``status = 'PENDING' AND expires_at > :now``) whose result says
whether the database confirmed them. Money is integer KRW; times are UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Connection,
    Integer,
    String,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)

from flashsale.db.models import (
    coupons,
    inventory_movements,
    order_items,
    orders,
    payments,
    products,
    user_coupons,
    variants,
    wallets,
)
from flashsale.db.prepared import Prepared
from flashsale.db.types import UTCDateTime
from flashsale.orders.schemas import OrderItemOut

#: Orders holding units against the per-user purchase limit.
HOLDING_STATUSES = ("PAID", "PENDING")

_LOCK_WALLET = Prepared(
    select(wallets.c.balance).where(wallets.c.user_id == bindparam("p_user")).with_for_update()
)
_ORDER_VARIANTS = Prepared(
    select(
        variants.c.id,
        variants.c.name.label("variant_name"),
        variants.c.price,
        variants.c.product_id,
        products.c.name.label("product_name"),
        products.c.sale_starts_at,
        products.c.sale_ends_at,
        products.c.per_user_limit,
    )
    .join(products, products.c.id == variants.c.product_id)
    .where(variants.c.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(variants.c.id),
    expanding=["p_ids"],
)
_PRODUCT_VARIANTS = Prepared(
    select(variants.c.id).where(variants.c.product_id == bindparam("p_product")).limit(2)
)
_HELD_UNITS = Prepared(
    select(order_items.c.product_id, func.sum(order_items.c.quantity))
    .join(orders, orders.c.id == order_items.c.order_id)
    .where(
        orders.c.user_id == bindparam("p_user"),
        orders.c.status.in_(HOLDING_STATUSES),
        order_items.c.product_id.in_(bindparam("p_products", expanding=True)),
    )
    .group_by(order_items.c.product_id),
    expanding=["p_products"],
)
_USER_COUPON = Prepared(
    select(
        user_coupons.c.user_id,
        user_coupons.c.status,
        user_coupons.c.expires_at,
        coupons.c.discount_type,
        coupons.c.discount_value,
        coupons.c.max_discount_amount,
        coupons.c.min_order_amount,
    )
    .join(coupons, coupons.c.id == user_coupons.c.coupon_id)
    .where(user_coupons.c.id == bindparam("p_user_coupon"))
)
_INSERT_ORDER = Prepared(
    insert(orders).returning(orders.c.id),
    columns=[
        "user_id",
        "status",
        "total_amount",
        "discount_amount",
        "paid_amount",
        "user_coupon_id",
        "created_at",
        "paid_at",
        "expires_at",
    ],
)
_INSERT_ITEMS = Prepared(
    insert(order_items),
    columns=[
        "order_id",
        "product_id",
        "variant_id",
        "product_name",
        "variant_name",
        "unit_price",
        "quantity",
        "amount",
    ],
)
_INSERT_MOVEMENTS = Prepared(
    insert(inventory_movements),
    columns=["variant_id", "kind", "quantity", "order_id", "created_at"],
)
_TAKE_STOCK = Prepared(
    update(variants)
    .where(variants.c.id == bindparam("p_variant"), variants.c.stock >= bindparam("p_quantity"))
    .values(stock=variants.c.stock - bindparam("p_quantity"))
    .returning(variants.c.stock)
)
_STOCK_OF = Prepared(select(variants.c.stock).where(variants.c.id == bindparam("p_variant")))
_USE_COUPON = Prepared(
    update(user_coupons)
    .where(user_coupons.c.id == bindparam("p_user_coupon"), user_coupons.c.status == "ISSUED")
    .values(status="USED", used_at=bindparam("p_now"), order_id=bindparam("p_order"))
    .returning(user_coupons.c.id)
)
_INSERT_PAYMENT = Prepared(
    insert(payments).returning(payments.c.id),
    columns=["order_id", "user_id", "kind", "amount", "created_at"],
)
_LOCK_ORDER = Prepared(
    select(orders)
    .where(orders.c.id == bindparam("p_order"), orders.c.user_id == bindparam("p_user"))
    .with_for_update()
)
_MARK_PAID = Prepared(
    update(orders)
    .where(
        orders.c.id == bindparam("p_order"),
        orders.c.status == "PENDING",
        orders.c.expires_at > bindparam("p_now"),
    )
    .values(status="PAID", paid_at=bindparam("p_now"))
    .returning(*orders.c)
)
_MARK_CANCELLED = Prepared(
    update(orders)
    .where(orders.c.id == bindparam("p_order"), orders.c.status == bindparam("p_status"))
    .values(status="CANCELLED", cancelled_at=bindparam("p_now"))
    .returning(*orders.c)
)
_MARK_EXPIRED = Prepared(
    update(orders)
    .where(
        orders.c.id == bindparam("p_order"),
        orders.c.status == "PENDING",
        orders.c.expires_at <= bindparam("p_now"),
    )
    .values(status="EXPIRED")
    .returning(orders.c.id)
)
_OVERDUE = Prepared(
    select(orders.c.id, orders.c.user_coupon_id)
    .where(orders.c.status == "PENDING", orders.c.expires_at <= bindparam("p_now"))
    .order_by(orders.c.expires_at, orders.c.id)
    .limit(bindparam("p_limit"))
)
_ORDER_LINES = Prepared(
    select(order_items.c.variant_id, order_items.c.product_id, order_items.c.quantity)
    .where(order_items.c.order_id == bindparam("p_order"))
    .order_by(order_items.c.variant_id)
)
_PUT_BACK_STOCK = Prepared(
    update(variants)
    .where(variants.c.id == bindparam("p_variant"))
    .values(stock=variants.c.stock + bindparam("p_quantity"))
)
# The coupon goes back to its holder: ISSUED while still valid, else EXPIRED.
_RETURN_COUPON = Prepared(
    update(user_coupons)
    .where(user_coupons.c.id == bindparam("p_user_coupon"), user_coupons.c.status == "USED")
    .values(
        status=case((user_coupons.c.expires_at > bindparam("p_now"), "ISSUED"), else_="EXPIRED"),
        used_at=None,
        order_id=None,
    )
)


# -- PostgreSQL: an order in two statements ---------------------------------------------
#
# Each statement is a round trip (≈ 100 µs of psycopg's CPU in the writer thread, and
# the writer waits for it), so on PostgreSQL an order reads what its rules need in one
# statement (the wallet locked, the variants with their products, and the ids the new
# order and payment will have) and writes in one more: a data-modifying CTE whose
# conditional writes (``stock >= quantity``, coupon still ``ISSUED``, ``balance >=
# paid``) report what they confirmed. When one of them did not, the caller raises the
# refusal and the writer rolls the operation's savepoint back, with everything the
# statement wrote. SQLite, in process, runs the statements one by one (below).

_ORDER_READS_PG = Prepared(
    text(
        """
        WITH h AS MATERIALIZED (
            SELECT (SELECT w.balance FROM wallets AS w
                    WHERE w.user_id = CAST(:p_user AS BIGINT) FOR UPDATE) AS balance,
                   nextval(pg_get_serial_sequence('orders', 'id')) AS order_id,
                   CASE WHEN CAST(:p_pay AS BOOLEAN)
                        THEN nextval(pg_get_serial_sequence('payments', 'id')) END AS payment_id
        )
        SELECT h.balance, h.order_id, h.payment_id, v.id, v.name AS variant_name, v.price,
               v.product_id, p.name AS product_name, p.sale_starts_at, p.sale_ends_at,
               p.per_user_limit
        FROM h LEFT JOIN (variants AS v JOIN products AS p ON p.id = v.product_id)
             ON v.id = ANY(CAST(:p_ids AS BIGINT[]))
        ORDER BY v.id
        """
    ).columns(
        balance=BigInteger,
        order_id=BigInteger,
        payment_id=BigInteger,
        id=BigInteger,
        variant_name=String,
        price=BigInteger,
        product_id=BigInteger,
        product_name=String,
        sale_starts_at=UTCDateTime,
        sale_ends_at=UTCDateTime,
        per_user_limit=Integer,
    )
)

_WRITE_ORDER_PG = Prepared(
    text(
        """
        WITH l AS (
            SELECT * FROM unnest(CAST(:p_variants AS BIGINT[]), CAST(:p_quantities AS INTEGER[]))
                AS l(variant_id, quantity)
        ), s AS (
            UPDATE variants AS v SET stock = v.stock - l.quantity FROM l
            WHERE v.id = l.variant_id AND v.stock >= l.quantity
            RETURNING v.id
        ), o AS (
            INSERT INTO orders (id, user_id, status, total_amount, discount_amount, paid_amount,
                                user_coupon_id, created_at, paid_at, expires_at)
            VALUES (:p_order, :p_user, :p_status, :p_total, :p_discount, :p_paid,
                    :p_user_coupon, :p_now, :p_paid_at, :p_expires_at)
        ), i AS (
            INSERT INTO order_items (order_id, product_id, variant_id, product_name,
                                     variant_name, unit_price, quantity, amount)
            SELECT CAST(:p_order AS BIGINT), t.product_id, t.variant_id, t.product_name,
                   t.variant_name, t.unit_price, t.quantity, t.amount
            FROM unnest(CAST(:i_products AS BIGINT[]), CAST(:i_variants AS BIGINT[]),
                        CAST(:i_product_names AS VARCHAR[]), CAST(:i_variant_names AS VARCHAR[]),
                        CAST(:i_prices AS BIGINT[]), CAST(:i_quantities AS INTEGER[]),
                        CAST(:i_amounts AS BIGINT[]))
                 WITH ORDINALITY AS t(product_id, variant_id, product_name, variant_name,
                                      unit_price, quantity, amount, n)
            ORDER BY t.n
        ), m AS (
            INSERT INTO inventory_movements (variant_id, kind, quantity, order_id, created_at)
            SELECT l.variant_id, 'RESERVE', -l.quantity, CAST(:p_order AS BIGINT),
                   CAST(:p_now AS TIMESTAMPTZ)
            FROM l ORDER BY l.variant_id
        ), c AS (
            UPDATE user_coupons SET status = 'USED', used_at = :p_now, order_id = :p_order
            WHERE id = :p_user_coupon AND status = 'ISSUED'
            RETURNING id
        ), w AS (
            UPDATE wallets SET balance = balance - :p_paid, updated_at = :p_now
            WHERE user_id = :p_user AND balance >= :p_paid AND CAST(:p_pay AS BOOLEAN)
            RETURNING balance
        ), t AS (
            INSERT INTO wallet_transactions (user_id, type, amount, balance_after, order_id,
                                             created_at)
            SELECT CAST(:p_user AS BIGINT), 'PAYMENT', -CAST(:p_paid AS BIGINT), w.balance,
                   CAST(:p_order AS BIGINT), CAST(:p_now AS TIMESTAMPTZ)
            FROM w
        ), pm AS (
            INSERT INTO payments (id, order_id, user_id, kind, amount, created_at)
            SELECT CAST(:p_payment AS BIGINT), CAST(:p_order AS BIGINT), CAST(:p_user AS BIGINT),
                   'PAYMENT', CAST(:p_paid AS BIGINT), CAST(:p_now AS TIMESTAMPTZ)
            FROM w
        ), e AS (
            INSERT INTO outbox (event_id, type, order_id, payload, created_at, available_at,
                                attempts)
            SELECT CAST(:p_event AS VARCHAR), CAST(:p_event_type AS VARCHAR),
                   CAST(:p_order AS BIGINT), CAST(:p_payload AS TEXT),
                   CAST(:p_now AS TIMESTAMPTZ), CAST(:p_now AS TIMESTAMPTZ), 0
            FROM w
        )
        SELECT (SELECT array_agg(s.id) FROM s) AS stocked,
               EXISTS (SELECT 1 FROM c) AS coupon_used,
               (SELECT w.balance FROM w) AS balance
        """
    )
    .bindparams(
        bindparam("p_now", type_=UTCDateTime()),
        bindparam("p_paid_at", type_=UTCDateTime()),
        bindparam("p_expires_at", type_=UTCDateTime()),
    )
    .columns(stocked=ARRAY(BigInteger), coupon_used=Boolean, balance=BigInteger)
)


@dataclass(frozen=True)
class OrderReads:
    """What an order's rules need, read at the start of its transaction.

    Attributes:
        balance: the buyer's balance (KRW), the wallet row locked; None without a wallet.
        variants: rows of :class:`flashsale.orders.rules.VariantRow` for the ids that
            exist, by id.
        order_id: on PostgreSQL, the id the order will have (taken from its sequence
            now, so that its event can be written by the same statement); None on SQLite.
        payment_id: likewise for its PAYMENT (PostgreSQL, paid at once); else None.
    """

    balance: int | None
    variants: list[Any]
    order_id: int | None = None
    payment_id: int | None = None


def order_reads(
    conn: Connection, user_id: int, variant_ids: Sequence[int], *, pay: bool
) -> OrderReads:
    """Lock the buyer's wallet and read the order's variants (the lock order: wallet,
    then variants by id); on PostgreSQL in one statement that also takes the order's
    and payment's ids (see :func:`write_order`)."""
    if conn.dialect.name != "postgresql":
        return OrderReads(lock_wallet(conn, user_id), order_variants(conn, variant_ids))
    params = {"p_user": user_id, "p_pay": pay, "p_ids": list(variant_ids)}
    rows = _ORDER_READS_PG.rows(conn, params)
    head = rows[0]
    found = [r for r in rows if r.id is not None]
    return OrderReads(head.balance, found, head.order_id, head.payment_id)


@dataclass(frozen=True)
class WriteOutcome:
    """What :func:`write_order`'s conditional writes confirmed.

    Attributes:
        stocked: the variant ids whose units were taken (every line's when all were).
        coupon_used: the coupon went from ISSUED to USED (False when none was given).
        balance: the balance after the debit (KRW); None when nothing was debited
            (pay later, or the balance was short).
    """

    stocked: frozenset[int]
    coupon_used: bool
    balance: int | None


def write_order(
    conn: Connection,
    order: dict[str, Any],
    lines: Sequence[tuple[int, int]],
    items: Sequence[OrderItemOut],
    *,
    payment_id: int | None,
    event: tuple[str, str, str] | None,
) -> WriteOutcome:
    """Write a whole order in one statement (PostgreSQL): the ``orders`` row (``order``,
    with its ``id``), its items, the units of each ``(variant_id, quantity)`` line with
    their RESERVE movements, the coupon, and when ``payment_id`` is given the debit
    with its ledger row, the PAYMENT and the event ``(event_id, type, payload)``.

    Every grant is conditional; the outcome says which were confirmed. Whatever the
    outcome, the statement's other rows are written: a caller that refuses the order
    must roll back its savepoint.
    """
    params = {
        "p_order": order["id"],
        "p_user": order["user_id"],
        "p_status": order["status"],
        "p_total": order["total_amount"],
        "p_discount": order["discount_amount"],
        "p_paid": order["paid_amount"],
        "p_user_coupon": order["user_coupon_id"],
        "p_now": order["created_at"],
        "p_paid_at": order["paid_at"],
        "p_expires_at": order["expires_at"],
        "p_variants": [v for v, _ in lines],
        "p_quantities": [q for _, q in lines],
        "i_products": [i.product_id for i in items],
        "i_variants": [i.variant_id for i in items],
        "i_product_names": [i.product_name for i in items],
        "i_variant_names": [i.variant_name for i in items],
        "i_prices": [i.unit_price for i in items],
        "i_quantities": [i.quantity for i in items],
        "i_amounts": [i.amount for i in items],
        "p_pay": payment_id is not None,
        "p_payment": payment_id,
        "p_event": event[0] if event else None,
        "p_event_type": event[1] if event else None,
        "p_payload": event[2] if event else None,
    }
    row = _WRITE_ORDER_PG.first(conn, params)
    assert row is not None
    return WriteOutcome(frozenset(row.stocked or ()), bool(row.coupon_used), row.balance)


def variants_of_product(conn: Connection, product_id: int) -> list[int]:
    """Up to two variant ids of a product (enough to tell none, one or several)."""
    return [row.id for row in _PRODUCT_VARIANTS.rows(conn, {"p_product": product_id})]


def lock_wallet(conn: Connection, user_id: int) -> int | None:
    """The buyer's balance (KRW), the wallet row locked for update; None without one.

    Locked first in every order transaction: it serialises one user's orders
    (purchase limit, coupon use) on databases with row locks; a no-op on SQLite,
    whose write transactions are serialised already.
    """
    balance: int | None = _LOCK_WALLET.scalar(conn, {"p_user": user_id})
    return balance


def order_variants(conn: Connection, variant_ids: Sequence[int]) -> list[Any]:
    """Rows of :class:`flashsale.orders.rules.VariantRow` for the ids that exist, by id."""
    if not variant_ids:
        return []
    return _ORDER_VARIANTS.rows(conn, {"p_ids": list(variant_ids)})


def held_units(conn: Connection, user_id: int, product_ids: Sequence[int]) -> dict[int, int]:
    """Units of each product in the user's PAID and PENDING orders."""
    if not product_ids:
        return {}
    params = {"p_user": user_id, "p_products": sorted(product_ids)}
    return {p: int(q) for p, q in _HELD_UNITS.rows(conn, params)}


def user_coupon(conn: Connection, user_coupon_id: int) -> Any | None:
    """A user coupon joined with its coupon's terms, or None."""
    return _USER_COUPON.first(conn, {"p_user_coupon": user_coupon_id})


def insert_order(conn: Connection, row: dict[str, Any]) -> int:
    """Insert an ``orders`` row; returns its id."""
    order_id: int = _INSERT_ORDER.scalar_one(conn, row)
    return order_id


def take_stock(conn: Connection, variant_id: int, quantity: int) -> int | None:
    """Take ``quantity`` units if that many are left; the units left, or None when
    the database refused (fewer left)."""
    params = {"p_variant": variant_id, "p_quantity": quantity}
    left: int | None = _TAKE_STOCK.scalar(conn, params)
    return left


def stock_of(conn: Connection, variant_id: int) -> int:
    """Units of a variant left now."""
    return int(_STOCK_OF.scalar_one(conn, {"p_variant": variant_id}))


def put_back_stock(conn: Connection, variant_id: int, quantity: int) -> None:
    """Return ``quantity`` units of a variant (cancellation, expiry)."""
    _PUT_BACK_STOCK.run(conn, {"p_variant": variant_id, "p_quantity": quantity})


def insert_items(conn: Connection, order_id: int, items: Sequence[OrderItemOut]) -> None:
    """Insert an order's items (one statement for all of them)."""
    _INSERT_ITEMS.run_many(
        conn,
        [
            {
                "order_id": order_id,
                "product_id": i.product_id,
                "variant_id": i.variant_id,
                "product_name": i.product_name,
                "variant_name": i.variant_name,
                "unit_price": i.unit_price,
                "quantity": i.quantity,
                "amount": i.amount,
            }
            for i in items
        ],
    )


def insert_movements(
    conn: Connection, order_id: int, kind: str, lines: Sequence[tuple[int, int]], now: datetime
) -> None:
    """One inventory movement per ``(variant_id, signed quantity)`` line of an order:
    RESERVE lines are negative, RELEASE lines positive."""
    _INSERT_MOVEMENTS.run_many(
        conn,
        [
            {"variant_id": v, "kind": kind, "quantity": q, "order_id": order_id, "created_at": now}
            for v, q in lines
        ],
    )


def use_coupon(conn: Connection, user_coupon_id: int, order_id: int, now: datetime) -> bool:
    """Mark an ISSUED user coupon USED by the order; False when it is no longer ISSUED."""
    params = {"p_user_coupon": user_coupon_id, "p_now": now, "p_order": order_id}
    return _USE_COUPON.first(conn, params) is not None


def return_coupon(conn: Connection, user_coupon_id: int, now: datetime) -> None:
    """Give a USED coupon back: ISSUED while still valid at ``now``, else EXPIRED."""
    _RETURN_COUPON.run(conn, {"p_user_coupon": user_coupon_id, "p_now": now})


def insert_payment(
    conn: Connection, order_id: int, user_id: int, kind: str, amount: int, now: datetime
) -> int:
    """Append a PAYMENT or REFUND row; returns its id."""
    row = {
        "order_id": order_id,
        "user_id": user_id,
        "kind": kind,
        "amount": amount,
        "created_at": now,
    }
    payment_id: int = _INSERT_PAYMENT.scalar_one(conn, row)
    return payment_id


def lock_order(conn: Connection, user_id: int, order_id: int) -> Any | None:
    """The user's order row locked for update, or None (no such order, or another's)."""
    return _LOCK_ORDER.first(conn, {"p_order": order_id, "p_user": user_id})


def mark_paid(conn: Connection, order_id: int, now: datetime) -> Any | None:
    """PENDING and not yet due → PAID; the changed row, or None when it was not."""
    return _MARK_PAID.first(conn, {"p_order": order_id, "p_now": now})


def mark_cancelled(conn: Connection, order_id: int, status: str, now: datetime) -> Any | None:
    """``status`` → CANCELLED; the changed row, or None when the status had changed."""
    params = {"p_order": order_id, "p_now": now, "p_status": status}
    return _MARK_CANCELLED.first(conn, params)


def mark_expired(conn: Connection, order_id: int, now: datetime) -> bool:
    """PENDING and due → EXPIRED; False when it was not (paid, cancelled, or not due)."""
    return _MARK_EXPIRED.first(conn, {"p_order": order_id, "p_now": now}) is not None


def overdue(conn: Connection, now: datetime, limit: int) -> list[tuple[int, int | None]]:
    """``[(order_id, user_coupon_id)]`` of up to ``limit`` PENDING orders due at ``now``,
    the longest overdue first."""
    rows = _OVERDUE.rows(conn, {"p_now": now, "p_limit": limit})
    return [(order_id, user_coupon_id) for order_id, user_coupon_id in rows]


def order_lines(conn: Connection, order_id: int) -> list[tuple[int, int, int]]:
    """``[(variant_id, product_id, quantity)]`` of an order, by variant id (the lock order)."""
    result = _ORDER_LINES.rows(conn, {"p_order": order_id})
    return [(v, p, q) for v, p, q in result]


def items_and_payments(conn: Connection, order_ids: Sequence[int]) -> tuple[list[Any], list[Any]]:
    """The ``order_items`` and ``payments`` rows of the orders, each by id."""
    ids = list(order_ids)
    item_rows = (
        conn.execute(
            select(order_items).where(order_items.c.order_id.in_(ids)).order_by(order_items.c.id)
        )
    ).all()
    payment_rows = (
        conn.execute(select(payments).where(payments.c.order_id.in_(ids)).order_by(payments.c.id))
    ).all()
    return list(item_rows), list(payment_rows)


def order_row(conn: Connection, user_id: int, order_id: int) -> Any | None:
    """The user's order row, or None (no such order, or another's)."""
    stmt = select(orders).where(orders.c.id == order_id, orders.c.user_id == user_id)
    return (conn.execute(stmt)).first()


def order_rows(conn: Connection, user_id: int, *, limit: int, before_id: int | None) -> list[Any]:
    """Up to ``limit`` of the user's order rows with ids below ``before_id``, newest first."""
    stmt = select(orders).where(orders.c.user_id == user_id).order_by(orders.c.id.desc())
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    return list((conn.execute(stmt.limit(limit))).all())
