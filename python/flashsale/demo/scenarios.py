"""Seeding and the flash-sale scenarios of ``flashsale demo``, over real HTTP.

Everything goes through the public API (``/api/v1``, DESIGN §5): the admin creates the
catalog and the coupon, users sign up, log in and charge their wallets, then

(a) *coupon rush* -- every user asks for the 100-unit coupon at once (a tenth of them
    double-tap, firing twice concurrently);
(b) *limited rush* -- every user tries to buy one unit of the 100-unit limited edition
    (per-user limit 1; a tenth double-tap);
(c) *shopping* -- for a number of seconds, multi-line orders on the rest of the catalog
    (popular products picked more often): most paid at once (coupon winners spending
    their coupon on some), some pay-later orders paid a moment later, some abandoned
    (they expire), cancellations of paid orders (refunds), cart checkouts, reads of the
    popular-products ranking; a fifth of the money-moving POSTs carry an
    ``Idempotency-Key`` and are sent again (concurrently or after the answer), as a
    client retrying after a lost answer would;
(d) *expiry release* -- just before shopping, pay-later orders hold every unit of a
    flash deal and nobody can buy it; alongside shopping, the payment deadline passes,
    the expiry sweeper puts the units back and other users buy them.

With several instances the :class:`~flashsale.demo.client.ApiClient` sends each request
to the next instance in turn, so one user's requests (even the two taps of a double
tap, or an idempotent retry and its first send) land on different instances: every
check below holds for the shop as a whole, and the ranking is checked on each instance.

Each scenario checks what the client can see for itself (e.g. no user issued the
coupon twice, ``paid_amount = total_amount - discount_amount``, a replay carries the
first answer) and writes findings to its :class:`~flashsale.demo.client.ScenarioStats`
``notes``; every order is recorded in the :class:`~flashsale.demo.world.World`, which
the final checks compare with the service. Money is integer KRW, times are UTC.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.demo.client import ApiClient, Reply, ScenarioStats, run_for, run_pool
from flashsale.demo.world import (
    CatalogProduct,
    CatalogVariant,
    DemoUser,
    KeyedRequest,
    TrackedOrder,
    World,
    parse_time,
)

__all__ = [
    "COUPON_DISCOUNT",
    "COUPON_MIN_ORDER",
    "COUPON_QUANTITY",
    "HOLD_STOCK",
    "LIMITED_STOCK",
    "WALLET_CHARGE",
    "CatalogProduct",
    "CatalogVariant",
    "DemoError",
    "DemoUser",
    "World",
    "check_expiries",
    "check_stock",
    "check_wallets",
    "coupon_rush",
    "fetch_popular",
    "hold_flash_deal",
    "limited_rush",
    "login",
    "release_flash_deal",
    "seed_world",
    "send_idempotent",
    "shopping",
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
#: DESIGN §2: a worker's gate may keep a stale "sold out" for up to 1 s; a buyer told
#: OUT_OF_STOCK while the demo knows units are free asks again after this pause.
GATE_FRESHNESS_PAUSE_S = 1.2
#: At most this many notes are kept per scenario (the rest are counted).
_MAX_NOTES = 20

PASSWORD = "Flash-sale-2024!"

_BRANDS = (
    "Aurora", "Bada", "Cheong", "Dasan", "Eum", "Gaon", "Haneul", "Ijeum", "Jigu", "Kkum",
    "Maru", "Nuri", "Ollim", "Purun", "Saebom", "Taeyang", "Uri", "Yeoreum", "Bom", "Gyeoul",
)  # fmt: skip
_ITEMS = (
    ("Wireless Earbuds", 39_000), ("Cotton T-Shirt", 12_900), ("Running Shoes", 59_000),
    ("Coffee Beans 1kg", 24_500), ("Ceramic Mug", 8_900), ("Backpack", 45_000),
    ("Desk Lamp", 29_900), ("Yoga Mat", 19_900), ("Water Bottle", 9_900),
    ("Hoodie", 35_000), ("Notebook Set", 6_500), ("Phone Case", 11_000),
    ("Sunscreen SPF50", 15_800), ("Green Tea 100 bags", 13_200), ("Socks 5-pack", 7_900),
    ("Bluetooth Speaker", 49_000), ("Kimchi 2kg", 21_000), ("Face Mask 10-pack", 10_500),
    ("Umbrella", 16_000), ("Linen Shirt", 32_000),
)  # fmt: skip
_COLORS = ("Black", "White", "Navy", "Sage", "Coral")
_SIZES = ("S", "M", "L", "XL")

Lines = list[tuple[CatalogVariant, int]]


class DemoError(RuntimeError):
    """The demo cannot go on (e.g. seeding over HTTP failed); the message says why."""


def _note(stats: ScenarioStats, message: str) -> None:
    if len(stats.notes) < _MAX_NOTES:
        stats.notes.append(message)
    elif len(stats.notes) == _MAX_NOTES:
        stats.notes.append("(further findings not listed)")


def _fail(what: str, reply: Reply) -> DemoError:
    detail = reply.json_dict().get("message") or reply.body
    return DemoError(f"{what}: HTTP {reply.status} {reply.code} {detail}".rstrip())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _order_items(lines: Sequence[tuple[CatalogVariant, int]]) -> list[dict[str, int]]:
    return [{"variant_id": v.id, "quantity": q} for v, q in lines]


# -- seeding ---------------------------------------------------------------------------
async def login(api: ApiClient, email: str, password: str) -> dict[str, str]:
    """``POST /auth/token`` and return the ``Authorization`` header.

    Raises:
        DemoError: when the login is refused.
    """
    reply = await api.request("POST", "/auth/token", data={"username": email, "password": password})
    token = reply.json_dict().get("access_token")
    if not reply.ok or not isinstance(token, str):
        raise _fail(f"login of {email}", reply)
    return {"Authorization": f"Bearer {token}"}


def _catalog_payloads(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """``count`` ordinary product bodies for ``POST /admin/products``; some with variants."""
    payloads: list[dict[str, Any]] = []
    for index in range(count):
        brand = _BRANDS[index % len(_BRANDS)]
        item, base_price = _ITEMS[(index // len(_BRANDS) + index) % len(_ITEMS)]
        # Prices end in 00 KRW and vary around the item's usual price.
        price = max(1_000, round(base_price * rng.uniform(0.7, 1.4) / 100) * 100)
        roll = rng.random()
        if roll < 0.6:
            options: list[tuple[str, int]] = [("Standard", price)]
        elif roll < 0.85:
            options = [(c, price) for c in rng.sample(_COLORS, rng.randint(2, 3))]
        else:
            options = [(s, price + i * 1_000) for i, s in enumerate(_SIZES)]
        payloads.append(
            {
                "name": f"{brand} {item} #{index + 1:03d}",
                "description": f"{item} by {brand}.",
                "sale_starts_at": None,
                "sale_ends_at": None,
                "per_user_limit": None,
                "variants": [
                    {
                        "sku": f"FS-{index + 1:04d}-{v + 1}",
                        "name": name,
                        "price": option_price,
                        "stock": rng.randint(5_000, 20_000),
                    }
                    for v, (name, option_price) in enumerate(options)
                ],
            }
        )
    return payloads


def _product_from(body: dict[str, Any]) -> CatalogProduct:
    product_id = int(body["id"])
    return CatalogProduct(
        id=product_id,
        name=str(body["name"]),
        per_user_limit=body.get("per_user_limit"),
        variants=[
            CatalogVariant(
                id=int(v["id"]),
                product_id=product_id,
                sku=str(v["sku"]),
                price=int(v["price"]),
                stock=int(v["stock"]),
            )
            for v in body["variants"]
        ],
    )


async def seed_world(
    api: ApiClient,
    *,
    admin_email: str,
    admin_password: str,
    users: int,
    products: int,
    concurrency: int,
    rng: random.Random,
    progress: Callable[[str, int], Callable[[], None]],
) -> World:
    """Create the catalog, the limited edition, the flash deal, the coupon and ``users``
    charged users.

    Args:
        api: client of the running server.
        admin_email / admin_password: the admin bootstrapped by the server.
        users: how many users to sign up, log in and charge ``WALLET_CHARGE`` KRW.
        products: how many ordinary products (plus the limited edition and the flash deal).
        concurrency: requests in flight at most.
        rng: the demo's random source (names, prices, stock).
        progress: ``progress(description, total)`` returns the per-item tick callback.

    Raises:
        DemoError: on the first refused seeding request.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    admin_headers = await login(api, admin_email, admin_password)

    payloads = _catalog_payloads(rng, products)
    # In payload order, not id order: ids depend on which concurrent request landed
    # first, and the same --seed must make the same products popular.
    created: list[CatalogProduct | None] = [None] * len(payloads)

    async def create_product(index: int) -> None:
        payload = payloads[index]
        reply = await api.request("POST", "/admin/products", headers=admin_headers, json=payload)
        if reply.status != 201:
            raise _fail(f"creating product {payload['name']!r}", reply)
        created[index] = _product_from(reply.json_dict())

    await run_pool(
        range(len(payloads)),
        create_product,
        concurrency=concurrency,
        on_done=progress("seed catalog", len(payloads)),
    )
    catalog = [p for p in created if p is not None]

    now = datetime.now(UTC)
    limited_reply = await api.request(
        "POST",
        "/admin/products",
        headers=admin_headers,
        json={
            "name": "Limited Edition Sneakers (100 pairs)",
            "description": "Numbered pairs, one per customer.",
            "sale_starts_at": _iso(now - timedelta(minutes=5)),
            "sale_ends_at": _iso(now + timedelta(hours=6)),
            "per_user_limit": 1,
            "variants": [
                {"sku": "FS-LIMITED-1", "name": "One size", "price": LIMITED_PRICE,
                 "stock": LIMITED_STOCK}
            ],
        },
    )  # fmt: skip
    if limited_reply.status != 201:
        raise _fail("creating the limited edition", limited_reply)
    limited = _product_from(limited_reply.json_dict())

    hold_reply = await api.request(
        "POST",
        "/admin/products",
        headers=admin_headers,
        json={
            "name": f"Flash Deal Smartwatch ({HOLD_STOCK} units)",
            "description": "Pay within the payment deadline or the unit goes back on sale.",
            "sale_starts_at": None,
            "sale_ends_at": None,
            "per_user_limit": None,
            "variants": [
                {"sku": "FS-DEAL-1", "name": "One size", "price": HOLD_PRICE, "stock": HOLD_STOCK}
            ],
        },
    )
    if hold_reply.status != 201:
        raise _fail("creating the flash deal", hold_reply)
    hold = _product_from(hold_reply.json_dict())

    coupon_reply = await api.request(
        "POST",
        "/admin/coupons",
        headers=admin_headers,
        json={
            "name": f"Flash sale {COUPON_DISCOUNT:,} KRW off",
            "discount_type": "FIXED",
            "discount_value": COUPON_DISCOUNT,
            "max_discount_amount": None,
            "min_order_amount": COUPON_MIN_ORDER,
            "total_quantity": COUPON_QUANTITY,
            "issue_starts_at": None,
            "issue_ends_at": None,
            "valid_days": 7,
        },
    )
    if coupon_reply.status != 201:
        raise _fail("creating the coupon", coupon_reply)
    coupon_id = int(coupon_reply.json_dict()["id"])

    people = [DemoUser(index=i, email=f"shopper{i:05d}@example.com") for i in range(users)]

    async def onboard(user: DemoUser) -> None:
        reply = await api.request(
            "POST",
            "/auth/signup",
            json={"email": user.email, "password": PASSWORD, "name": f"Shopper {user.index}"},
        )
        if reply.status != 201:
            raise _fail(f"signing up {user.email}", reply)
        user.user_id = int(reply.json_dict()["user_id"])
        user.headers = await login(api, user.email, PASSWORD)
        reply = await api.request(
            "POST", "/me/wallet/charges", headers=user.headers, json={"amount": WALLET_CHARGE}
        )
        if reply.status != 201:
            raise _fail(f"charging the wallet of {user.email}", reply)
        user.charged += WALLET_CHARGE

    await run_pool(
        people, onboard, concurrency=concurrency, on_done=progress("seed users", len(people))
    )

    # A few products draw most of the demand (Zipf-like), as in a real sale.
    ranks = list(range(1, len(catalog) + 1))
    rng.shuffle(ranks)
    weights = [1.0 / r**0.9 for r in ranks]
    return World(
        admin_headers=admin_headers,
        products=catalog,
        weights=weights,
        limited=limited,
        hold=hold,
        coupon_id=coupon_id,
        users=people,
        seconds=loop.time() - started,
    )


