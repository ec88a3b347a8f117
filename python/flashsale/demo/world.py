"""What the demo knows: the seeded catalog and users, and every order it saw created.

The demo keeps its own account of the sale from the answers it got, then compares it
with what the service serves and stores: the popular ranking (units in orders that
stay PAID), every variant's stock (seeded minus units held by PAID or PENDING orders),
every wallet (charged - paid + refunded), every order's final status, and the events
the data platform received. Money is integer KRW, times are UTC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CatalogProduct",
    "CatalogVariant",
    "DemoUser",
    "KeyedRequest",
    "Lifecycle",
    "OrderSource",
    "OrderStatus",
    "TrackedOrder",
    "World",
    "parse_time",
]

#: An order's status (docs/data-model.md).
OrderStatus = Literal["PENDING", "PAID", "CANCELLED", "EXPIRED"]
#: Which part of the demo placed an order.
OrderSource = Literal["limited", "shopping", "cart", "hold", "resale"]


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` or offset) as an aware datetime; None if absent."""
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(slots=True)
class CatalogVariant:
    """A variant as the demo knows it (``price`` in KRW, ``stock`` as seeded)."""

    id: int
    product_id: int
    sku: str
    price: int
    stock: int


@dataclass(slots=True)
class CatalogProduct:
    """A product as the demo knows it."""

    id: int
    name: str
    variants: list[CatalogVariant]
    per_user_limit: int | None = None


@dataclass(slots=True, eq=False)
class DemoUser:
    """A seeded user.

    Attributes:
        index: position in the seeding order (0-based).
        email: login e-mail.
        user_id: id from ``POST /auth/signup``.
        headers: the ``Authorization: Bearer`` header to send.
        charged: KRW charged to the wallet.
        spent: KRW paid by this user's orders (``paid_amount`` sum, at payment).
        refunded: KRW refunded by cancellations of this user's paid orders.
        user_coupon_id: the rush coupon while won and not yet spent or in flight.
        coupon_won: whether the coupon rush issued this user the coupon.
        keys: Idempotency-Keys this user has used (names the next one).
    """

    index: int
    email: str
    user_id: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    charged: int = 0
    spent: int = 0
    refunded: int = 0
    user_coupon_id: int | None = None
    coupon_won: bool = False
    keys: int = 0

    @property
    def expected_balance(self) -> int:
        """What ``GET /me/wallet`` must show, KRW."""
        return self.charged - self.spent + self.refunded

    def next_key(self) -> str:
        """A fresh ``Idempotency-Key`` (keys are scoped to the user, docs/api.md)."""
        self.keys += 1
        return f"demo-{self.index}-{self.keys}"


@dataclass(slots=True, eq=False)
class TrackedOrder:
    """An order the demo saw created (a 201), and what must have become of it.

    Attributes:
        order_id: from the 201 body.
        user: who placed it.
        lines: ``(variant, quantity)`` as ordered.
        paid_amount: ``total - discount``, KRW.
        user_coupon_id: the coupon it used, if any.
        expires_at: deadline of a pay-later order (None when paid at once).
        source: which part of the demo placed it.
        status: the status the demo expects now.
        was_paid: it was paid at some point (an ``order.paid`` event exists).
        instance: index of the instance that placed it (answered the 201).
    """

    order_id: int
    user: DemoUser
    lines: list[tuple[CatalogVariant, int]]
    paid_amount: int
    user_coupon_id: int | None
    expires_at: datetime | None
    source: OrderSource
    status: OrderStatus = "PENDING"
    was_paid: bool = False
    instance: int = 0


@dataclass(slots=True)
class KeyedRequest:
    """A POST sent with an ``Idempotency-Key`` and retried with the same key.

    Attributes:
        user_id / key: the key's scope and value.
        status: HTTP status of the first (not replayed) answer.
        body: its JSON body, which the server must have stored for the key.
    """

    user_id: int
    key: str
    status: int
    body: Any


