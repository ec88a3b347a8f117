"""``flashsale seed``: fill a database with a realistic month of sales, through the services.

Everything goes through the domain services, one transaction per unit of work
(:func:`flashsale.db.session.transaction`), exactly as the API would do it:
products and coupons are created by the catalog and coupon services, users by
the auth service (with an empty wallet), money by wallet charges, orders by
:func:`flashsale.orders.service.place_order` (stock gate, sale window,
purchase limit, coupon rules, balance), later payments by ``pay_order``,
cancellations by ``cancel_order`` (refund, stock and coupon back, ranking
undone) and abandoned pay-later orders by ``expire_overdue``. Orders are
placed in time order at past times (the services' ``now``), so every rule is
checked as it would have been then; the audit (docs/invariants.md) holds afterwards.

The month (``--history-days`` ending now, deterministic for a ``--seed``):

- **Popularity**: product ``r`` of the popularity order is picked with weight
  ``r ** -1.1`` (Zipf-like); buyers' activity is log-normal (a few heavy buyers).
- **Trends**: ~10 % of the products trend for a few days (a launch, a review,
  the season): they climb to the top and fall back, so the leaders change.
- **Cycles**: hours follow a Korean shop's day (Asia/Seoul: lunch bump, evening
  peak, quiet nights); weekends sell ~35 % more.
- **Bulk items**: food and beauty products sell several units per order, so
  ranking by units and by orders differ.
- **Flash sales**: three limited items (stock: 2-4.5 % of ``--orders`` in
  units, at most 2 per buyer) open for 2 hours at 20:00 KST on three days; a
  rush of ~1.5 units asked per unit in stock sells them out within minutes and
  late buyers get ``OUT_OF_STOCK``.
- **Cancellations**: ~5 % of paid orders are cancelled minutes to a day later.
- **Coupons**: three coupons (fixed and percent); buyers holding one use it on
  ~35 % of the orders that meet its minimum.
- **Pay later**: ~3 % of orders are placed unpaid; most are paid minutes later,
  the rest expire.

Back-dating: the order, wallet and coupon-issue services take a ``now``, so orders,
payments, cancellations and expiries happen at their time in the history, opening
balances are charged and coupons issued at its start, and top-ups are charged at the
time of the order that needs them. Creating a user (auth), a product (catalog) or a
coupon takes no ``now``: users' sign-ups and the ``created_at`` of products and
coupons are the seeding time, after the orders that use them. Sale windows and
coupon validity are set to cover the history. Seeded users' password is
``SEEDED_PASSWORD``, hashed with the lowest bcrypt cost (thousands of sign-ups;
these accounts are synthetic).

The command line (options and exit codes) is in :mod:`flashsale.cli`; this module
is :func:`seed_history`.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from flashsale.audit import run_audit
from flashsale.auth.service import create_user
from flashsale.catalog.schemas import ProductIn, VariantIn
from flashsale.catalog.service import create_product
from flashsale.coupons.schemas import CouponIn
from flashsale.coupons.service import create_coupon, issue
from flashsale.db.engine import Database, make_sync_engine
from flashsale.db.migrate import upgrade
from flashsale.db.models import order_items, orders, products
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.db.writer import run_in_session
from flashsale.errors import FlashsaleError
from flashsale.gates import CouponIssueGate, StockGate
from flashsale.orders.schemas import OrderIn, OrderLineIn
from flashsale.orders.service import cancel_order, expire_overdue, pay_order, place_order
from flashsale.ranking.service import RankingService
from flashsale.settings import Settings
from flashsale.wallet.service import MAX_CHARGE, charge_op

#: Password of every seeded user (satisfies the sign-up rule).
SEEDED_PASSWORD = "Seeded-shopper-1!"
#: bcrypt's lowest cost: seeded accounts are synthetic, and there are thousands.
SEED_HASH_COST = 4
SHOP_TZ = ZoneInfo("Asia/Seoul")

ZIPF = 1.1
CANCEL_SHARE = 0.05
PAY_LATER_SHARE = 0.03
TRENDING_SHARE = 0.1
BULK_ORDER_WEIGHT = 0.35
COUPON_USE_SHARE = 0.35
# Relative sales by hour of the day in the shop's zone (Asia/Seoul).
HOUR_WEIGHTS = (3, 2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 10, 9, 7, 7, 7, 8, 9, 11, 14, 15, 12, 6)
# Monday first.
WEEKDAY_WEIGHTS = (1.0, 0.95, 0.95, 1.0, 1.1, 1.35, 1.35)

# (category, bulk buyer pattern, price range in KRW, variant names)
CATEGORIES: tuple[tuple[str, bool, tuple[int, int], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "electronics",
        False,
        (15_000, 250_000),
        ("Black", "White"),
        (
            "Wireless Earbuds",
            "Bluetooth Speaker",
            "USB-C Charger",
            "Power Bank",
            "Smart Watch",
            "Mechanical Keyboard",
            "Gaming Mouse",
            "Webcam",
            "Phone Case",
            "Screen Protector",
        ),
    ),
    (
        "fashion",
        False,
        (9_000, 120_000),
        ("S", "M", "L"),
        (
            "Cotton T-Shirt",
            "Denim Jacket",
            "Running Shoes",
            "Wool Scarf",
            "Baseball Cap",
            "Hoodie",
            "Socks 5-Pack",
            "Backpack",
        ),
    ),
    (
        "home",
        False,
        (5_000, 60_000),
        (),
        ("Ceramic Mug", "Scented Candle", "Throw Pillow", "Desk Lamp", "Bath Towel", "Storage Box"),
    ),
    (
        "food",
        True,
        (1_000, 30_000),
        (),
        (
            "Coffee Capsules",
            "Instant Ramen",
            "Sparkling Water 500ml",
            "Protein Bar",
            "Green Tea Bags",
            "Kimchi 1kg",
        ),
    ),
    (
        "beauty",
        True,
        (3_000, 35_000),
        (),
        ("Sheet Mask", "Sunscreen SPF50", "Lip Balm", "Hand Cream", "Cleansing Foam"),
    ),
)
BRANDS = ("Aurora", "Bora", "Cielo", "Dalim", "Haru", "Mir", "Nabi", "Sora", "Eon", "Jiwoo")
# (name, price KRW, stock as a share of the order attempts)
LIMITED = (
    ("Limited Edition Sneakers", 129_000, 0.03),
    ("Collector Figure", 89_000, 0.045),
    ("Signed Vinyl Album", 59_000, 0.02),
)
#: Rush attempts per unit of a limited item's stock (~1.4 units each): it sells out.
RUSH_PER_UNIT = 1.1


@dataclass
class PlannedProduct:
    name: str
    bulk: bool
    variants: list[tuple[str, str, int]]  # (sku, name, price)
    weight: float
    limited: bool = False
    # A Gaussian bump of popularity: amplitude (times the base weight), centre and width in days.
    trend_amp: float = 0.0
    trend_center: float = 0.0
    trend_width: float = 1.0
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    stock: int = 0
    product_id: int = 0
    variant_ids: list[int] = field(default_factory=list)

    def weight_at(self, day: float) -> float:
        """Popularity ``day`` days into the history."""
        bump = math.exp(-0.5 * ((day - self.trend_center) / self.trend_width) ** 2)
        return self.weight * (1 + self.trend_amp * bump)

    def mean_boost(self, days: int) -> float:
        """Average of ``weight_at / weight`` over the history (for the opening stock)."""
        return 1 + self.trend_amp * self.trend_width * math.sqrt(2 * math.pi) / days


@dataclass
class Shopper:
    user_id: int
    weight: float
    balance: int = 0
    coupons: dict[int, int] = field(default_factory=dict)  # ISSUED: user_coupon_id -> coupon_id
    used: dict[int, int] = field(default_factory=dict)  # USED: user_coupon_id -> coupon_id


@dataclass
class SeedSummary:
    """What :func:`seed_history` did. Money in KRW, times UTC."""

    database_url: str
    start: datetime
    end: datetime
    products: int = 0
    limited: list[tuple[str, int, int]] = field(default_factory=list)  # name, sold, stock
    coupons: int = 0
    users: int = 0
    coupons_issued: int = 0
    attempts: int = 0
    paid: int = 0
    cancelled_after_paid: int = 0
    paid_later: int = 0
    expired: int = 0
    coupon_orders: int = 0
    units: int = 0
    revenue: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    audit_ok: bool = True

    @property
    def cancel_share(self) -> float:
        """Cancelled share of the orders that were paid."""
        return self.cancelled_after_paid / self.paid if self.paid else 0.0

    def render(self) -> str:
        """A short human-readable summary."""
        refused = ", ".join(f"{code} {n:,}" for code, n in self.refused.most_common()) or "none"
        limited = "; ".join(f"{name} {sold}/{stock}" for name, sold, stock in self.limited)
        return "\n".join(
            [
                f"seeded {self.database_url} in {self.seconds:.1f} s: "
                f"{self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC",
                f"  catalog: {self.products} products, {len(self.limited)} limited flash-sale "
                f"items (sold/stock: {limited}), {self.coupons} coupons",
                f"  users: {self.users:,} ({self.coupons_issued:,} coupons issued)",
                f"  orders: {self.attempts:,} attempts, {self.paid:,} paid "
                f"({self.paid_later:,} of them paid later), {self.cancelled_after_paid:,} "
                f"cancelled after payment ({self.cancel_share:.1%}), {self.expired:,} expired "
                f"unpaid, {self.coupon_orders:,} paid with a coupon",
                f"  refused: {refused}",
                f"  kept: {self.units:,} units, {self.revenue:,} KRW paid",
                f"  audit: {'OK' if self.audit_ok else 'FAILED (run flashsale audit)'}",
            ]
        )


def _price(rng: random.Random, low: int, high: int) -> int:
    # Log-uniform, shop-style endings: 12,900 rather than 12,873.
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    return max(1_000, round(value / 1_000) * 1_000 - 100)


def _catalog(rng: random.Random, n: int) -> list[PlannedProduct]:
    pool = [
        (f"{brand} {item}", bulk, prices, variant_names)
        for _cat, bulk, prices, variant_names, items in CATEGORIES
        for item in items
        for brand in BRANDS
    ]
    rng.shuffle(pool)
    # Everyday goods lead a shop's chart by orders; keep bulk goods out of the
    # first places so that units and orders tell different stories below them.
    chosen = pool[:n]
    leaders = [entry for entry in chosen if not entry[1]][:5]
    chosen = leaders + [entry for entry in chosen if entry not in leaders]
    planned = []
    for index, (name, bulk, (low, high), variant_names) in enumerate(chosen, start=1):
        price = _price(rng, low, high)
        if variant_names and rng.random() < 0.5:
            variants = [(f"SEED{index:04d}-{v}", v, price) for v in variant_names]
        else:
            variants = [(f"SEED{index:04d}", "Standard", price)]
        # The shuffled order is the popularity order; bulk goods are bought less
        # often, several units at a time.
        weight = index**-ZIPF * (BULK_ORDER_WEIGHT if bulk else 1.0)
        planned.append(PlannedProduct(name, bulk, variants, weight))
    return planned


def _shop_time(rng: random.Random, start: datetime, days: int) -> datetime:
    """A time in ``[start, start + days)`` following the daily and weekly cycles."""
    first_local = start.astimezone(SHOP_TZ)
    day_weights = [
        WEEKDAY_WEIGHTS[(first_local + timedelta(days=d)).weekday()] for d in range(days + 1)
    ]
    while True:
        day = rng.choices(range(days + 1), weights=day_weights)[0]
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        local_day = (first_local + timedelta(days=day)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        at = (local_day + timedelta(hours=hour, seconds=rng.uniform(0, 3600))).astimezone(UTC)
        if start <= at < start + timedelta(days=days):
            return at


def _quantity(rng: random.Random, bulk: bool) -> int:
    if bulk:
        return rng.choice((2, 2, 3, 3, 4, 5, 6, 8, 10, 12))
    return rng.choices((1, 2, 3, 4), weights=(78, 15, 5, 2))[0]


@dataclass(order=True)
class _Event:
    at: datetime
    seq: int
    kind: str = field(compare=False)  # order, pay, expire, cancel
    user: int = field(compare=False)  # index into shoppers
    lines: list[tuple[int, int]] = field(compare=False, default_factory=list)  # (variant, qty)
    order_id: int = field(compare=False, default=0)
    pay: bool = field(compare=False, default=True)


class _Seeder:
    def __init__(self, settings: Settings, rng: random.Random, summary: SeedSummary) -> None:
        self.settings = settings
        self.rng = rng
        self.summary = summary
        self.db = Database.from_settings(settings)
        self.gate = StockGate(settings.gate_freshness_s)
        self.coupon_gate = CouponIssueGate(settings.gate_freshness_s)
        self.ranking = RankingService(settings.ranking_window_s, settings.ranking_bucket_s)
        self.coupon_terms: dict[int, int] = {}  # coupon_id -> min order amount
        self.price: dict[int, int] = {}  # variant_id -> price
        self.events: list[_Event] = []
        self.seq = 0

    def schedule(self, event: _Event) -> None:
        self.seq += 1
        event.seq = self.seq
        heapq.heappush(self.events, event)

    async def create_catalog(self, catalog: list[PlannedProduct]) -> None:
        for p in catalog:
            body = ProductIn(
                name=p.name,
                description=f"Seeded product ({'bulk' if p.bulk else 'regular'})",
                sale_starts_at=p.sale_starts_at,
                sale_ends_at=p.sale_ends_at,
                per_user_limit=2 if p.limited else None,
                variants=[
                    VariantIn(sku=sku, name=name, price=price, stock=p.stock // len(p.variants))
                    for sku, name, price in p.variants
                ],
            )
            async with transaction(self.db.write_session) as session:
                p.product_id, stocked = await create_product(session, body)
            p.variant_ids = [variant_id for variant_id, _ in stocked]
            for (variant_id, stock), (_sku, _name, price) in zip(stocked, p.variants, strict=True):
                self.gate.learn(variant_id, stock)
                self.price[variant_id] = price
        self.summary.products = len(catalog)

    async def create_coupons(self, start: datetime, end: datetime, users: int) -> list[int]:
        bodies = [
            CouponIn(
                name="Welcome 3,000 KRW off",
                discount_type="FIXED",
                discount_value=3_000,
                min_order_amount=20_000,
                total_quantity=users,
                issue_starts_at=start,
                issue_ends_at=end + timedelta(days=30),
                valid_days=365,
            ),
            CouponIn(
                name="10 % off, up to 15,000 KRW",
                discount_type="PERCENT",
                discount_value=10,
                max_discount_amount=15_000,
                min_order_amount=30_000,
                total_quantity=users,
                issue_starts_at=start,
                issue_ends_at=end + timedelta(days=30),
                valid_days=365,
            ),
            CouponIn(
                name="10,000 KRW off big baskets",
                discount_type="FIXED",
                discount_value=10_000,
                min_order_amount=100_000,
                total_quantity=max(1, users // 2),
                issue_starts_at=start,
                issue_ends_at=end + timedelta(days=30),
                valid_days=365,
            ),
        ]
        ids = []
        for body in bodies:
            async with transaction(self.db.write_session) as session:
                coupon = await create_coupon(session, body)
            terms = (coupon.issue_starts_at, coupon.issue_ends_at, coupon.valid_days)
            self.coupon_gate.configure(coupon.id, coupon.total_quantity, terms)
            self.coupon_terms[coupon.id] = body.min_order_amount
            ids.append(coupon.id)
        self.summary.coupons = len(ids)
        return ids

    async def create_shoppers(self, n: int, coupon_ids: list[int], at: datetime) -> list[Shopper]:
        """Sign up ``n`` shoppers, charge their opening balance and hand out coupons at ``at``."""
        shoppers = []
        for i in range(1, n + 1):
            async with transaction(self.db.write_session) as session:
                user_id = await create_user(
                    session,
                    email=f"shopper{i:05d}@seed.flashsale.test",
                    password=SEEDED_PASSWORD,
                    name=f"Shopper {i}",
                    hash_cost=self.settings.password_hash_cost,
                )
                opening = self.rng.choice((200_000, 500_000, 1_000_000))
                await run_in_session(
                    session, partial(charge_op, user_id=user_id, amount=opening, now=at)
                )
            shopper = Shopper(user_id, self.rng.lognormvariate(0, 1), opening)
            for coupon_id in coupon_ids:
                if self.rng.random() < 0.5:
                    try:
                        async with transaction(self.db.write_session) as session:
                            issued = await issue(
                                session, self.coupon_gate, coupon_id, user_id, now=at
                            )
                    except FlashsaleError as exc:
                        self.summary.refused[exc.code] += 1
                        continue
                    shopper.coupons[issued.user_coupon_id] = coupon_id
                    self.summary.coupons_issued += 1
            shoppers.append(shopper)
        self.summary.users = n
        return shoppers

    async def top_up(self, shopper: Shopper, needed: int, at: datetime) -> None:
        """Charge the wallet at ``at`` (one unit of work) until it holds ``needed`` KRW."""
        if shopper.balance >= needed:
            return
        async with transaction(self.db.write_session) as session:
            while shopper.balance < needed:
                amount = min(MAX_CHARGE, max(100_000, needed - shopper.balance))
                _tx, shopper.balance, _at = await run_in_session(
                    session, partial(charge_op, user_id=shopper.user_id, amount=amount, now=at)
                )

    async def place(self, event: _Event, shopper: Shopper) -> None:
        total = sum(self.price[v] * q for v, q in event.lines)
        coupon = None
        # Pay-later orders go without coupons: an expiry would hand them back unseen here.
        if event.pay and shopper.coupons and self.rng.random() < COUPON_USE_SHARE:
            usable = [uc for uc, c in shopper.coupons.items() if total >= self.coupon_terms[c]]
            coupon = self.rng.choice(usable) if usable else None
        body = OrderIn(
            items=[OrderLineIn(variant_id=v, quantity=q) for v, q in event.lines],
            user_coupon_id=coupon,
            pay=event.pay,
        )
        if event.pay:
            await self.top_up(shopper, total, event.at)
        async with transaction(self.db.write_session) as session:
            order = await place_order(
                session,
                self.gate,
                self.ranking,
                shopper.user_id,
                body,
                payment_timeout_s=self.settings.order_payment_timeout_s,
                now=event.at,
            )
        if coupon is not None:
            shopper.used[coupon] = shopper.coupons.pop(coupon)
        if event.pay:
            self.paid(shopper, event, order.order_id, order.paid_amount)
            return
        # Pay later: most pay within minutes, the rest let it expire.
        if self.rng.random() < 0.7:
            delay = timedelta(minutes=self.rng.uniform(1, 8))
            kind = "pay"
        else:
            delay = timedelta(seconds=self.settings.order_payment_timeout_s + 1)
            kind = "expire"
        pending = _Event(event.at + delay, 0, kind, event.user, event.lines, order.order_id)
        if pending.at < self.summary.end:
            self.schedule(pending)

    def paid(self, shopper: Shopper, event: _Event, order_id: int, paid_amount: int) -> None:
        shopper.balance -= paid_amount
        self.summary.paid += 1
        if self.rng.random() < CANCEL_SHARE:
            room = (self.summary.end - event.at).total_seconds() - 1
            delay = min(self.rng.uniform(600, 86_400), room / 2)
            if delay > 0:
                self.schedule(
                    _Event(
                        event.at + timedelta(seconds=delay), 0, "cancel", event.user, [], order_id
                    )
                )

    async def run_event(self, event: _Event, shopper: Shopper) -> None:
        if event.kind == "order":
            self.summary.attempts += 1
            await self.place(event, shopper)
        elif event.kind == "pay":
            await self.top_up(shopper, sum(self.price[v] * q for v, q in event.lines), event.at)
            async with transaction(self.db.write_session) as session:
                order = await pay_order(
                    session, self.ranking, shopper.user_id, event.order_id, now=event.at
                )
            self.summary.paid_later += 1
            self.paid(shopper, event, event.order_id, order.paid_amount)
        elif event.kind == "expire":
            async with transaction(self.db.write_session) as session:
                expired = await expire_overdue(session, self.gate, now=event.at)
            self.summary.expired += len(expired)
        elif event.kind == "cancel":
            async with transaction(self.db.write_session) as session:
                order = await cancel_order(
                    session, self.gate, self.ranking, shopper.user_id, event.order_id, now=event.at
                )
            shopper.balance += order.paid_amount
            if order.user_coupon_id in shopper.used:
                # Back to ISSUED while valid (the seeded coupons stay valid).
                shopper.coupons[order.user_coupon_id] = shopper.used.pop(order.user_coupon_id)
            self.summary.cancelled_after_paid += 1


async def _count(db: Database) -> tuple[int, int]:
    async with db.read_session() as session:
        n_products = (await session.execute(select(func.count()).select_from(products))).scalar()
        n_orders = (await session.execute(select(func.count()).select_from(orders))).scalar()
    return int(n_products or 0), int(n_orders or 0)


async def seed_history(
    database_url: str,
    *,
    history_days: int = 30,
    orders_n: int = 2_000,
    seed: int = 7,
    users: int | None = None,
    products_n: int = 120,
    now: datetime | None = None,
) -> SeedSummary:
    """Seed ``history_days`` of sales ending at ``now`` into an empty database.

    Runs the migrations first. ``orders_n`` is the number of order attempts
    (some are refused by the rules, e.g. a sold-out flash sale); ``users``
    defaults to ``max(100, orders_n // 8)``.

    Returns:
        The :class:`SeedSummary` (also checked by the audit).

    Raises:
        ValueError: a non-positive size, or the database already has products
            or orders (seed a fresh database).
    """
    if min(history_days, orders_n, products_n) < 1 or (users is not None and users < 1):
        raise ValueError("history_days, orders, products and users must be >= 1")
    started = time.perf_counter()
    end = (now or utcnow()).astimezone(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=history_days)
    n_users = users or max(100, orders_n // 8)
    rng = random.Random(seed)
    summary = SeedSummary(database_url=database_url, start=start, end=end)

    upgrade(database_url)
    settings = Settings(database_url=database_url, password_hash_cost=SEED_HASH_COST)
    seeder = _Seeder(settings, rng, summary)
    try:
        if any(await _count(seeder.db)):
            raise ValueError(
                f"{database_url} already has products or orders: seed a fresh database"
            )
        catalog = _catalog(rng, products_n)
        stocks = [max(5, round(orders_n * share)) for _name, _price, share in LIMITED]
        rushes = [round(stock * RUSH_PER_UNIT) for stock in stocks]
        n_regular = max(0, orders_n - sum(rushes))
        tail = [p for p in catalog[len(catalog) // 10 :] if not p.bulk]
        for p in rng.sample(tail, k=min(len(tail), round(len(catalog) * TRENDING_SHARE))):
            p.trend_center = rng.uniform(0, history_days)
            p.trend_width = rng.uniform(1.5, 4.0)
            # At its peak a trending product sells about as often as the leader, or more.
            p.trend_amp = max(q.weight for q in catalog) * rng.uniform(0.8, 2.0) / p.weight
        total_weight = sum(p.weight * p.mean_boost(history_days) for p in catalog)
        for p in catalog:
            share = p.weight * p.mean_boost(history_days) / total_weight
            expected = n_regular * 1.3 * share * (5 if p.bulk else 1.3)
            p.stock = len(p.variants) * (int(expected * 3 / len(p.variants)) + 50)
            # Open for the whole history (and after): orders are placed in the past.
            p.sale_starts_at = start - timedelta(days=1)
        limited = []
        for i, ((name, price, _share), stock) in enumerate(zip(LIMITED, stocks, strict=True)):
            # 20:00 KST on days spread over the history.
            day = (end - timedelta(days=history_days * (0.8 - 0.3 * i))).astimezone(SHOP_TZ)
            opens = day.replace(hour=20, minute=0, second=0, microsecond=0).astimezone(UTC)
            if opens >= end:
                opens -= timedelta(days=1)
            limited.append(
                PlannedProduct(
                    f"{BRANDS[i]} {name}",
                    False,
                    [(f"SEED-LTD{i + 1}", "Limited", price)],
                    0.0,
                    limited=True,
                    sale_starts_at=opens,
                    sale_ends_at=opens + timedelta(hours=2),
                    stock=stock,
                )
            )
        await seeder.create_catalog(catalog + limited)
        coupon_ids = await seeder.create_coupons(start, end, n_users)
        shoppers = await seeder.create_shoppers(n_users, coupon_ids, start)

        user_weights = [s.weight for s in shoppers]
        for _ in range(n_regular):
            at = _shop_time(rng, start, history_days)
            elapsed = (at - start) / timedelta(days=1)
            weights = [p.weight_at(elapsed) for p in catalog]
            n_lines = rng.choices((1, 2, 3), weights=(72, 21, 7))[0]
            chosen: dict[int, PlannedProduct] = {}
            while len(chosen) < n_lines:
                p = rng.choices(catalog, weights=weights)[0]
                chosen[p.product_id] = p
            lines = [(rng.choice(p.variant_ids), _quantity(rng, p.bulk)) for p in chosen.values()]
            user = rng.choices(range(len(shoppers)), weights=user_weights)[0]
            seeder.schedule(
                _Event(
                    at,
                    0,
                    "order",
                    user,
                    lines,
                    pay=rng.random() >= PAY_LATER_SHARE,
                )
            )
        for item, attempts in zip(limited, rushes, strict=True):
            assert item.sale_starts_at is not None
            if item.sale_starts_at < start:  # a history too short for this flash sale
                continue
            for _ in range(attempts):
                # The rush: most attempts in the first minutes after opening.
                delay = min(rng.expovariate(1 / 300), 7_000)
                at = item.sale_starts_at + timedelta(seconds=delay)
                if at < end:
                    user = rng.randrange(len(shoppers))
                    quantity = rng.choices((1, 2), weights=(60, 40))[0]
                    line = (item.variant_ids[0], quantity)
                    seeder.schedule(_Event(at, 0, "order", user, [line]))

        while seeder.events:
            event = heapq.heappop(seeder.events)
            try:
                await seeder.run_event(event, shoppers[event.user])
            except FlashsaleError as exc:
                summary.refused[exc.code] += 1

    finally:
        await seeder.db.dispose()

    summary.audit_ok = run_audit(database_url).ok
    _kept_totals(database_url, summary, limited)
    summary.seconds = time.perf_counter() - started
    return summary


def _kept_totals(database_url: str, summary: SeedSummary, limited: list[PlannedProduct]) -> None:
    """Units, revenue and coupon use of the orders still PAID, read back from the database."""
    paid_lines = (
        select(func.coalesce(func.sum(order_items.c.quantity), 0))
        .select_from(orders.join(order_items, order_items.c.order_id == orders.c.id))
        .where(orders.c.status == "PAID")
    )
    engine = make_sync_engine(database_url, immediate=False)
    try:
        with engine.connect() as conn:
            summary.units = int(conn.execute(paid_lines).scalar_one())
            summary.revenue = int(
                conn.execute(
                    select(func.coalesce(func.sum(orders.c.paid_amount), 0)).where(
                        orders.c.status == "PAID"
                    )
                ).scalar_one()
            )
            summary.coupon_orders = int(
                conn.execute(
                    select(func.count()).where(
                        orders.c.status == "PAID", orders.c.user_coupon_id.is_not(None)
                    )
                ).scalar_one()
            )
            for p in limited:
                sold = conn.execute(
                    paid_lines.where(order_items.c.product_id == p.product_id)
                ).scalar_one()
                summary.limited.append((p.name, int(sold), p.stock))
    finally:
        engine.dispose()
