"""The analysis frames and their loaders from a Flashsale database.

Every tool in :mod:`flashsale.analysis` works on one **sales frame**: one row per
(order, product) sale line, whatever the source (a Flashsale database through
:func:`load_sales`, a shop's "Online Retail" export through
:func:`flashsale.analysis.online_retail.read_online_retail`).

========================  ========================  ==============================================
column                    dtype                     meaning
========================  ========================  ==============================================
``order_id``              ``int64``                 the order (invoice) of the line
``user_id``               ``Int64`` (nullable)      the buyer; ``<NA>`` when the source has none
``product_id``            ``int64``                 the product; the ranking's id
``product_name``          ``string``                the name as sold (order item snapshot)
``quantity``              ``int64``                 units, signed: < 0 on cancellation lines
``amount``                ``int64``                 line amount, signed, integer money (KRW for
                                                    Flashsale: before the order's coupon discount)
``paid_at``               ``datetime64[ns, UTC]``   when the line counts in a ranking
``status``                ``string``                ``"PAID"`` (a sale) or ``"CANCELLED"``
========================  ========================  ==============================================

Cancellations are explicit rows, never silently dropped: a paid order that was
cancelled gives its ``PAID`` line and a ``CANCELLED`` line with the opposite
quantity and amount. By default (``cancellations="restate"``) the cancellation
line carries the sale's own ``paid_at``, so the sale counts nowhere -- the
service's rule: its ranking subtracts a cancelled sale from the sale's bucket,
and at rest it equals the SQL over PAID orders (docs/invariants.md#ranking).
``cancellations="at_cancel"`` dates it at ``cancelled_at`` instead, which shows
the ranking as it was served live between the payment and the cancellation.
Orders never paid (PENDING, EXPIRED, cancelled while PENDING) are not sales.

The loaders use a synchronous engine and ``pandas.read_sql`` on SQLAlchemy Core
statements, so the column types (UTC times on SQLite too) come from the models.
They never write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pandas as pd
from pandas.api.types import pandas_dtype
from sqlalchemy import Select, and_, func, select

from flashsale.db.engine import make_sync_engine
from flashsale.db.models import order_items, orders, products, user_coupons, variants

#: The sales frame's columns and dtypes (module docstring).
SALES_COLUMNS: dict[str, str] = {
    "order_id": "int64",
    "user_id": "Int64",
    "product_id": "int64",
    "product_name": "string",
    "quantity": "int64",
    "amount": "int64",
    "paid_at": "datetime64[ns, UTC]",
    "status": "string",
}

#: The line statuses of a sales frame.
SALE_STATUSES = ("PAID", "CANCELLED")

Cancellations = Literal["restate", "at_cancel"]

TimeLike = datetime | pd.Timestamp | str


def utc_timestamp(value: TimeLike) -> pd.Timestamp:
    """``value`` as a UTC ``Timestamp``.

    Raises:
        ValueError: a naive time (Flashsale times are UTC; say so explicitly).
    """
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"naive time {value!r}: give a timezone-aware time (UTC)")
    return ts.tz_convert("UTC")


def to_utc_ns(values: pd.Series) -> pd.Series:
    """Aware datetimes (any unit, any zone) as ``datetime64[ns, UTC]``."""
    # pandas 3 infers microseconds from datetime objects; the frames promise ns.
    return pd.to_datetime(values, utc=True).dt.as_unit("ns")


def astype(values: pd.Series, dtype: str) -> pd.Series:
    """``values`` cast to ``dtype`` given by name (as in :data:`SALES_COLUMNS`)."""
    return values.astype(pandas_dtype(dtype))


def empty_sales() -> pd.DataFrame:
    """A sales frame with no rows (the schema of the module docstring)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SALES_COLUMNS.items()})


def _read_sql(database_url: str, stmt: Any) -> pd.DataFrame:
    """Run one read-only ``stmt`` on ``database_url`` into a DataFrame (engine disposed after)."""
    engine = make_sync_engine(database_url, immediate=False)
    try:
        with engine.connect() as conn:
            return pd.read_sql(stmt, conn)
    finally:
        engine.dispose()