@dataclass
class Lifecycle:
    """Counts of the order lifecycle beyond pay-at-once (the report's "Order lifecycle").

    Attributes:
        pending: pay-later orders placed (``pay: false``), in shopping.
        paid_later: of those, paid with ``POST /orders/{id}/payment``.
        abandoned: of those, never paid on purpose.
        payment_refused: payments refused for the balance (the order then expires).
        paid_too_late: payments answered ``ORDER_NOT_PAYABLE`` after ``expires_at``.
        expired: pay-later orders of shopping seen EXPIRED at the end.
        cancelled: paid orders cancelled (refunded).
        refunded_amount: KRW refunded by those cancellations.
        cart_checkouts: carts ordered with ``POST /me/cart/checkout`` (cart emptied).
        cart_refused: checkouts refused (the cart was kept, then cleared by the user).
        keyed: POSTs sent with an ``Idempotency-Key`` and sent again.
        retries: the second sends of those.
        replays: retries answered with ``Idempotent-Replayed: true``.
        in_use: ``409 IDEMPOTENCY_KEY_IN_USE`` answers (the first was still running;
            asked again until replayed).
        hold_units / hold_orders: units of the flash deal held by pay-later orders.
        hold_stock_while_held: its stock while they held it (must be 0; None: not
            checked, the first hold expired before the last was placed).
        hold_probe_refused: one more order was refused OUT_OF_STOCK.
        hold_checked: the stock and that order were answered while every hold stood
            (before the earliest ``expires_at``), so they were judged.
        hold_release_lag_s: seconds from the holds' deadline until its stock was back.
        hold_resold: units of the flash deal sold again after the release.
        hold_stock_after: its stock after the resale.
    """

    pending: int = 0
    paid_later: int = 0
    abandoned: int = 0
    payment_refused: int = 0
    paid_too_late: int = 0
    expired: int = 0
    cancelled: int = 0
    refunded_amount: int = 0
    cart_checkouts: int = 0
    cart_refused: int = 0
    keyed: int = 0
    retries: int = 0
    replays: int = 0
    in_use: int = 0
    hold_units: int = 0
    hold_orders: int = 0
    hold_stock_while_held: int | None = None
    hold_probe_refused: bool = False
    hold_checked: bool = False
    hold_release_lag_s: float | None = None
    hold_resold: int = 0
    hold_stock_after: int | None = None


