"""Seeding of ``flashsale demo``, over real HTTP (``/api/v1``, docs/api.md).

The admin creates the catalog (ordinary products, some with several variants), the
limited edition, the pay-later flash deal and the rush coupon; users sign up, log in and
charge their wallets. :func:`seed_world` returns the demo's own account of all that, the
:class:`~flashsale.demo.world.World` the scenarios and end checks work on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.demo.client import ApiClient, Reply, run_pool
from flashsale.demo.common import (
    COUPON_DISCOUNT,
    COUPON_MIN_ORDER,
    COUPON_QUANTITY,
    HOLD_PRICE,
    HOLD_STOCK,
    LIMITED_PRICE,
    LIMITED_STOCK,
    WALLET_CHARGE,
    DemoError,
)
from flashsale.demo.world import (
    CatalogProduct,
    CatalogVariant,
    DemoUser,
    World,
)

__all__ = [
    "PASSWORD",
    "login",
    "seed_world",
]

#: Password of every demo user (satisfies the sign-up rule).
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


def _fail(what: str, reply: Reply) -> DemoError:
    """The error that stops the demo when a seeding request was refused."""
    detail = reply.json_dict().get("message") or reply.body
    return DemoError(f"{what}: HTTP {reply.status} {reply.code} {detail}".rstrip())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


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