# -- scenarios -------------------------------------------------------------------------
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
            _note(stats, f"{user.email} was issued the coupon {len(wins)} times")
        for win in wins:
            if win.status != 201:
                _note(stats, f"issue answered {win.status}, not 201")
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
        _note(stats, f"GET /coupons/{world.coupon_id} answered {reply.status} {reply.code}")
    elif remaining != COUPON_QUANTITY - issued:
        _note(stats, f"remaining_quantity is {remaining}, expected {COUPON_QUANTITY - issued}")
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
            _note(stats, f"{user.email} bought {len(wins)} units (per-user limit 1)")
        for win in wins:
            if _check_order(stats, win, [(variant, 1)], coupon=False):
                world.track(user, win.json_dict(), [(variant, 1)], "limited", instance=win.instance)
            sold += 1
        tick()
        if taps > 1:
            tick()

    tick = progress("limited rush", len(order) + len(doubles))
    stats.start()
    await run_pool(order, buy, concurrency=concurrency)
    stats.finish()

    stock = await _product_stock(api, stats, world.limited)
    return stats, sold, stock


def _check_order(
    stats: ScenarioStats,
    reply: Reply,
    lines: Sequence[tuple[CatalogVariant, int]],
    *,
    coupon: bool,
    status: str = "PAID",
) -> bool:
    """Check a 201 order body against what was asked (DESIGN §5 discount rules).

    ``status`` is the expected one: ``PAID`` (with one PAYMENT of ``paid_amount``) or
    ``PENDING`` (with ``expires_at`` and no payment). Returns False when the body cannot
    be tracked (no ``order_id`` or ``paid_amount``); mismatches are notes.
    """
    order = reply.json_dict()
    if not isinstance(order.get("order_id"), int) or not isinstance(order.get("paid_amount"), int):
        _note(stats, f"order answer without order_id/paid_amount: {reply.status} {reply.body}")
        return False
    order_id = order["order_id"]
    total = sum(v.price * q for v, q in lines)
    discount = min(COUPON_DISCOUNT, total) if coupon else 0
    if reply.status != 201:
        _note(stats, f"order answered {reply.status}, not 201")
    if order.get("status") != status:
        _note(stats, f"order {order_id} is {order.get('status')}, not {status}")
    got = (order.get("total_amount"), order.get("discount_amount"), order.get("paid_amount"))
    if got != (total, discount, total - discount):
        _note(
            stats,
            f"order {order_id}: (total, discount, paid) = {got}, "
            f"expected {(total, discount, total - discount)}",
        )
    payments = [(p.get("kind"), p.get("amount")) for p in order.get("payments") or []]
    if status == "PAID" and payments != [("PAYMENT", total - discount)]:
        _note(stats, f"order {order_id}: payments {payments}, expected one PAYMENT")
    if status == "PENDING" and (payments or parse_time(order.get("expires_at")) is None):
        _note(stats, f"pending order {order_id}: payments {payments}, no expires_at")
    return True


