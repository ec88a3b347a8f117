"""The shopper of ``flashsale demo``: ordinary shopping, over real HTTP.

For a number of seconds (:func:`shopping`), multi-line orders on the catalog (popular
products picked more often): most paid at once (coupon winners spending their coupon on
some), some pay-later orders paid a moment later, some abandoned (they expire),
cancellations of paid orders (refunds), cart checkouts, reads of the popular-products
ranking; a fifth of the money-moving POSTs carry an ``Idempotency-Key`` and are sent
again (concurrently or after the answer), as a client retrying after a lost answer
would (:func:`send_idempotent`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from flashsale.demo.client import ApiClient, Reply, ScenarioStats, run_for
from flashsale.demo.common import (
    ABANDON_SHARE,
    CANCEL_SHARE,
    CART_SHARE,
    CONCURRENT_RETRY_SHARE,
    COUPON_MIN_ORDER,
    COUPON_USE_SHARE,
    IN_USE_GIVE_UP_S,
    IN_USE_PAUSE_S,
    PAY_LATER_PAUSE_S,
    PAY_LATER_SHARE,
    POPULAR_READ_SHARE,
    RETRY_SHARE,
    Lines,
    check_order,
    note,
    order_items,
)
from flashsale.demo.world import (
    CatalogVariant,
    DemoUser,
    KeyedRequest,
    World,
    parse_time,
)

__all__ = [
    "send_idempotent",
    "shopping",
]


async def send_idempotent(
    api: ApiClient,
    world: World,
    stats: ScenarioStats,
    path: str,
    user: DemoUser,
    body: dict[str, Any] | None,
    *,
    concurrent: bool,
) -> Reply:
    """``POST path`` with a fresh ``Idempotency-Key``, then send it again with the same key.

    The second send races the first when ``concurrent`` (a double submit), else follows
    its answer (a retry after a lost answer). A send answered ``409
    IDEMPOTENCY_KEY_IN_USE`` (the first is still running) asks again every
    ``IN_USE_PAUSE_S`` seconds until it gets the stored answer (at most
    ``IN_USE_GIVE_UP_S``). Exactly one send must have been executed and every other
    must be a replay (``Idempotent-Replayed: true``) with the same status and body;
    anything else is a note in ``stats``. Counts go to ``world.lifecycle``; the key and
    its first answer to ``world.keyed`` when the server stores it (2xx, 404, 409), for
    the final database check.

    Returns the executed send's answer: the caller goes on as if it had sent once.
    """
    key = user.next_key()
    headers = {**user.headers, "Idempotency-Key": key}
    life = world.lifecycle
    life.keyed += 1
    life.retries += 1
    loop = asyncio.get_running_loop()

    async def send() -> Reply:
        give_up = loop.time() + IN_USE_GIVE_UP_S
        while True:
            reply = await api.request("POST", path, headers=headers, json=body, stats=stats)
            if reply.code != "IDEMPOTENCY_KEY_IN_USE" or loop.time() > give_up:
                return reply
            life.in_use += 1
            await asyncio.sleep(IN_USE_PAUSE_S)

    if concurrent:
        replies = list(await asyncio.gather(send(), send()))
    else:
        first = await send()
        replies = [first, await send()]
    executed = [r for r in replies if not r.replayed]
    replays = [r for r in replies if r.replayed]
    life.replays += len(replays)
    if len(executed) != 1:
        codes = [r.code or r.status for r in replies]
        note(stats, f"POST {path} key {key}: {len(executed)} of 2 sends executed ({codes})")
    original = executed[0] if executed else replies[0]
    for replay in replays:
        if (replay.status, replay.body) != (original.status, original.body):
            note(
                stats,
                f"POST {path} key {key}: replay {replay.status} {replay.body!r:.120} differs "
                f"from the first answer {original.status} {original.body!r:.120}",
            )
    if original.ok or original.status in (404, 409):
        world.keyed.append(KeyedRequest(user.user_id, key, original.status, original.body))
    return original


class _Shopper:
    """The shopping steps (one instance per run; its state is shared by the workers,
    all on one event loop)."""

    def __init__(
        self, api: ApiClient, world: World, stats: ScenarioStats, rng: random.Random
    ) -> None:
        self.api = api
        self.world = world
        self.stats = stats
        self.rng = rng
        self.cum_weights = list(itertools.accumulate(world.weights))
        #: Users in the middle of a cart flow: their carts must not interleave.
        self.cart_busy: set[int] = set()
        shares: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (POPULAR_READ_SHARE, self.read_popular),
            (PAY_LATER_SHARE, lambda: self.pay_later(pay=True)),
            (ABANDON_SHARE, lambda: self.pay_later(pay=False)),
            (CANCEL_SHARE, self.cancel),
            (CART_SHARE, self.cart),
        ]
        self.thresholds = list(
            zip(itertools.accumulate(s for s, _ in shares), (a for _, a in shares), strict=True)
        )

    async def step(self) -> None:
        """One shopper action, drawn by the shares (an order paid at once otherwise)."""
        roll = self.rng.random()
        for threshold, action in self.thresholds:
            if roll < threshold:
                await action()
                return
        await self.pay_now()

    def pick_lines(self) -> Lines:
        """1-4 distinct variants (popular products more often), quantity 1-3 each."""
        picked: dict[int, tuple[CatalogVariant, int]] = {}
        products = self.world.products
        for product in self.rng.choices(
            products, cum_weights=self.cum_weights, k=self.rng.randint(1, 4)
        ):
            variant = self.rng.choice(product.variants)
            picked[variant.id] = (variant, self.rng.randint(1, 3))
        return list(picked.values())

    async def post(self, path: str, user: DemoUser, body: dict[str, Any] | None) -> Reply:
        """POST once, or (``RETRY_SHARE`` of the time) with a key and again (see
        :func:`send_idempotent`)."""
        if self.rng.random() < RETRY_SHARE:
            concurrent = self.rng.random() < CONCURRENT_RETRY_SHARE
            return await send_idempotent(
                self.api, self.world, self.stats, path, user, body, concurrent=concurrent
            )
        return await self.api.request(
            "POST", path, headers=user.headers, json=body, stats=self.stats
        )

    async def read_popular(self) -> None:
        await self.api.request(
            "GET", "/products/popular", params={"limit": 5, "days": 3}, stats=self.stats
        )

    async def pay_now(self) -> None:
        """An order paid at once; coupon winners spend the coupon on about half of their
        eligible orders (total >= ``COUPON_MIN_ORDER``)."""
        user = self.rng.choice(self.world.users)
        lines = self.pick_lines()
        total = sum(v.price * q for v, q in lines)
        body: dict[str, Any] = {"items": order_items(lines), "pay": True}
        coupon_id = user.user_coupon_id
        use_coupon = (
            coupon_id is not None
            and total >= COUPON_MIN_ORDER
            and self.rng.random() < COUPON_USE_SHARE
        )
        if use_coupon:
            body["user_coupon_id"] = coupon_id
            user.user_coupon_id = None  # in flight: no second order may use it meanwhile
        reply = await self.post("/orders", user, body)
        if reply.ok:
            if check_order(self.stats, reply, lines, coupon=use_coupon):
                order = self.world.track(
                    user, reply.json_dict(), lines, "shopping", instance=reply.instance
                )
                self.world.cancellable.append(order)
        elif use_coupon:
            user.user_coupon_id = coupon_id  # refused: the coupon is still the user's

    async def pay_later(self, *, pay: bool) -> None:
        """A pay-later order (``pay: false``): paid after a short pause when ``pay``,
        else abandoned (it must expire, see :func:`flashsale.demo.checks.check_expiries`)."""
        world, life = self.world, self.world.lifecycle
        user = self.rng.choice(world.users)
        lines = self.pick_lines()
        reply = await self.post("/orders", user, {"items": order_items(lines), "pay": False})
        if not reply.ok:
            return
        if not check_order(self.stats, reply, lines, coupon=False, status="PENDING"):
            return
        order = world.track(user, reply.json_dict(), lines, "shopping", instance=reply.instance)
        life.pending += 1
        if not pay:
            life.abandoned += 1
            world.abandoned.append(order)
            return
        await asyncio.sleep(self.rng.uniform(0.0, PAY_LATER_PAUSE_S))
        reply = await self.post(f"/orders/{order.order_id}/payment", user, None)
        body = reply.json_dict()
        if reply.ok:
            payments = [(p.get("kind"), p.get("amount")) for p in body.get("payments") or []]
            paid_at = parse_time(body.get("paid_at"))
            if body.get("status") != "PAID" or payments != [("PAYMENT", order.paid_amount)]:
                note(self.stats, f"paid order {order.order_id}: {body.get('status')} {payments}")
            if paid_at is None or order.expires_at is None or paid_at >= order.expires_at:
                note(
                    self.stats, f"order {order.order_id} paid at {paid_at}, due {order.expires_at}"
                )
            world.paid(order)
            world.cancellable.append(order)
            life.paid_later += 1
        elif reply.code == "INSUFFICIENT_BALANCE":
            life.payment_refused += 1  # it stays PENDING until it expires
            world.abandoned.append(order)
        elif (
            reply.code == "ORDER_NOT_PAYABLE"
            and order.expires_at is not None
            and datetime.now(UTC) >= order.expires_at
        ):
            # Answered after the deadline (a busy machine): refusing is right.
            life.paid_too_late += 1
            world.abandoned.append(order)
        elif reply.status:
            note(self.stats, f"payment of order {order.order_id}: {reply.status} {reply.code}")

    async def cancel(self) -> None:
        """Cancel a random paid order of shopping (an order paid at once if none is left):
        a refund of ``paid_amount``, its stock and coupon back, its sales out of the ranking."""
        world = self.world
        if not world.cancellable:
            await self.pay_now()
            return
        index = self.rng.randrange(len(world.cancellable))
        # Swap-remove: O(1), and the order can never be picked twice.
        world.cancellable[index], world.cancellable[-1] = (
            world.cancellable[-1],
            world.cancellable[index],
        )
        order = world.cancellable.pop()
        reply = await self.post(f"/orders/{order.order_id}/cancel", order.user, None)
        if not reply.ok:
            if reply.status:
                note(self.stats, f"cancel of order {order.order_id}: {reply.status} {reply.code}")
            return
        body = reply.json_dict()
        refunds = [p.get("amount") for p in body.get("payments") or [] if p.get("kind") == "REFUND"]
        if body.get("status") != "CANCELLED" or refunds != [order.paid_amount]:
            note(
                self.stats,
                f"cancelled order {order.order_id}: {body.get('status')}, refunds {refunds}, "
                f"expected one of {order.paid_amount}",
            )
        world.cancelled(order)
        world.lifecycle.cancelled += 1

    async def cart(self) -> None:
        """Fill a cart (``PUT /me/cart/items/{id}``), read it, check it out; the cart must
        be empty after a success and kept after a refusal (then the user clears it)."""
        user = next(
            (
                u
                for u in (self.rng.choice(self.world.users) for _ in range(5))
                if u.index not in self.cart_busy
            ),
            None,
        )
        if user is None:
            await self.pay_now()
            return
        self.cart_busy.add(user.index)
        try:
            await self._cart(user)
        finally:
            self.cart_busy.discard(user.index)

    async def _cart(self, user: DemoUser) -> None:
        api, stats, life = self.api, self.stats, self.world.lifecycle
        lines = self.pick_lines()
        for variant, quantity in lines:
            reply = await api.request(
                "PUT",
                f"/me/cart/items/{variant.id}",
                headers=user.headers,
                json={"quantity": quantity},
                stats=stats,
            )
            if not reply.ok:
                note(stats, f"PUT /me/cart/items/{variant.id}: {reply.status} {reply.code}")
                await self._clear_cart(user, lines)
                return
        reply = await api.request("GET", "/me/cart", headers=user.headers, stats=stats)
        self._check_cart(reply, lines, "filled")
        order_reply = await self.post("/me/cart/checkout", user, {"pay": True})
        if order_reply.ok:
            if check_order(stats, order_reply, lines, coupon=False):
                order = self.world.track(
                    user, order_reply.json_dict(), lines, "cart", instance=order_reply.instance
                )
                self.world.cancellable.append(order)
            life.cart_checkouts += 1
            reply = await api.request("GET", "/me/cart", headers=user.headers, stats=stats)
            self._check_cart(reply, [], "after checkout")
        else:
            life.cart_refused += 1
            reply = await api.request("GET", "/me/cart", headers=user.headers, stats=stats)
            self._check_cart(reply, lines, f"after a refused checkout ({order_reply.code})")
            await self._clear_cart(user, lines)

    async def _clear_cart(self, user: DemoUser, lines: Lines) -> None:
        reply = None
        for variant, _ in lines:
            reply = await self.api.request(
                "DELETE", f"/me/cart/items/{variant.id}", headers=user.headers, stats=self.stats
            )
        if reply is not None:
            self._check_cart(reply, [], "after removing every item")

    def _check_cart(self, reply: Reply, lines: Lines, when: str) -> None:
        """The cart answer holds exactly ``lines`` at the seeded prices."""
        if not reply.ok:
            return  # counted by the stats (an unexpected code or an unanswered request)
        cart = reply.json_dict()
        held = sorted((i.get("variant_id"), i.get("quantity")) for i in cart.get("items") or [])
        wanted = sorted((v.id, q) for v, q in lines)
        total = sum(v.price * q for v, q in lines)
        if held != wanted or cart.get("total_amount") != total:
            note(
                self.stats,
                f"cart {when}: {held} total {cart.get('total_amount')}, "
                f"expected {wanted} total {total}",
            )


async def shopping(
    api: ApiClient,
    world: World,
    *,
    seconds: float,
    concurrency: int,
    rng: random.Random,
    progress: Callable[[str, int], Callable[[], None]],
) -> ScenarioStats:
    """Ordinary shopping for ``seconds``: orders of 1-4 lines (quantity 1-3) and more.

    Products are picked by ``world.weights``. Per step: ``POPULAR_READ_SHARE`` reads
    ``GET /products/popular``, ``PAY_LATER_SHARE`` orders with ``pay: false`` and pays
    within ``PAY_LATER_PAUSE_S``, ``ABANDON_SHARE`` orders with ``pay: false`` and never
    pays, ``CANCEL_SHARE`` cancels a paid order, ``CART_SHARE`` checks out a cart, and
    the rest order and pay at once (coupon winners spend the coupon on about half of
    their eligible orders). ``RETRY_SHARE`` of the POSTs are sent twice with one
    ``Idempotency-Key``. Expected refusals: ``INSUFFICIENT_BALANCE`` (users run out of
    money), ``OUT_OF_STOCK``, ``IDEMPOTENCY_KEY_IN_USE`` (a retry racing its first
    send) and ``ORDER_NOT_PAYABLE`` for a payment answered after the deadline.
    """
    stats = ScenarioStats(
        "shopping",
        expected_codes=frozenset(
            {"INSUFFICIENT_BALANCE", "OUT_OF_STOCK", "IDEMPOTENCY_KEY_IN_USE", "ORDER_NOT_PAYABLE"}
        ),
    )
    shopper = _Shopper(api, world, stats, rng)

    with_progress = progress("shopping", max(1, round(seconds)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    ticked = 0

    def on_done() -> None:
        nonlocal ticked
        elapsed = min(int(loop.time() - started), round(seconds))
        while ticked < elapsed:
            ticked += 1
            with_progress()

    stats.start()
    await run_for(seconds, shopper.step, concurrency=concurrency, on_done=on_done)
    stats.finish()
    while ticked < round(seconds):
        ticked += 1
        with_progress()
    return stats
