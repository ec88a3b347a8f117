"""The flash-sale scenarios of ``flashsale demo``, over real HTTP (``/api/v1``, docs/api.md).

After seeding (:mod:`flashsale.demo.seeding`):

(a) *coupon rush* (:func:`coupon_rush`) -- every user asks for the 100-unit coupon at
    once (a tenth of them double-tap, firing twice concurrently);
(b) *limited rush* (:func:`limited_rush`) -- every user tries to buy one unit of the
    100-unit limited edition (per-user limit 1; a tenth double-tap);
(c) *shopping* -- :func:`flashsale.demo.shopper.shopping`;
(d) *expiry release* (:func:`hold_flash_deal`, :func:`release_flash_deal`) -- just
    before shopping, pay-later orders hold every unit of a flash deal and nobody can buy
    it; alongside shopping, the payment deadline passes, the expiry sweeper puts the
    units back and other users buy them.

The end checks of what the service serves afterwards are in :mod:`flashsale.demo.checks`.

With several instances the :class:`~flashsale.demo.client.ApiClient` sends each request
to the next instance in turn, so one user's requests (even the two taps of a double
tap, or an idempotent retry and its first send) land on different instances: every
check holds for the shop as a whole, and the ranking is checked on each instance.

Each scenario checks what the client can see for itself (e.g. no user issued the
coupon twice, ``paid_amount = total_amount - discount_amount``, a replay carries the
first answer) and writes findings to its :class:`~flashsale.demo.client.ScenarioStats`
``notes``; every order is recorded in the :class:`~flashsale.demo.world.World`, which
the end checks compare with the service. Money is integer KRW, times are UTC.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flashsale.demo.client import ApiClient, ScenarioStats, run_pool
from flashsale.demo.common import (
    COUPON_QUANTITY,
    DOUBLE_TAP_SHARE,
    EXPIRY_GRACE_S,
    GATE_FRESHNESS_PAUSE_S,
    HOLD_PRICE,
    HOLD_STOCK,
    check_order,
    note,
    order_items,
    product_stock,
    sleep_until,
)
from flashsale.demo.world import (
    DemoUser,
    TrackedOrder,
    World,
)

__all__ = [
    "coupon_rush",
    "hold_flash_deal",
    "limited_rush",
    "release_flash_deal",
]


def _tappers(world: World, rng: random.Random) -> tuple[list[DemoUser], set[int]]:
    """All users in a random order, and the indexes of those who double-tap."""
    order = list(world.users)
    rng.shuffle(order)
    doubles = {u.index for u in order if rng.random() < DOUBLE_TAP_SHARE}
    return order, doubles


async def coupon_rush(
    api: ApiClient,
    world: World,
    *,
    concurrency: int,
    rng: random.Random,
    progress: Callable[[str, int], Callable[[], None]],
) -> ScenarioStats:
    """Every user asks for the coupon at once: ``POST /coupons/{id}/issue``.

    Winners keep their ``user_coupon_id`` for the shopping scenario. Checks that no user
    got it twice and that ``GET /coupons/{id}`` shows ``remaining_quantity`` =
    total - issued.
    """
    stats = ScenarioStats(
        "coupon rush", expected_codes=frozenset({"COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"})
    )
    order, doubles = _tappers(world, rng)
    path = f"/coupons/{world.coupon_id}/issue"

    async def ask(user: DemoUser) -> None:
        taps = 2 if user.index in doubles else 1
        replies = await asyncio.gather(
            *(api.request("POST", path, headers=user.headers, stats=stats) for _ in range(taps))
        )
        wins = [r for r in replies if r.ok]
        if len(wins) > 1:
            note(stats, f"{user.email} was issued the coupon {len(wins)} times")
        for win in wins:
            if win.status != 201:
                note(stats, f"issue answered {win.status}, not 201")
        if wins:
            user.coupon_won = True
            user.user_coupon_id = int(wins[0].json_dict()["user_coupon_id"])
        tick()
        if taps > 1:
            tick()

    tick = progress("coupon rush", len(order) + len(doubles))
    stats.start()
    await run_pool(order, ask, concurrency=concurrency)
    stats.finish()

    issued = sum(u.coupon_won for u in world.users)
    reply = await api.request("GET", f"/coupons/{world.coupon_id}")
    remaining = reply.json_dict().get("remaining_quantity")
    if not reply.ok:
        note(stats, f"GET /coupons/{world.coupon_id} answered {reply.status} {reply.code}")
    elif remaining != COUPON_QUANTITY - issued:
        note(stats, f"remaining_quantity is {remaining}, expected {COUPON_QUANTITY - issued}")
    return stats


async def limited_rush(
    api: ApiClient,
    world: World,
    *,
    concurrency: int,
    rng: random.Random,
    progress: Callable[[str, int], Callable[[], None]],
) -> tuple[ScenarioStats, int, int | None]:
    """Every user tries to buy one unit of the limited edition at once (``POST /orders``).

    Returns ``(stats, units_sold, stock_left)``; ``stock_left`` is the product's stock
    from ``GET /products/{id}`` afterwards (None when it could not be read).
    """
    stats = ScenarioStats(
        "limited rush", expected_codes=frozenset({"OUT_OF_STOCK", "PURCHASE_LIMIT_EXCEEDED"})
    )
    order, doubles = _tappers(world, rng)
    variant = world.limited.variants[0]
    body = {"items": [{"variant_id": variant.id, "quantity": 1}], "pay": True}
    sold = 0

    async def buy(user: DemoUser) -> None:
        nonlocal sold
        taps = 2 if user.index in doubles else 1
        replies = await asyncio.gather(
            *(
                api.request("POST", "/orders", headers=user.headers, json=body, stats=stats)
                for _ in range(taps)
            )
        )
        wins = [r for r in replies if r.ok]
        if len(wins) > 1:
            note(stats, f"{user.email} bought {len(wins)} units (per-user limit 1)")
        for win in wins:
            if check_order(stats, win, [(variant, 1)], coupon=False):
                world.track(user, win.json_dict(), [(variant, 1)], "limited", instance=win.instance)
            sold += 1
        tick()
        if taps > 1:
            tick()

    tick = progress("limited rush", len(order) + len(doubles))
    stats.start()
    await run_pool(order, buy, concurrency=concurrency)
    stats.finish()

    stock = await product_stock(api, stats, world.limited)
    return stats, sold, stock


async def hold_flash_deal(
    api: ApiClient, world: World, *, concurrency: int, rng: random.Random
) -> tuple[ScenarioStats, list[TrackedOrder]]:
    """Step 1 of the expiry release: pay-later orders take every unit of the flash deal.

    ``HOLD_STOCK // 2`` users order all ``HOLD_STOCK`` units with ``pay: false``. While
    the holds stand, ``GET /products/{id}`` must show stock 0 and one more order must
    be refused ``OUT_OF_STOCK``. Those two are judged only when their answer came before
    the earliest hold's ``expires_at`` (on a very busy machine the first hold may expire
    before the last is placed; the service is then right to sell the unit again).

    Returns the scenario's stats (started, not finished: :func:`release_flash_deal`
    goes on with them) and the held orders (a probe order that got a unit is one too).
    """
    stats = ScenarioStats(
        "expiry release", expected_codes=frozenset({"OUT_OF_STOCK", "INSUFFICIENT_BALANCE"})
    )
    life = world.lifecycle
    variant = world.hold.variants[0]
    holders = rng.sample(world.users, min(len(world.users), HOLD_STOCK // 2))
    count = len(holders)
    quantities = [HOLD_STOCK // count + (1 if i < HOLD_STOCK % count else 0) for i in range(count)]
    held: list[TrackedOrder] = []

    async def place_hold(user: DemoUser, quantity: int) -> None:
        lines = [(variant, quantity)]
        body = {"items": order_items(lines), "pay": False}
        reply = await api.request("POST", "/orders", headers=user.headers, json=body, stats=stats)
        if reply.status != 201:
            note(stats, f"holding {quantity} units: {reply.status} {reply.code}")
        elif check_order(stats, reply, lines, coupon=False, status="PENDING"):
            held.append(
                world.track(user, reply.json_dict(), lines, "hold", instance=reply.instance)
            )

    stats.start()
    await run_pool(
        list(zip(holders, quantities, strict=True)),
        lambda pair: place_hold(*pair),
        concurrency=min(concurrency, count),
    )
    life.hold_orders = len(held)
    life.hold_units = sum(q for o in held for _, q in o.lines)
    deadlines = [o.expires_at for o in held if o.expires_at is not None]
    if not deadlines:
        return stats, held
    first_deadline = min(deadlines)

    stock = await product_stock(api, stats, world.hold)
    if datetime.now(UTC) < first_deadline:  # every hold still stands
        life.hold_stock_while_held = stock
        if stock != HOLD_STOCK - life.hold_units:
            note(stats, f"stock {stock} while {life.hold_units} units are held")
    # pay: false, so the buyer's balance plays no part: only the stock can refuse.
    probe_lines = [(variant, 1)]
    probe_user = rng.choice(world.users)
    probe = await api.request(
        "POST",
        "/orders",
        headers=probe_user.headers,
        json={"items": order_items(probe_lines), "pay": False},
        stats=stats,
    )
    in_time = datetime.now(UTC) < first_deadline
    if probe.ok:
        if in_time:
            note(stats, "an order got a unit while every unit was held (oversold)")
        if check_order(stats, probe, probe_lines, coupon=False, status="PENDING"):
            held.append(
                world.track(
                    probe_user, probe.json_dict(), probe_lines, "hold", instance=probe.instance
                )
            )
    elif probe.code != "OUT_OF_STOCK":
        note(stats, f"an order of a held unit answered {probe.status} {probe.code}")
    else:
        life.hold_probe_refused = True
    life.hold_checked = in_time and life.hold_stock_while_held is not None
    return stats, held


async def release_flash_deal(
    api: ApiClient,
    world: World,
    stats: ScenarioStats,
    held: list[TrackedOrder],
    *,
    concurrency: int,
    rng: random.Random,
) -> ScenarioStats:
    """Steps 2 and 3 of the expiry release (after :func:`hold_flash_deal`).

    2. Past the latest ``expires_at`` the expiry sweeper must put every unit back:
       the stock is polled until it is ``HOLD_STOCK`` again (at most
       ``EXPIRY_GRACE_S`` later) and each held order must be EXPIRED.
    3. Users buy the ``HOLD_STOCK`` units one by one (paid at once); the stock ends
       at 0. A buyer short of money tops the wallet up first; a buyer told
       ``OUT_OF_STOCK`` asks again after ``GATE_FRESHNESS_PAUSE_S`` (a worker's gate
       may keep a stale "sold out" for 1 s, docs/architecture.md#gates).

    Figures go to ``world.lifecycle`` (``hold_*``); findings to the stats' notes.
    Returns ``stats``, finished.
    """
    life = world.lifecycle
    try:
        deadlines = [o.expires_at for o in held if o.expires_at is not None]
        if not deadlines:
            return stats
        deadline = max(deadlines)
        await sleep_until(deadline)
        give_up = deadline + timedelta(seconds=EXPIRY_GRACE_S)
        while True:
            stock = await product_stock(api, stats, world.hold)
            now = datetime.now(UTC)
            if stock == HOLD_STOCK:
                life.hold_release_lag_s = (now - deadline).total_seconds()
                break
            if now > give_up:
                note(stats, f"stock {stock}, not {HOLD_STOCK}, {EXPIRY_GRACE_S:g} s after")
                break
            await asyncio.sleep(0.1)

        async def expired(order: TrackedOrder) -> None:
            reply = await api.request(
                "GET", f"/orders/{order.order_id}", headers=order.user.headers, stats=stats
            )
            status = reply.json_dict().get("status")
            if status == "EXPIRED":
                world.expired(order)
            else:
                note(stats, f"held order {order.order_id} is {status} after its deadline")

        await run_pool(held, expired, concurrency=min(concurrency, 8))
        if life.hold_release_lag_s is not None:
            await _resell(api, world, stats, rng, concurrency=min(concurrency, HOLD_STOCK // 2))
            life.hold_stock_after = await product_stock(api, stats, world.hold)
            if life.hold_stock_after != HOLD_STOCK - life.hold_resold:
                note(stats, f"stock {life.hold_stock_after} after reselling {life.hold_resold}")
    finally:
        stats.finish()
    return stats


async def _resell(
    api: ApiClient, world: World, stats: ScenarioStats, rng: random.Random, *, concurrency: int
) -> None:
    """Sell the released flash-deal units one per order, paid at once (see
    :func:`release_flash_deal`, step 3).

    A buyer refused for the balance tops the wallet up by the price
    (``POST /me/wallet/charges``) and tries again, so the sale does not depend on how
    much shopping has left the users. A buyer told ``OUT_OF_STOCK`` asks again after
    ``GATE_FRESHNESS_PAUSE_S``.
    """
    variant = world.hold.variants[0]
    lines = [(variant, 1)]
    body = {"items": order_items(lines), "pay": True}
    attempts = 10

    async def buy(_: int) -> None:
        user = rng.choice(world.users)
        for _attempt in range(attempts):
            reply = await api.request(
                "POST", "/orders", headers=user.headers, json=body, stats=stats
            )
            if reply.ok:
                if check_order(stats, reply, lines, coupon=False):
                    world.track(user, reply.json_dict(), lines, "resale", instance=reply.instance)
                world.lifecycle.hold_resold += 1
                return
            if reply.code == "OUT_OF_STOCK":
                await asyncio.sleep(GATE_FRESHNESS_PAUSE_S)
            elif reply.code == "INSUFFICIENT_BALANCE":
                charge = await api.request(
                    "POST",
                    "/me/wallet/charges",
                    headers=user.headers,
                    json={"amount": HOLD_PRICE},
                    stats=stats,
                )
                if charge.status != 201:
                    note(stats, f"topping up {user.email}: {charge.status} {charge.code}")
                    return
                user.charged += HOLD_PRICE
            else:
                note(stats, f"buying a released unit: {reply.status} {reply.code}")
                return
        note(stats, f"a released unit was not sold in {attempts} attempts")

    await run_pool(range(HOLD_STOCK), buy, concurrency=concurrency)
