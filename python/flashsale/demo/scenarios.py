"""Seeding and the three flash-sale scenarios of ``flashsale demo``, over real HTTP.

Everything goes through the public API (``/api/v1``, DESIGN §5): the admin creates the
catalog and the coupon, users sign up, log in and charge their wallets, then

(a) *coupon rush* -- every user asks for the 100-unit coupon at once (a tenth of them
    double-tap, firing twice concurrently);
(b) *limited rush* -- every user tries to buy one unit of the 100-unit limited edition
    (per-user limit 1; a tenth double-tap);
(c) *shopping* -- for a number of seconds, multi-line paid orders on the rest of the
    catalog (popular products picked more often), coupon winners spending their coupon
    on some orders, and reads of the popular-products ranking.

Each scenario checks what the client can see for itself (e.g. no user issued the
coupon twice, ``paid_amount = total_amount - discount_amount``) and writes findings to
its :class:`~flashsale.demo.client.ScenarioStats` ``notes``. Money is integer KRW, times
are UTC.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.demo.client import ApiClient, Reply, ScenarioStats, run_for, run_pool

__all__ = [
    "COUPON_DISCOUNT",
    "COUPON_MIN_ORDER",
    "COUPON_QUANTITY",
    "LIMITED_STOCK",
    "WALLET_CHARGE",
    "CatalogProduct",
    "CatalogVariant",
    "DemoError",
    "DemoUser",
    "World",
    "check_wallets",
    "coupon_rush",
    "fetch_popular",
    "limited_rush",
    "login",
    "seed_world",
    "shopping",
]

#: Units of the limited-edition product.
LIMITED_STOCK = 100
#: Price of the limited edition, KRW.
LIMITED_PRICE = 129_000
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
#: Share of shopping steps that read the popular ranking instead of ordering.
POPULAR_READ_SHARE = 0.1
#: Chance that a coupon holder spends it on a given eligible order.
COUPON_USE_SHARE = 0.5
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


class DemoError(RuntimeError):
    """The demo cannot go on (e.g. seeding over HTTP failed); the message says why."""


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
        spent: KRW paid by this user's 201 orders (``paid_amount`` sum).
        user_coupon_id: the rush coupon while won and not yet spent or in flight.
        coupon_won: whether the coupon rush issued this user the coupon.
    """

    index: int
    email: str
    user_id: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    charged: int = 0
    spent: int = 0
    user_coupon_id: int | None = None
    coupon_won: bool = False


