"""What the parts of ``flashsale demo`` share: its parameters, its error and the helpers
that check and note what the service answered.

Parameters are module constants (stock and prices of the special products, the coupon,
the shares of the shopping steps, pauses and grace periods): :mod:`~flashsale.demo.seeding`
creates the shop with them, :mod:`~flashsale.demo.scenarios`,
:mod:`~flashsale.demo.shopper` and :mod:`~flashsale.demo.checks` hold the service to them.
Money is integer KRW, durations are seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from flashsale.demo.client import ApiClient, Reply, ScenarioStats
from flashsale.demo.world import (
    CatalogProduct,
    CatalogVariant,
    parse_time,
)

__all__ = [
    "ABANDON_SHARE",
    "CANCEL_SHARE",
    "CART_SHARE",
    "CONCURRENT_RETRY_SHARE",
    "COUPON_DISCOUNT",
    "COUPON_MIN_ORDER",
    "COUPON_QUANTITY",
    "COUPON_USE_SHARE",
    "DOUBLE_TAP_SHARE",
    "EXPIRY_GRACE_S",
    "GATE_FRESHNESS_PAUSE_S",
    "HOLD_PRICE",
    "HOLD_STOCK",
    "IN_USE_GIVE_UP_S",
    "IN_USE_PAUSE_S",
    "LIMITED_PRICE",
    "LIMITED_STOCK",
    "MAX_NOTES",
    "PAY_LATER_PAUSE_S",
    "PAY_LATER_SHARE",
    "POPULAR_READ_SHARE",
    "RETRY_SHARE",
    "WALLET_CHARGE",
    "DemoError",
    "Lines",
    "check_order",
    "note",
    "order_items",
    "product_stock",
    "sleep_until",
]

#: Units of the limited-edition product.
LIMITED_STOCK = 100
#: Price of the limited edition, KRW.
LIMITED_PRICE = 129_000
#: Units of the pay-later flash deal (held by pay-later orders, then released).
HOLD_STOCK = 50
#: Price of the flash deal, KRW.
HOLD_PRICE = 19_900
#: Coupons of the rush.
COUPON_QUANTITY = 100
#: FIXED discount of the rush coupon, KRW.
COUPON_DISCOUNT = 5_000
#: Minimum order total for the coupon, KRW.
COUPON_MIN_ORDER = 10_000
#: What every user charges to the wallet at seeding, KRW.
WALLET_CHARGE = 500_000
#: Share of users that fire the same rush request twice at once.
DOUBLE_TAP_SHARE = 0.1
#: Shares of the shopping steps (the rest are orders paid at once): reads of the
#: popular ranking, pay-later orders paid a moment later, pay-later orders abandoned,
#: cancellations of a paid order, cart checkouts.
POPULAR_READ_SHARE = 0.1
PAY_LATER_SHARE = 0.06
ABANDON_SHARE = 0.04
CANCEL_SHARE = 0.05
CART_SHARE = 0.05
#: Chance that a coupon holder spends it on a given eligible order.
COUPON_USE_SHARE = 0.5
#: Share of money-moving POSTs sent with an Idempotency-Key and then sent again.
RETRY_SHARE = 0.2
#: Of those, the share whose second send races the first (the rest wait for its answer).
CONCURRENT_RETRY_SHARE = 0.5
#: A pay-later shopper pays after a pause drawn from [0, this] seconds.
PAY_LATER_PAUSE_S = 1.0
#: Pause before asking again after ``409 IDEMPOTENCY_KEY_IN_USE``, seconds.
IN_USE_PAUSE_S = 0.1
#: A retry stops asking after this long of ``IDEMPOTENCY_KEY_IN_USE``, seconds.
IN_USE_GIVE_UP_S = 60.0
#: How long past an order's ``expires_at`` the expiry may take to show (the sweeper
#: runs every ``FLASHSALE_ORDER_EXPIRY_SWEEP_S``; the rest is slack for a busy machine).
EXPIRY_GRACE_S = 15.0
#: A worker's gate may keep a stale "sold out" for up to 1 s (docs/architecture.md#gates);
#: a buyer told
#: OUT_OF_STOCK while the demo knows units are free asks again after this pause.
GATE_FRESHNESS_PAUSE_S = 1.2
#: At most this many notes are kept per scenario, and findings per end check.
MAX_NOTES = 20

#: Order lines: ``[(variant, quantity), ...]``.
Lines = list[tuple[CatalogVariant, int]]


class DemoError(RuntimeError):
    """The demo cannot go on (e.g. seeding over HTTP failed); the message says why."""


def note(stats: ScenarioStats, message: str) -> None:
    """Add a finding to ``stats.notes``, at most ``MAX_NOTES`` of them (then one line
    says that further ones were left out)."""
    if len(stats.notes) < MAX_NOTES:
        stats.notes.append(message)
    elif len(stats.notes) == MAX_NOTES:
        stats.notes.append("(further findings not listed)")


def order_items(lines: Sequence[tuple[CatalogVariant, int]]) -> list[dict[str, int]]:
    """``lines`` as the ``items`` of ``POST /orders``: ``[{variant_id, quantity}, ...]``."""
    return [{"variant_id": v.id, "quantity": q} for v, q in lines]


def check_order(
    stats: ScenarioStats,
    reply: Reply,
    lines: Sequence[tuple[CatalogVariant, int]],
    *,
    coupon: bool,
    status: str = "PAID",
) -> bool:
    """Check a 201 order body against what was asked (the discount rule of docs/rules.md).

    ``status`` is the expected one: ``PAID`` (with one PAYMENT of ``paid_amount``) or
    ``PENDING`` (with ``expires_at`` and no payment). Returns False when the body cannot
    be tracked (no ``order_id`` or ``paid_amount``); mismatches are notes.
    """
    order = reply.json_dict()
    if not isinstance(order.get("order_id"), int) or not isinstance(order.get("paid_amount"), int):
        note(stats, f"order answer without order_id/paid_amount: {reply.status} {reply.body}")
        return False
    order_id = order["order_id"]
    total = sum(v.price * q for v, q in lines)
    discount = min(COUPON_DISCOUNT, total) if coupon else 0
    if reply.status != 201:
        note(stats, f"order answered {reply.status}, not 201")
    if order.get("status") != status:
        note(stats, f"order {order_id} is {order.get('status')}, not {status}")
    got = (order.get("total_amount"), order.get("discount_amount"), order.get("paid_amount"))
    if got != (total, discount, total - discount):
        note(
            stats,
            f"order {order_id}: (total, discount, paid) = {got}, "
            f"expected {(total, discount, total - discount)}",
        )
    payments = [(p.get("kind"), p.get("amount")) for p in order.get("payments") or []]
    if status == "PAID" and payments != [("PAYMENT", total - discount)]:
        note(stats, f"order {order_id}: payments {payments}, expected one PAYMENT")
    if status == "PENDING" and (payments or parse_time(order.get("expires_at")) is None):
        note(stats, f"pending order {order_id}: payments {payments}, no expires_at")
    return True


async def product_stock(
    api: ApiClient, stats: ScenarioStats, product: CatalogProduct
) -> int | None:
    """``GET /products/{id}``'s ``stock`` (None, and a note, when it cannot be read)."""
    reply = await api.request("GET", f"/products/{product.id}")
    stock = reply.json_dict().get("stock")
    if not reply.ok or not isinstance(stock, int):
        note(stats, f"GET /products/{product.id} answered {reply.status} {reply.code}")
        return None
    return stock


async def sleep_until(moment: datetime) -> None:
    """Sleep until the wall clock (UTC) reaches ``moment``; the server shares this clock."""
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)