async def _product_stock(
    api: ApiClient, stats: ScenarioStats, product: CatalogProduct
) -> int | None:
    """``GET /products/{id}``'s ``stock`` (None, and a note, when it cannot be read)."""
    reply = await api.request("GET", f"/products/{product.id}")
    stock = reply.json_dict().get("stock")
    if not reply.ok or not isinstance(stock, int):
        _note(stats, f"GET /products/{product.id} answered {reply.status} {reply.code}")
        return None
    return stock


async def _sleep_until(moment: datetime) -> None:
    """Sleep until the wall clock (UTC) reaches ``moment``; the server shares this clock."""
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


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
        _note(stats, f"POST {path} key {key}: {len(executed)} of 2 sends executed ({codes})")
    original = executed[0] if executed else replies[0]
    for replay in replays:
        if (replay.status, replay.body) != (original.status, original.body):
            _note(
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
        body: dict[str, Any] = {"items": _order_items(lines), "pay": True}
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
            if _check_order(self.stats, reply, lines, coupon=use_coupon):
                order = self.world.track(
                    user, reply.json_dict(), lines, "shopping", instance=reply.instance
                )
                self.world.cancellable.append(order)
        elif use_coupon:
            user.user_coupon_id = coupon_id  # refused: the coupon is still the user's

    async def pay_later(self, *, pay: bool) -> None:
        """A pay-later order (``pay: false``): paid after a short pause when ``pay``,
        else abandoned (it must expire, see :func:`check_expiries`)."""
        world, life = self.world, self.world.lifecycle
        user = self.rng.choice(world.users)
        lines = self.pick_lines()
        reply = await self.post("/orders", user, {"items": _order_items(lines), "pay": False})
        if not reply.ok:
            return
        if not _check_order(self.stats, reply, lines, coupon=False, status="PENDING"):
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
                _note(self.stats, f"paid order {order.order_id}: {body.get('status')} {payments}")
            if paid_at is None or order.expires_at is None or paid_at >= order.expires_at:
                _note(
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
            _note(self.stats, f"payment of order {order.order_id}: {reply.status} {reply.code}")

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
                _note(self.stats, f"cancel of order {order.order_id}: {reply.status} {reply.code}")
            return
        body = reply.json_dict()
        refunds = [p.get("amount") for p in body.get("payments") or [] if p.get("kind") == "REFUND"]
        if body.get("status") != "CANCELLED" or refunds != [order.paid_amount]:
            _note(
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
                _note(stats, f"PUT /me/cart/items/{variant.id}: {reply.status} {reply.code}")
                await self._clear_cart(user, lines)
                return
        reply = await api.request("GET", "/me/cart", headers=user.headers, stats=stats)
        self._check_cart(reply, lines, "filled")
        order_reply = await self.post("/me/cart/checkout", user, {"pay": True})
        if order_reply.ok:
            if _check_order(stats, order_reply, lines, coupon=False):
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
            _note(
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
        body = {"items": _order_items(lines), "pay": False}
        reply = await api.request("POST", "/orders", headers=user.headers, json=body, stats=stats)
        if reply.status != 201:
            _note(stats, f"holding {quantity} units: {reply.status} {reply.code}")
        elif _check_order(stats, reply, lines, coupon=False, status="PENDING"):
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

    stock = await _product_stock(api, stats, world.hold)
    if datetime.now(UTC) < first_deadline:  # every hold still stands
        life.hold_stock_while_held = stock
        if stock != HOLD_STOCK - life.hold_units:
            _note(stats, f"stock {stock} while {life.hold_units} units are held")
    # pay: false, so the buyer's balance plays no part: only the stock can refuse.
    probe_lines = [(variant, 1)]
    probe_user = rng.choice(world.users)
    probe = await api.request(
        "POST",
        "/orders",
        headers=probe_user.headers,
        json={"items": _order_items(probe_lines), "pay": False},
        stats=stats,
    )
    in_time = datetime.now(UTC) < first_deadline
    if probe.ok:
        if in_time:
            _note(stats, "an order got a unit while every unit was held (oversold)")
        if _check_order(stats, probe, probe_lines, coupon=False, status="PENDING"):
            held.append(
                world.track(
                    probe_user, probe.json_dict(), probe_lines, "hold", instance=probe.instance
                )
            )
    elif probe.code != "OUT_OF_STOCK":
        _note(stats, f"an order of a held unit answered {probe.status} {probe.code}")
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
       may keep a stale "sold out" for 1 s, DESIGN §2).

    Figures go to ``world.lifecycle`` (``hold_*``); findings to the stats' notes.
    Returns ``stats``, finished.
    """
    life = world.lifecycle
    try:
        deadlines = [o.expires_at for o in held if o.expires_at is not None]
        if not deadlines:
            return stats
        deadline = max(deadlines)
        await _sleep_until(deadline)
        give_up = deadline + timedelta(seconds=EXPIRY_GRACE_S)
        while True:
            stock = await _product_stock(api, stats, world.hold)
            now = datetime.now(UTC)
            if stock == HOLD_STOCK:
                life.hold_release_lag_s = (now - deadline).total_seconds()
                break
            if now > give_up:
                _note(stats, f"stock {stock}, not {HOLD_STOCK}, {EXPIRY_GRACE_S:g} s after")
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
                _note(stats, f"held order {order.order_id} is {status} after its deadline")

        await run_pool(held, expired, concurrency=min(concurrency, 8))
        if life.hold_release_lag_s is not None:
            await _resell(api, world, stats, rng, concurrency=min(concurrency, HOLD_STOCK // 2))
            life.hold_stock_after = await _product_stock(api, stats, world.hold)
            if life.hold_stock_after != HOLD_STOCK - life.hold_resold:
                _note(stats, f"stock {life.hold_stock_after} after reselling {life.hold_resold}")
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
    body = {"items": _order_items(lines), "pay": True}
    attempts = 10

    async def buy(_: int) -> None:
        user = rng.choice(world.users)
        for _attempt in range(attempts):
            reply = await api.request(
                "POST", "/orders", headers=user.headers, json=body, stats=stats
            )
            if reply.ok:
                if _check_order(stats, reply, lines, coupon=False):
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
                    _note(stats, f"topping up {user.email}: {charge.status} {charge.code}")
                    return
                user.charged += HOLD_PRICE
            else:
                _note(stats, f"buying a released unit: {reply.status} {reply.code}")
                return
        _note(stats, f"a released unit was not sold in {attempts} attempts")

    await run_pool(range(HOLD_STOCK), buy, concurrency=concurrency)


async def check_expiries(api: ApiClient, world: World, *, concurrency: int) -> list[str]:
    """Every abandoned pay-later order of shopping must become EXPIRED.

    Waits until the latest ``expires_at`` has passed, then polls ``GET /orders/{id}``
    of each until it is EXPIRED (at most ``EXPIRY_GRACE_S`` past its deadline). Returns
    one finding per order that did not expire (empty when all did).
    """
    findings: list[str] = []
    orders = list(world.abandoned)
    deadlines = [o.expires_at for o in orders if o.expires_at is not None]
    if not deadlines:
        return findings
    await _sleep_until(max(deadlines))

    async def check(order: TrackedOrder) -> None:
        give_up = (order.expires_at or max(deadlines)) + timedelta(seconds=EXPIRY_GRACE_S)
        while True:
            reply = await api.request(
                "GET", f"/orders/{order.order_id}", headers=order.user.headers
            )
            status = reply.json_dict().get("status")
            if status == "EXPIRED":
                world.expired(order)
                world.lifecycle.expired += 1
                return
            if not reply.ok or status != "PENDING" or datetime.now(UTC) > give_up:
                findings.append(
                    f"pay-later order {order.order_id} is {status or reply.code} "
                    f"after its deadline {order.expires_at}"
                )
                return
            await asyncio.sleep(0.2)

    await run_pool(orders, check, concurrency=concurrency)
    return findings[:_MAX_NOTES]


async def check_stock(api: ApiClient, world: World, *, concurrency: int) -> list[str]:
    """Every variant's stock (``GET /products/{id}``) must be the seeded stock minus the
    units of the orders that are PAID or PENDING now: units of cancelled and expired
    orders are back. Returns one finding per mismatch (empty when all agree)."""
    findings: list[str] = []
    expected = world.expected_stock()

    async def check(product: CatalogProduct) -> None:
        reply = await api.request("GET", f"/products/{product.id}")
        if not reply.ok:
            findings.append(f"GET /products/{product.id}: {reply.status} {reply.code}")
            return
        for variant in reply.json_dict().get("variants") or []:
            want = expected.get(int(variant["id"]))
            if variant.get("stock") != want:
                findings.append(
                    f"variant {variant['id']} of product {product.id} has stock "
                    f"{variant.get('stock')}, expected {want}"
                )

    await run_pool(world.all_products, check, concurrency=concurrency)
    return findings[:_MAX_NOTES]


async def check_wallets(
    api: ApiClient, world: World, *, sample: int, rng: random.Random, concurrency: int
) -> tuple[int, list[str]]:
    """Compare ``GET /me/wallet`` with charged - paid + refunded: for ``sample`` random
    users and every user who got a refund.

    Returns ``(wallets checked, findings)``; one finding per mismatch.
    """
    findings: list[str] = []
    chosen = set(rng.sample(world.users, min(sample, len(world.users))))
    chosen.update(u for u in world.users if u.refunded)

    async def check(user: DemoUser) -> None:
        reply = await api.request("GET", "/me/wallet", headers=user.headers)
        balance = reply.json_dict().get("balance")
        if not reply.ok:
            findings.append(f"GET /me/wallet of {user.email}: {reply.status} {reply.code}")
        elif balance != user.expected_balance:
            findings.append(
                f"wallet of {user.email} holds {balance} KRW, expected {user.charged} charged "
                f"- {user.spent} paid + {user.refunded} refunded = {user.expected_balance}"
            )

    await run_pool(sorted(chosen, key=lambda u: u.index), check, concurrency=concurrency)
    return len(chosen), findings[:_MAX_NOTES]


async def fetch_popular(
    api: ApiClient, world: World, *, limit: int = 5, settle_seconds: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    """``GET /products/popular?limit&days=3`` once every instance's ranking agrees with
    the paid orders.

    Every worker process of every instance serves the ranking from its own memory, fed
    by order events (from other instances through the database), so it may lag for a
    moment; this asks each instance in turn and polls for up to ``settle_seconds`` until
    three rounds in a row show, on every instance, the client's own tally (product id
    and units of the orders that stay PAID: cancelled sales leave the ranking), ties to
    the lower product id.

    Returns ``(last answer body, findings)``; findings are empty when it agreed, else
    name the instance that did not.
    """
    expected = world.expected_top(limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_seconds
    agreeing = 0
    body: dict[str, Any] = {}
    while True:
        differing: list[str] = []
        for instance in range(api.instances):
            reply = await api.request(
                "GET", "/products/popular", params={"limit": limit, "days": 3}, instance=instance
            )
            body = reply.json_dict()
            where = f" on {api.server_urls[instance]}" if api.instances > 1 else ""
            if not reply.ok:
                return body, [f"GET /products/popular{where} answered {reply.status} {reply.code}"]
            items = body.get("items") or []
            served = [(int(i["product_id"]), int(i["quantity"])) for i in items]
            if served != expected:
                differing.append(
                    f"popular ranking{where} {served} differs from the paid orders' "
                    f"top {limit} {expected}"
                )
        agreeing = 0 if differing else agreeing + 1
        if agreeing >= 3:
            return body, []
        if loop.time() > deadline:
            return body, differing
        await asyncio.sleep(0.2)