def _typed(raw: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """``raw``'s ``columns`` cast to their dtypes (times to ``datetime64[ns, UTC]``)."""
    return pd.DataFrame(
        {
            c: to_utc_ns(raw[c]) if t.startswith("datetime64") else astype(raw[c], t)
            for c, t in columns.items()
        },
        index=pd.RangeIndex(len(raw)),
    )


def check_sales(sales: pd.DataFrame) -> None:
    """Check that ``sales`` has the sales frame's columns and dtypes.

    Raises:
        ValueError: a missing column, a wrong dtype, a status other than PAID or
            CANCELLED, or a missing ``paid_at``.
    """
    missing = [c for c in SALES_COLUMNS if c not in sales.columns]
    if missing:
        raise ValueError(f"not a sales frame: missing columns {missing}")
    wrong = {
        c: str(sales[c].dtype)
        for c, t in SALES_COLUMNS.items()
        if str(sales[c].dtype) != str(pd.Series(dtype=t).dtype)
    }
    if wrong:
        raise ValueError(f"not a sales frame: wrong dtypes {wrong} (expected {SALES_COLUMNS})")
    bad = ~sales["status"].isin(SALE_STATUSES)
    if bad.any():
        raise ValueError(f"status must be PAID or CANCELLED, found {set(sales['status'][bad])}")
    if sales["paid_at"].isna().any():
        raise ValueError("paid_at must be set on every line")


def _sales_select(since: datetime | None, until: datetime | None) -> Select[tuple[object, ...]]:
    # Paid orders only; a cancellation after payment keeps paid_at (orders never
    # paid are not sales). Lines of one product in one order (several variants)
    # are summed: the ranking counts (order, product), like the service.
    stmt = (
        select(
            orders.c.id.label("order_id"),
            orders.c.user_id,
            order_items.c.product_id,
            func.min(order_items.c.product_name).label("product_name"),
            func.sum(order_items.c.quantity).label("quantity"),
            func.sum(order_items.c.amount).label("amount"),
            orders.c.paid_at,
            orders.c.cancelled_at,
            orders.c.status,
        )
        .join(order_items, order_items.c.order_id == orders.c.id)
        .where(orders.c.paid_at.is_not(None), orders.c.status.in_(SALE_STATUSES))
        .group_by(
            orders.c.id,
            orders.c.user_id,
            order_items.c.product_id,
            orders.c.paid_at,
            orders.c.cancelled_at,
            orders.c.status,
        )
        .order_by(orders.c.paid_at, orders.c.id, order_items.c.product_id)
    )
    # A cancellation dated at_cancel may fall in the range while its sale does
    # not: select on either time here, cut on the event time in pandas.
    if since is not None:
        stmt = stmt.where(
            (orders.c.paid_at >= since)
            | and_(orders.c.cancelled_at.is_not(None), orders.c.cancelled_at >= since)
        )
    if until is not None:
        stmt = stmt.where(orders.c.paid_at < until)
    return stmt


def load_sales(
    database_url: str,
    *,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    cancellations: Cancellations = "restate",
) -> pd.DataFrame:
    """The sales frame of a Flashsale database (SQLite or PostgreSQL), read-only.

    Args:
        database_url: plain form (``sqlite:///path.db``, ``postgresql://...``), as
            ``FLASHSALE_DATABASE_URL``.
        since, until: keep lines whose ``paid_at`` is in ``[since, until)``; aware times.
        cancellations: ``"restate"`` (default) dates a cancellation line at the
            sale's ``paid_at``; ``"at_cancel"`` at the order's ``cancelled_at``.

    Returns:
        The sales frame (module docstring), ordered by ``paid_at``, ``order_id``,
        ``product_id``; ``amount`` in KRW before the order's coupon discount.

    Raises:
        ValueError: an unsupported database URL, a naive ``since``/``until`` or an
            unknown ``cancellations`` mode.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read (no schema:
            run ``flashsale migrate``).
    """
    if cancellations not in ("restate", "at_cancel"):
        raise ValueError(f"cancellations must be 'restate' or 'at_cancel', not {cancellations!r}")
    lo = None if since is None else utc_timestamp(since)
    hi = None if until is None else utc_timestamp(until)
    stmt = _sales_select(
        None if lo is None else lo.to_pydatetime(), None if hi is None else hi.to_pydatetime()
    )
    raw = _read_sql(database_url, stmt)
    if raw.empty:
        return empty_sales()

    paid_at = to_utc_ns(raw["paid_at"])
    sold = pd.DataFrame(
        {
            "order_id": raw["order_id"].astype("int64"),
            "user_id": raw["user_id"].astype("Int64"),
            "product_id": raw["product_id"].astype("int64"),
            "product_name": raw["product_name"].astype("string"),
            "quantity": raw["quantity"].astype("int64"),
            "amount": raw["amount"].astype("int64"),
            "paid_at": paid_at,
            "status": pd.Series("PAID", index=raw.index, dtype="string"),
        }
    )
    cancelled = (raw["status"] == "CANCELLED").to_numpy()
    undo = sold[cancelled].copy()
    undo["quantity"] = -undo["quantity"]
    undo["amount"] = -undo["amount"]
    undo["status"] = pd.Series("CANCELLED", index=undo.index, dtype="string")
    if cancellations == "at_cancel":
        cancelled_at = to_utc_ns(raw.loc[cancelled, "cancelled_at"])
        # A cancelled order without cancelled_at (older rows): undo it where it was sold.
        undo["paid_at"] = cancelled_at.fillna(undo["paid_at"])
    sales = pd.concat([sold, undo], ignore_index=True)
    if lo is not None:
        sales = sales[sales["paid_at"] >= lo]
    if hi is not None:
        sales = sales[sales["paid_at"] < hi]
    sales = sales.sort_values(["paid_at", "order_id", "product_id"], kind="stable")
    return sales.reset_index(drop=True)


#: The products frame's columns and dtypes (:func:`load_products`).
PRODUCT_COLUMNS: dict[str, str] = {
    "product_id": "int64",
    "product_name": "string",
    "price": "int64",
    "stock": "int64",
    "variants": "int64",
    "per_user_limit": "Int64",
    "sale_starts_at": "datetime64[ns, UTC]",
    "sale_ends_at": "datetime64[ns, UTC]",
}


def load_products(database_url: str) -> pd.DataFrame:
    """The catalog of a Flashsale database, one row per product, read-only.

    Returns:
        Columns ``product_id`` (int64), ``product_name`` (string), ``price``
        (int64 KRW, the lowest variant price), ``stock`` (int64, units left over
        all variants), ``variants`` (int64), ``per_user_limit`` (Int64, ``<NA>``
        when unlimited), ``sale_starts_at`` and ``sale_ends_at``
        (``datetime64[ns, UTC]``, ``NaT`` when open-ended), ordered by ``product_id``.

    Raises:
        ValueError: an unsupported database URL.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    stmt = (
        select(
            products.c.id.label("product_id"),
            products.c.name.label("product_name"),
            func.min(variants.c.price).label("price"),
            func.sum(variants.c.stock).label("stock"),
            func.count(variants.c.id).label("variants"),
            products.c.per_user_limit,
            products.c.sale_starts_at,
            products.c.sale_ends_at,
        )
        .join(variants, variants.c.product_id == products.c.id)
        .group_by(
            products.c.id,
            products.c.name,
            products.c.per_user_limit,
            products.c.sale_starts_at,
            products.c.sale_ends_at,
        )
        .order_by(products.c.id)
    )
    raw = _read_sql(database_url, stmt)
    return _typed(raw, PRODUCT_COLUMNS)


#: The orders frame's columns and dtypes (:func:`load_orders`).
ORDER_COLUMNS: dict[str, str] = {
    "order_id": "int64",
    "user_id": "int64",
    "status": "string",
    "total_amount": "int64",
    "discount_amount": "int64",
    "paid_amount": "int64",
    "coupon_id": "Int64",
    "units": "int64",
    "created_at": "datetime64[ns, UTC]",
    "paid_at": "datetime64[ns, UTC]",
    "cancelled_at": "datetime64[ns, UTC]",
}


def load_orders(database_url: str) -> pd.DataFrame:
    """Every order of a Flashsale database, one row per order, read-only.

    Returns:
        Columns ``order_id``, ``user_id`` (int64), ``status`` (string: PENDING,
        PAID, CANCELLED, EXPIRED), ``total_amount``, ``discount_amount``,
        ``paid_amount`` (int64 KRW), ``coupon_id`` (Int64, the coupon used;
        ``<NA>`` without one), ``units`` (int64, units over all lines),
        ``created_at``, ``paid_at``, ``cancelled_at`` (``datetime64[ns, UTC]``,
        ``NaT`` when not reached), ordered by ``order_id``.

    Raises:
        ValueError: an unsupported database URL.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    units = (
        select(order_items.c.order_id, func.sum(order_items.c.quantity).label("units"))
        .group_by(order_items.c.order_id)
        .subquery()
    )
    stmt = (
        select(
            orders.c.id.label("order_id"),
            orders.c.user_id,
            orders.c.status,
            orders.c.total_amount,
            orders.c.discount_amount,
            orders.c.paid_amount,
            user_coupons.c.coupon_id,
            func.coalesce(units.c.units, 0).label("units"),
            orders.c.created_at,
            orders.c.paid_at,
            orders.c.cancelled_at,
        )
        .outerjoin(units, units.c.order_id == orders.c.id)
        .outerjoin(user_coupons, user_coupons.c.id == orders.c.user_coupon_id)
        .order_by(orders.c.id)
    )
    raw = _read_sql(database_url, stmt)
    return _typed(raw, ORDER_COLUMNS)