@dataclass
class World:
    """What seeding created, and the client-side account of every order.

    Attributes:
        admin_headers: bearer header of the admin.
        products: the ordinary catalog (not the limited edition nor the flash deal).
        weights: relative pick weight per entry of ``products`` (a few are popular).
        limited: the limited-edition product (one variant, per-user limit 1).
        hold: the pay-later flash deal (one variant), held and released by expiry.
        coupon_id: id of the rush coupon.
        users: the seeded users.
        orders: order id -> the order, for every 201 the demo got.
        cancellable: paid orders of shopping and carts not yet cancelled.
        abandoned: pay-later orders of shopping that must end EXPIRED.
        keyed: every request sent with an Idempotency-Key.
        lifecycle: the lifecycle counts.
        units_by_product: product id -> units in orders that stay PAID.
        orders_by_product: product id -> orders that stay PAID containing it.
        paid_orders: orders ever paid (each wrote one ``order.paid`` event).
        coupon_orders: of those, orders that used the coupon.
        seconds: wall time of seeding, seconds.
    """

    admin_headers: dict[str, str]
    products: list[CatalogProduct]
    weights: list[float]
    limited: CatalogProduct
    hold: CatalogProduct
    coupon_id: int
    users: list[DemoUser]
    orders: dict[int, TrackedOrder] = field(default_factory=dict)
    cancellable: list[TrackedOrder] = field(default_factory=list)
    abandoned: list[TrackedOrder] = field(default_factory=list)
    keyed: list[KeyedRequest] = field(default_factory=list)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    units_by_product: Counter[int] = field(default_factory=Counter)
    orders_by_product: Counter[int] = field(default_factory=Counter)
    paid_orders: int = 0
    coupon_orders: int = 0
    seconds: float = 0.0

    @property
    def variant_count(self) -> int:
        """Variants in the ordinary catalog."""
        return sum(len(p.variants) for p in self.products)

    @property
    def all_products(self) -> list[CatalogProduct]:
        """The ordinary catalog, the limited edition and the flash deal."""
        return [*self.products, self.limited, self.hold]

    @property
    def cancelled_orders(self) -> int:
        """Orders cancelled after payment (each wrote one ``order.cancelled`` event)."""
        return sum(1 for o in self.orders.values() if o.status == "CANCELLED" and o.was_paid)

    @property
    def standing_orders(self) -> int:
        """Orders that are PAID now."""
        return sum(1 for o in self.orders.values() if o.status == "PAID")

    def tally_order(self, lines: Sequence[tuple[CatalogVariant, int]], sign: int = 1) -> None:
        """Count (``sign=1``) or uncount (``-1``, a cancellation) a paid order's sales."""
        for product_id in {v.product_id for v, _ in lines}:
            self.orders_by_product[product_id] += sign
        for variant, quantity in lines:
            self.units_by_product[variant.product_id] += sign * quantity

    def expected_top(self, limit: int) -> list[tuple[int, int]]:
        """Top ``limit`` (product_id, units) by units, ties to the lower product id."""
        ranked = sorted(self.units_by_product.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(pid, units) for pid, units in ranked if units > 0][:limit]

    # -- the order account ---------------------------------------------------------
    def track(
        self,
        user: DemoUser,
        body: dict[str, Any],
        lines: Sequence[tuple[CatalogVariant, int]],
        source: OrderSource,
        *,
        instance: int = 0,
    ) -> TrackedOrder:
        """Record a 201 order body (``order_id``, ``status``, ``paid_amount``...) answered
        by instance ``instance``.

        A PAID one is counted as paid at once (:meth:`paid`).

        Raises:
            KeyError / ValueError: the body lacks the order fields (the caller checked
                it with the scenario's order check first).
        """
        order = TrackedOrder(
            order_id=int(body["order_id"]),
            user=user,
            lines=list(lines),
            paid_amount=int(body["paid_amount"]),
            user_coupon_id=body.get("user_coupon_id"),
            expires_at=parse_time(body.get("expires_at")),
            source=source,
            instance=instance,
        )
        self.orders[order.order_id] = order
        if body.get("status") == "PAID":
            self.paid(order)
        return order

    def paid(self, order: TrackedOrder) -> None:
        """The order was paid (at once or later): money out, sales into the ranking."""
        order.status = "PAID"
        order.was_paid = True
        order.user.spent += order.paid_amount
        self.paid_orders += 1
        self.coupon_orders += order.user_coupon_id is not None
        self.tally_order(order.lines)

    def cancelled(self, order: TrackedOrder) -> None:
        """The order was cancelled: a paid one is refunded and leaves the ranking; its
        coupon (if any) is the user's again."""
        if order.status == "PAID":
            order.user.refunded += order.paid_amount
            self.lifecycle.refunded_amount += order.paid_amount
            self.tally_order(order.lines, sign=-1)
        if order.user_coupon_id is not None:
            order.user.user_coupon_id = order.user_coupon_id
        order.status = "CANCELLED"

    def expired(self, order: TrackedOrder) -> None:
        """The pay-later order expired: its units are back in stock."""
        order.status = "EXPIRED"

    def expected_statuses(self) -> dict[int, str]:
        """Order id -> the status the database must hold."""
        return {order_id: o.status for order_id, o in self.orders.items()}

    def expected_stock(self) -> dict[int, int]:
        """Variant id -> stock now: seeded minus units held by PAID or PENDING orders."""
        stock = {v.id: v.stock for p in self.all_products for v in p.variants}
        for order in self.orders.values():
            if order.status in ("PAID", "PENDING"):
                for variant, quantity in order.lines:
                    stock[variant.id] -= quantity
        return stock