@dataclass
class World:
    """What seeding created, and the client-side tally of what was sold.

    Attributes:
        admin_headers: bearer header of the admin.
        products: the ordinary catalog (not the limited edition).
        weights: relative pick weight per entry of ``products`` (a few are popular).
        limited: the limited-edition product (one variant, ``LIMITED_STOCK`` units).
        coupon_id: id of the rush coupon.
        users: the seeded users.
        units_by_product: product id -> units in 201 orders.
        orders_by_product: product id -> number of 201 orders containing it.
        paid_orders: number of 201 orders.
        coupon_orders: 201 orders that used the coupon.
        seconds: wall time of seeding, seconds.
    """

    admin_headers: dict[str, str]
    products: list[CatalogProduct]
    weights: list[float]
    limited: CatalogProduct
    coupon_id: int
    users: list[DemoUser]
    units_by_product: Counter[int] = field(default_factory=Counter)
    orders_by_product: Counter[int] = field(default_factory=Counter)
    paid_orders: int = 0
    coupon_orders: int = 0
    seconds: float = 0.0

    @property
    def variant_count(self) -> int:
        """Variants in the ordinary catalog."""
        return sum(len(p.variants) for p in self.products)

    def tally_order(self, user: DemoUser, lines: Sequence[tuple[CatalogVariant, int]]) -> None:
        """Count a 201 order of ``lines`` (variant, quantity)."""
        self.paid_orders += 1
        for product_id in {v.product_id for v, _ in lines}:
            self.orders_by_product[product_id] += 1
        for variant, quantity in lines:
            self.units_by_product[variant.product_id] += quantity

    def expected_top(self, limit: int) -> list[tuple[int, int]]:
        """Top ``limit`` (product_id, units) by units, ties to the lower product id."""
        ranked = sorted(self.units_by_product.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(pid, units) for pid, units in ranked if units > 0][:limit]


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
    """Create the catalog, the limited edition, the coupon and ``users`` charged users.

    Args:
        api: client of the running server.
        admin_email / admin_password: the admin bootstrapped by the server.
        users: how many users to sign up, log in and charge ``WALLET_CHARGE`` KRW.
        products: how many ordinary products (plus one limited edition).
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
            _check_order(stats, win, [(variant, 1)], coupon=False)
            sold += 1
            user.spent += int(win.json_dict().get("paid_amount", 0))
            world.tally_order(user, [(variant, 1)])
        tick()
        if taps > 1:
            tick()

    tick = progress("limited rush", len(order) + len(doubles))
    stats.start()
    await run_pool(order, buy, concurrency=concurrency)
    stats.finish()

    reply = await api.request("GET", f"/products/{world.limited.id}")
    stock = reply.json_dict().get("stock")
    if not reply.ok or not isinstance(stock, int):
        _note(stats, f"GET /products/{world.limited.id} answered {reply.status} {reply.code}")
        return stats, sold, None
    return stats, sold, stock


def _check_order(
    stats: ScenarioStats,
    reply: Reply,
    lines: Sequence[tuple[CatalogVariant, int]],
    *,
    coupon: bool,
) -> None:
    """Check a 201 order body against what was asked (DESIGN §5 discount rules)."""
    order = reply.json_dict()
    total = sum(v.price * q for v, q in lines)
    discount = min(COUPON_DISCOUNT, total) if coupon else 0
    if reply.status != 201:
        _note(stats, f"order answered {reply.status}, not 201")
    if order.get("status") != "PAID":
        _note(stats, f"order {order.get('order_id')} is {order.get('status')}, not PAID")
    got = (order.get("total_amount"), order.get("discount_amount"), order.get("paid_amount"))
    if got != (total, discount, total - discount):
        _note(
            stats,
            f"order {order.get('order_id')}: (total, discount, paid) = {got}, "
            f"expected {(total, discount, total - discount)}",
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
    """Ordinary shopping for ``seconds``: paid orders of 1-4 lines (quantity 1-3).

    Products are picked by ``world.weights``; coupon winners spend the coupon on about
    half of their eligible orders (total >= ``COUPON_MIN_ORDER``) until it is used;
    ``POPULAR_READ_SHARE`` of the steps read ``GET /products/popular``. A user may run
    out of money (``INSUFFICIENT_BALANCE`` is an expected answer).
    """
    stats = ScenarioStats(
        "shopping", expected_codes=frozenset({"INSUFFICIENT_BALANCE", "OUT_OF_STOCK"})
    )
    products = world.products
    cum_weights = list(itertools.accumulate(world.weights))
    users = world.users

    async def step() -> None:
        if rng.random() < POPULAR_READ_SHARE:
            await api.request(
                "GET", "/products/popular", params={"limit": 5, "days": 3}, stats=stats
            )
            return
        user = rng.choice(users)
        picked: dict[int, tuple[CatalogVariant, int]] = {}
        for product in rng.choices(products, cum_weights=cum_weights, k=rng.randint(1, 4)):
            variant = rng.choice(product.variants)
            picked[variant.id] = (variant, rng.randint(1, 3))
        lines = list(picked.values())
        total = sum(v.price * q for v, q in lines)
        body: dict[str, Any] = {
            "items": [{"variant_id": v.id, "quantity": q} for v, q in lines],
            "pay": True,
        }
        coupon_id = user.user_coupon_id
        use_coupon = (
            coupon_id is not None and total >= COUPON_MIN_ORDER and rng.random() < COUPON_USE_SHARE
        )
        if use_coupon:
            body["user_coupon_id"] = coupon_id
            user.user_coupon_id = None  # in flight: no second order may use it meanwhile
        reply = await api.request("POST", "/orders", headers=user.headers, json=body, stats=stats)
        if reply.ok:
            _check_order(stats, reply, lines, coupon=use_coupon)
            user.spent += int(reply.json_dict().get("paid_amount", 0))
            world.tally_order(user, lines)
            world.coupon_orders += use_coupon
        elif use_coupon:
            user.user_coupon_id = coupon_id  # refused: the coupon is still the user's

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
    await run_for(seconds, step, concurrency=concurrency, on_done=on_done)
    stats.finish()
    while ticked < round(seconds):
        ticked += 1
        with_progress()
    return stats


async def check_wallets(
    api: ApiClient, world: World, *, sample: int, rng: random.Random, concurrency: int
) -> list[str]:
    """Compare ``GET /me/wallet`` with charged - paid for ``sample`` random users.

    Returns one finding per mismatch (empty when all agree).
    """
    findings: list[str] = []
    chosen = rng.sample(world.users, min(sample, len(world.users)))

    async def check(user: DemoUser) -> None:
        reply = await api.request("GET", "/me/wallet", headers=user.headers)
        balance = reply.json_dict().get("balance")
        if not reply.ok:
            findings.append(f"GET /me/wallet of {user.email}: {reply.status} {reply.code}")
        elif balance != user.charged - user.spent:
            findings.append(
                f"wallet of {user.email} holds {balance} KRW, expected "
                f"{user.charged} charged - {user.spent} paid = {user.charged - user.spent}"
            )

    await run_pool(chosen, check, concurrency=concurrency)
    return findings


async def fetch_popular(
    api: ApiClient, world: World, *, limit: int = 5, settle_seconds: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    """``GET /products/popular?limit&days=3`` once the ranking agrees with the paid orders.

    Every worker process serves the ranking from its own memory, fed by order events,
    so it may lag for a moment; this polls for up to ``settle_seconds`` until three
    answers in a row show the client's own tally (product id and units), ties to the
    lower product id.

    Returns ``(last answer body, findings)``; findings are empty when it agreed.
    """
    expected = world.expected_top(limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_seconds
    agreeing = 0
    body: dict[str, Any] = {}
    served: list[tuple[int, int]] = []
    while True:
        reply = await api.request("GET", "/products/popular", params={"limit": limit, "days": 3})
        body = reply.json_dict()
        if not reply.ok:
            return body, [f"GET /products/popular answered {reply.status} {reply.code}"]
        items = body.get("items") or []
        served = [(int(i["product_id"]), int(i["quantity"])) for i in items]
        agreeing = agreeing + 1 if served == expected else 0
        if agreeing >= 3:
            return body, []
        if loop.time() > deadline:
            return body, [
                f"popular ranking {served} differs from the paid orders' top {limit} {expected}"
            ]
        await asyncio.sleep(0.2)
