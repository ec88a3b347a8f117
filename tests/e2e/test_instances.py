"""Several instances on one PostgreSQL database (docs/architecture.md#per-process-and-shared).

Every test starts two or three real ``flashsale serve`` processes (2 CPU cores here:
mostly one worker each) with the ``postgres_servers`` factory, so they share one fresh
migrated PostgreSQL database, the JWT secret and the admin, and drives them with a real
HTTP client (aiohttp: on 2 cores httpx's pool, not the servers, would be the
bottleneck). Requests are spread over the instances round-robin. Users are inserted
straight into the database (user, wallet, CHARGE ledger row) and their access tokens
minted with the shared secret: signing up 10,000 users over HTTP would take minutes.
Each test ends with the audit (``run_audit`` and ``flashsale audit``), with invariant 5
against the running instances where sales were made. What is proven:

1. **Coupon rush**: 10,000 users (500 of them tapping twice, on two instances) ask for
   a 100-unit coupon at once: exactly 100 issued, at most one per user; every request
   answered 201 or ``COUPON_SOLD_OUT`` / ``COUPON_ALREADY_ISSUED``; no 5xx, no request
   unanswered. The database agrees (user coupons, distinct holders, issued count).
2. **Stock rush with deadlock bait**: 5,000 orders race for a variant A of 100 units;
   multi-line orders list A and a plentiful B in both orders, others are single lines,
   and every user has five orders in flight on different instances (wallet-row
   contention). Exactly 100 units of A are sold; every answer is 201 or
   ``OUT_OF_STOCK`` (no deadlock, no serialization failure reaches a client); every
   wallet equals its ledger and its owner's paid orders.
3. **SIGKILL mid-rush**: one of three instances is killed while orders are paid and
   cancelled and the outbox is relayed to the data-platform stand-in (which answers
   slowly, so deliveries are in flight). The survivors answer every request during and
   after the kill; requests to the dead one get connection errors (counted apart: they
   are no answers). After a restart the audit is clean and the stand-in holds exactly
   one copy of every outbox event.
4. **One Idempotency-Key on several instances at once**: 20 keys × 4 copies (2 per
   instance, each instance with 2 workers): one order, one payment and one ledger row
   per key; the other copies replay the same status and body or answer 409
   ``IDEMPOTENCY_KEY_IN_USE``.
5. **Restock on A, sold out on B**: B answers ``OUT_OF_STOCK`` from its gate; after a
   restock through A's admin API, B sells again within the gate freshness bound
   (1 s, docs/architecture.md#gates) plus 1 s of margin, and sells exactly the
   restocked units.
6. **Ranking across instances**: a sale paid on A appears in B's
   ``/products/popular`` within 2 s (also a burst of concurrent sales on both), a
   cancellation on A disappears from B within 2 s, quantities are exact (nothing counted
   twice), and an instance started after another stopped rebuilds its window from the
   database and serves the same top list at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import anyio.to_thread
import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from flashsale.auth.security import Principal, create_access_token, hash_password
from flashsale.data_platform.client import read_all_events
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import (
    coupons,
    idempotency_keys,
    order_items,
    orders,
    outbox,
    payments,
    user_coupons,
    users,
    variants,
    wallet_transactions,
    wallets,
)
from flashsale.db.types import utcnow
from flashsale.demo.server import DataPlatformProcess

if TYPE_CHECKING:
    from .conftest import LiveServer, ServerFactory


pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.slow, pytest.mark.instances]

API_PREFIX = "/api/v1"
#: Seconds a started request may wait for its answer before it counts as unanswered.
REQUEST_TIMEOUT_S = 60.0
#: Lifetime of the minted access tokens.
TOKEN_TTL_S = 3600
#: A local "sold out" older than this is re-checked against the database
#: (``gate_freshness_s``, passed to the servers at its default; docs/architecture.md#gates).
FRESHNESS_S = 1.0
#: The bound for a sale or a cancellation to reach another instance's ranking (about 2 s,
#: docs/operations.md).
RANKING_PROPAGATION_S = 2.0


# -- users straight into the database ---------------------------------------------------


@dataclass(frozen=True)
class Buyer:
    """A user inserted with SQL: id and ``Authorization`` header (a minted token)."""

    user_id: int
    headers: dict[str, str]


def insert_buyers(factory: ServerFactory, count: int, *, prefix: str, balance: int) -> list[Buyer]:
    """Insert ``count`` customers with a wallet of ``balance`` KRW (and its CHARGE ledger
    row, so balance = ledger) in one transaction; mint each an access token valid on
    every server of ``factory``. Blocking: call it in a thread."""
    password_hash = hash_password("Passw0rd!", 4)  # the same for all: never used to log in
    now = utcnow()
    engine = make_sync_engine(factory.database_url)
    try:
        with engine.begin() as conn:
            inserted = conn.execute(
                insert(users).returning(users.c.id, sort_by_parameter_order=True),
                [
                    {
                        "email": f"{prefix}{i:05d}@example.com",
                        "name": f"{prefix} {i}",
                        "password_hash": password_hash,
                        "role": "customer",
                        "created_at": now,
                    }
                    for i in range(count)
                ],
            ).all()
            ids = [int(row.id) for row in inserted]
            conn.execute(
                insert(wallets),
                [{"user_id": uid, "balance": balance, "updated_at": now} for uid in ids],
            )
            if balance:
                conn.execute(
                    insert(wallet_transactions),
                    [
                        {
                            "user_id": uid,
                            "type": "CHARGE",
                            "amount": balance,
                            "balance_after": balance,
                            "order_id": None,
                            "created_at": now,
                        }
                        for uid in ids
                    ],
                )
    finally:
        engine.dispose()
    secret = factory.jwt_secret

    def bearer(uid: int) -> dict[str, str]:
        token = create_access_token(Principal(user_id=uid, role="customer"), secret, TOKEN_TTL_S)
        return {"Authorization": f"Bearer {token}"}

    return [Buyer(uid, bearer(uid)) for uid in ids]


async def buyers(factory: ServerFactory, count: int, *, prefix: str, balance: int) -> list[Buyer]:
    """:func:`insert_buyers` in a thread."""
    return await anyio.to_thread.run_sync(
        functools.partial(insert_buyers, factory, count, prefix=prefix, balance=balance)
    )


async def start_instances(
    factory: ServerFactory,
    count: int,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> list[LiveServer]:
    """Start ``count`` servers on the factory's database, one after another (each one
    blocks until healthy; started together they would race to bootstrap the admin)."""
    started = []
    for _ in range(count):
        started.append(
            await anyio.to_thread.run_sync(functools.partial(factory.start, env, workers=workers))
        )
    return started


@pytest.fixture
def db(postgres_servers: ServerFactory) -> Iterator[Engine]:
    """A sync engine on the shared database, to check the outcome in SQL."""
    engine = make_sync_engine(postgres_servers.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def scalar(engine: Engine, statement: Any) -> Any:
    """The single value ``statement`` selects."""
    with engine.connect() as conn:
        return conn.execute(statement).scalar_one()


def rows(engine: Engine, statement: Any) -> list[Any]:
    """Every row ``statement`` selects."""
    with engine.connect() as conn:
        return list(conn.execute(statement))


def wallets_off_ledger(engine: Engine) -> list[Any]:
    """Wallets whose balance is not the sum of their ledger: ``(user_id, balance, ledger)``."""
    ledger = (
        select(
            wallet_transactions.c.user_id,
            func.sum(wallet_transactions.c.amount).label("total"),
        )
        .group_by(wallet_transactions.c.user_id)
        .subquery()
    )
    statement = (
        select(wallets.c.user_id, wallets.c.balance, func.coalesce(ledger.c.total, 0))
        .select_from(wallets.outerjoin(ledger, ledger.c.user_id == wallets.c.user_id))
        .where(wallets.c.balance != func.coalesce(ledger.c.total, 0))
    )
    return rows(engine, statement)


async def db_retries(server: LiveServer) -> float:
    """``flashsale_db_retries_total`` of a one-worker server: transactions PostgreSQL
    aborted (deadlock, serialization) and the server re-ran, unseen by the client."""
    async with httpx.AsyncClient(base_url=server.process.base_url, timeout=10.0) as http:
        text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flashsale_db_retries_total{")
    )


# -- the load client ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request's outcome.

    ``instance`` is the index of the server it was sent to; ``status`` is 0 when no HTTP
    answer came (``error``: the transport exception, or ``TIMEOUT``); ``at`` is the
    ``time.monotonic()`` of the answer (or of the failure).
    """

    instance: int
    status: int
    body: Any
    at: float
    replayed: bool = False
    error: str = ""

    @property
    def code(self) -> str | None:
        """The error body's ``code``, or None."""
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def answered(self) -> bool:
        return self.status != 0

    def describe(self) -> str:
        return f"instance {self.instance}: {self.status} {self.error or self.body}"


class Load:
    """An aiohttp client over several servers (see :func:`load_client`).

    Never raises for HTTP or transport errors: every request becomes an :class:`Answer`.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.http = session

    async def call(
        self,
        instance: int,
        server: LiveServer,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        """``method`` ``server``'s ``/api/v1`` + ``path``."""
        url = server.api_url + path
        try:
            async with self.http.request(
                method, url, headers=headers, json=json_body, params=params
            ) as response:
                raw = await response.read()
                status = response.status
                replayed = response.headers.get("Idempotent-Replayed") == "true"
        except TimeoutError as exc:
            return Answer(instance, 0, None, time.monotonic(), error=f"TIMEOUT {exc!r}")
        except aiohttp.ClientError as exc:
            return Answer(instance, 0, None, time.monotonic(), error=repr(exc))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return Answer(instance, status, body, time.monotonic(), replayed=replayed)


@asynccontextmanager
async def load_client(
    connections: int = 100, *, fresh_connections: bool = False
) -> AsyncIterator[Load]:
    """A :class:`Load` with a pool of ``connections`` per server.

    ``fresh_connections``: a new connection per request, so that every worker of an
    instance answers some of a few rounds (not only those that accepted pooled ones).
    """
    # Keep-alive below uvicorn's 5 s: a pooled connection is never reused just as the
    # server closes it.
    reuse: dict[str, Any] = (
        {"force_close": True} if fresh_connections else {"keepalive_timeout": 2.0}
    )
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=connections, **reuse)
    # No total timeout: a request queued for a pooled connection is not late yet.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield Load(session)


async def bounded(calls: Sequence[Callable[[], Awaitable[Answer]]], limit: int) -> list[Answer]:
    """Run the calls with at most ``limit`` in flight; answers in order."""
    limiter = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Answer]]) -> Answer:
        async with limiter:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


def no_unanswered_or_5xx(answers: Sequence[Answer]) -> None:
    """Every request got an HTTP answer (no connection error, no timeout) below 500."""
    unanswered = [a.describe() for a in answers if not a.answered]
    assert not unanswered, f"{len(unanswered)} requests got no answer: {unanswered[:5]}"
    errors = [a.describe() for a in answers if a.status >= 500]
    assert not errors, f"{len(errors)} server errors: {errors[:5]}"


# -- 1. 10,000 users, one 100-unit coupon ------------------------------------------------

COUPON_USERS = 10_000
COUPON_QUANTITY = 100
#: Users 0..DOUBLE_TAPPERS-1 send their request twice at once, to two instances.
DOUBLE_TAPPERS = 500


async def test_coupon_rush_over_three_instances_issues_exactly_the_quantity(
    postgres_servers: ServerFactory, db: Engine
) -> None:
    servers = await start_instances(postgres_servers, 3)
    n = len(servers)
    with anyio.fail_after(240):
        async with servers[0].client(connections=4) as client:
            admin = await servers[0].admin_headers(client)
            coupon = await servers[0].create_coupon(client, admin, total_quantity=COUPON_QUANTITY)
        people = await buyers(postgres_servers, COUPON_USERS, prefix="coupon", balance=0)
        path = f"/coupons/{coupon['id']}/issue"
        # (user index, instance): everyone once, round-robin; double tappers again on
        # the next instance. Interleaved so the second taps arrive with the first ones.
        sends = [(i, i % n) for i in range(COUPON_USERS)]
        for i in range(DOUBLE_TAPPERS):
            sends.insert(2 * i + 1, (i, (i + 1) % n))

        async with load_client(connections=100) as load:
            answers = await asyncio.gather(
                *(
                    load.call(k, servers[k], "POST", path, headers=people[i].headers)
                    for i, k in sends
                )
            )

        no_unanswered_or_5xx(answers)
        statuses = Counter(a.status for a in answers)
        assert set(statuses) == {201, 409}, statuses
        assert statuses[201] == COUPON_QUANTITY, statuses
        # Coupons were issued by more than one instance: the race spanned processes.
        assert len({a.instance for a in answers if a.status == 201}) > 1
        by_user: defaultdict[int, list[Answer]] = defaultdict(list)
        for (i, _), answer in zip(sends, answers, strict=True):
            by_user[i].append(answer)
        for i, mine in by_user.items():
            assert sum(a.status == 201 for a in mine) <= 1, (i, [a.describe() for a in mine])
            codes = {a.code for a in mine if a.status == 409}
            allowed = {"COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"}
            # One request only: "already issued" would be a lie.
            assert codes <= (allowed if i < DOUBLE_TAPPERS else {"COUPON_SOLD_OUT"}), (
                i,
                [a.describe() for a in mine],
            )
            if i < DOUBLE_TAPPERS and "COUPON_ALREADY_ISSUED" in codes:
                assert any(a.status == 201 for a in mine), (i, [a.describe() for a in mine])

        winners = {
            people[i].user_id for i, mine in by_user.items() if any(a.status == 201 for a in mine)
        }
        issued = {a.body["user_coupon_id"] for a in answers if a.status == 201}
        assert len(winners) == len(issued) == COUPON_QUANTITY
        assert all(
            (a.body["coupon_id"], a.body["status"]) == (coupon["id"], "ISSUED")
            for a in answers
            if a.status == 201
        )

        # The database agrees: 100 user coupons, 100 holders, the issued count.
        held = rows(
            db,
            select(user_coupons.c.id, user_coupons.c.user_id).where(
                user_coupons.c.coupon_id == coupon["id"]
            ),
        )
        assert len(held) == COUPON_QUANTITY
        assert {r.user_id for r in held} == winners
        assert {r.id for r in held} == issued
        assert (
            scalar(db, select(coupons.c.issued_count).where(coupons.c.id == coupon["id"]))
            == COUPON_QUANTITY
        )
        async with load_client(connections=4) as load:
            for k, server in enumerate(servers):
                got = await load.call(k, server, "GET", f"/coupons/{coupon['id']}")
                assert got.status == 200, got.describe()
                assert got.body["remaining_quantity"] == 0

        await servers[0].assert_audit_clean()


# -- 2. 5,000 orders, 100 units, deadlock bait -------------------------------------------

RUSH_ORDERS = 5_000
RUSH_USERS = 1_000
HOT_STOCK = 100
PLENTY = 100_000
HOT_PRICE = 10_000
SIDE_PRICE = 5_000
RUSH_BALANCE = 100_000


def rush_lines(i: int, hot: int, side: int) -> list[dict[str, int]]:
    """Order ``i``: [A, B] or [B, A] (a third each: the deadlock bait), A alone, B x 2."""
    kind = i % 6
    if kind in (0, 1):
        return [{"variant_id": hot, "quantity": 1}, {"variant_id": side, "quantity": 1}]
    if kind in (2, 3):
        return [{"variant_id": side, "quantity": 1}, {"variant_id": hot, "quantity": 1}]
    if kind == 4:
        return [{"variant_id": hot, "quantity": 1}]
    return [{"variant_id": side, "quantity": 2}]


async def test_stock_rush_over_three_instances_sells_exactly_the_stock_without_deadlock(
    postgres_servers: ServerFactory, db: Engine
) -> None:
    servers = await start_instances(postgres_servers, 3)
    n = len(servers)
    with anyio.fail_after(240):
        async with servers[0].client(connections=4) as client:
            admin = await servers[0].admin_headers(client)
            product = await servers[0].create_product(
                client,
                admin,
                name="Deadlock Bait",
                variants=[
                    {"sku": "BAIT-A", "name": "A", "price": HOT_PRICE, "stock": HOT_STOCK},
                    {"sku": "BAIT-B", "name": "B", "price": SIDE_PRICE, "stock": PLENTY},
                ],
            )
        hot, side = (v["id"] for v in product["variants"])
        # Five orders per user, on different instances: their wallet rows are contended too.
        people = await buyers(postgres_servers, RUSH_USERS, prefix="rush", balance=RUSH_BALANCE)
        bodies: list[dict[str, Any]] = [
            {"items": rush_lines(i, hot, side), "pay": True} for i in range(RUSH_ORDERS)
        ]
        owner = [people[i % RUSH_USERS] for i in range(RUSH_ORDERS)]

        async with load_client(connections=100) as load:
            answers = await asyncio.gather(
                *(
                    load.call(
                        i % n,
                        servers[i % n],
                        "POST",
                        "/orders",
                        headers=owner[i].headers,
                        json_body=b,
                    )
                    for i, b in enumerate(bodies)
                )
            )

        no_unanswered_or_5xx(answers)
        assert Counter(a.status for a in answers).keys() <= {201, 409}
        refusals = [a for a in answers if a.status == 409]
        # Balances cover every order: the only refusal is A's stock.
        assert Counter(a.code for a in refusals) == {"OUT_OF_STOCK": len(refusals)}, Counter(
            a.code for a in refusals
        )
        assert {a.body["details"]["variant_id"] for a in refusals} == {hot}
        sold_a = sum(
            item["quantity"]
            for a in answers
            if a.status == 201
            for item in a.body["items"]
            if item["variant_id"] == hot
        )
        assert sold_a == HOT_STOCK
        wants_hot = [any(line["variant_id"] == hot for line in b["items"]) for b in bodies]
        # Every B-only order was sold (A selling out never blocks B).
        assert all(
            a.status == 201 for a, hot_line in zip(answers, wants_hot, strict=True) if not hot_line
        )
        assert all(a.body["status"] == "PAID" for a in answers if a.status == 201)
        # A was sold on more than one instance: the race really spanned processes.
        sold_on = {
            a.instance for a, h in zip(answers, wants_hot, strict=True) if h and a.status == 201
        }
        assert len(sold_on) > 1, sold_on

        # How often the bait worked (informative: re-run aborts are invisible to clients).
        print(f"deadlock/serialization re-runs: {[await db_retries(s) for s in servers]}")

        # The database agrees: A's stock, the paid lines, one order per 201.
        stock = dict(
            rows(
                db,
                select(variants.c.id, variants.c.stock).where(
                    variants.c.product_id == product["id"]
                ),
            )
        )
        sold_b = sum(
            item["quantity"]
            for a in answers
            if a.status == 201
            for item in a.body["items"]
            if item["variant_id"] == side
        )
        assert stock == {hot: 0, side: PLENTY - sold_b}
        paid_lines = rows(
            db,
            select(order_items.c.variant_id, func.sum(order_items.c.quantity))
            .join(orders, orders.c.id == order_items.c.order_id)
            .where(orders.c.status == "PAID")
            .group_by(order_items.c.variant_id),
        )
        assert dict(paid_lines) == {hot: HOT_STOCK, side: sold_b}
        placed = {a.body["order_id"] for a in answers if a.status == 201}
        assert {r.id for r in rows(db, select(orders.c.id))} == placed

        # Money: every wallet = its ledger = its charge less its owner's paid orders.
        assert wallets_off_ledger(db) == []
        paid_by: Counter[int] = Counter()
        for who, a in zip(owner, answers, strict=True):
            if a.status == 201:
                paid_by[who.user_id] += a.body["paid_amount"]
        balances = dict(
            rows(
                db,
                select(wallets.c.user_id, wallets.c.balance).where(
                    wallets.c.user_id.in_([p.user_id for p in people])
                ),
            )
        )
        assert balances == {p.user_id: RUSH_BALANCE - paid_by[p.user_id] for p in people}

        await servers[0].assert_audit_clean()


# -- 3. SIGKILL of one instance mid-rush ---------------------------------------------------

KILL_USERS = 300
KILL_ORDERS = 900
#: Orders whose number is a multiple of this are cancelled right after payment.
KILL_CANCEL_EVERY = 4
#: Requests in flight during the rush (over all instances).
KILL_CONCURRENCY = 48
#: The victim is killed once this many orders have been answered.
KILL_AFTER = KILL_ORDERS // 3
KILL_PRICE = 3_000
KILL_BALANCE = 100_000
#: Each post to the stand-in first sleeps this long: deliveries are in flight.
PLATFORM_LATENCY_MS = 500
OUTBOX_ENV = {
    "FLASHSALE_OUTBOX_LEASE_S": "2.5",
    "FLASHSALE_OUTBOX_BATCH_SIZE": "32",
    "FLASHSALE_OUTBOX_POLL_S": "0.05",
    "FLASHSALE_OUTBOX_BACKOFF_BASE_S": "0.05",
    "FLASHSALE_OUTBOX_BACKOFF_MAX_S": "0.5",
}
#: Liveness bound of the waits of test 3 (not a product bound).
KILL_WAIT_S = 60.0


async def platform_events(http: httpx.AsyncClient) -> list[str]:
    """``event_id`` of every event the stand-in stored, one per stored copy."""

    async def get_page(params: dict[str, int]) -> object:
        return (await http.get("/events", params=params)).raise_for_status().json()

    return [item["event_id"] for item in await read_all_events(get_page)]


@dataclass
class Rush:
    """What the clients saw during test 3's rush."""

    orders: list[Answer] = field(default_factory=list)
    cancels: dict[int, Answer] = field(default_factory=dict)
    #: ``time.monotonic()`` just before the SIGKILL was sent, and once the victim was reaped.
    kill_sent_at: float | None = None
    killed_at: float | None = None


async def test_sigkill_of_one_instance_mid_rush_loses_nothing(
    postgres_servers: ServerFactory, db: Engine, tmp_path: Path
) -> None:
    platform = DataPlatformProcess(
        tmp_path / "platform.db",
        latency_ms=PLATFORM_LATENCY_MS,
        log_path=tmp_path / "platform.log",
    )
    await anyio.to_thread.run_sync(platform.start)
    try:
        env = {"FLASHSALE_DATA_PLATFORM_URL": platform.events_url, **OUTBOX_ENV}
        servers = await start_instances(postgres_servers, 3, env=env)
        with anyio.fail_after(240):
            # The middle one dies; the first and the last survive.
            await _kill_mid_rush(postgres_servers, db, platform, env, servers, victim_index=1)
    finally:
        await anyio.to_thread.run_sync(platform.stop)


async def _kill_mid_rush(
    factory: ServerFactory,
    db: Engine,
    platform: DataPlatformProcess,
    env: Mapping[str, str],
    servers: list[LiveServer],
    *,
    victim_index: int,
) -> None:
    """Test 3's body: the rush, the kill of ``servers[victim_index]``, the restart, the
    checks."""
    n = len(servers)
    victim = servers[victim_index]
    survivors = [k for k in range(n) if k != victim_index]
    async with servers[0].client(connections=4) as client:
        admin = await servers[0].admin_headers(client)
        product = await servers[0].create_product(
            client,
            admin,
            name="Crash Tee",
            variants=[
                {"sku": "CT-S", "name": "S", "price": KILL_PRICE, "stock": PLENTY},
                {"sku": "CT-M", "name": "M", "price": KILL_PRICE + 1_000, "stock": PLENTY},
            ],
        )
    small, medium = (v["id"] for v in product["variants"])
    people = await buyers(factory, KILL_USERS, prefix="crash", balance=KILL_BALANCE)

    def body(i: int) -> dict[str, Any]:
        lines = [{"variant_id": small, "quantity": 1 + i % 2}]
        if i % 3 == 0:
            lines.append({"variant_id": medium, "quantity": 1})
        return {"items": lines, "pay": True}

    victim_relay = f"-{victim.process.pid}-"  # relay ids: <host>-<pid>-<random>

    def victim_claims() -> set[str]:
        return {
            r.event_id
            for r in rows(db, select(outbox.c.event_id, outbox.c.claimed_by))
            if r.claimed_by is not None and victim_relay in r.claimed_by
        }

    rush = Rush()
    answered = anyio.Event()
    held_at_kill: set[str] = set()

    def kill_while_delivering() -> None:
        # Blocking, in a thread: the kill follows the sight of a claim by a millisecond.
        # Killed while its relay holds a claim (a delivery in flight), if it comes within
        # a few seconds; the orders keep flowing meanwhile.
        deadline = time.monotonic() + 5.0
        while not victim_claims() and time.monotonic() < deadline:
            time.sleep(0.005)
        rush.kill_sent_at = time.monotonic()
        victim.kill()
        rush.killed_at = time.monotonic()
        held_at_kill.update(victim_claims())

    async def kill_when_due() -> None:
        await answered.wait()
        await anyio.to_thread.run_sync(kill_while_delivering)

    async with load_client(connections=KILL_CONCURRENCY) as load:

        async def one(i: int) -> Answer:
            k = i % n
            who = people[i % KILL_USERS]
            got = await load.call(
                k, servers[k], "POST", "/orders", headers=who.headers, json_body=body(i)
            )
            rush.orders.append(got)
            if len(rush.orders) >= KILL_AFTER:
                answered.set()
            if got.status == 201 and i % KILL_CANCEL_EVERY == 0:
                order_id = got.body["order_id"]
                rush.cancels[order_id] = await load.call(
                    k, servers[k], "POST", f"/orders/{order_id}/cancel", headers=who.headers
                )
            return got

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_when_due)
            answers = await bounded(
                [functools.partial(one, i) for i in range(KILL_ORDERS)], KILL_CONCURRENCY
            )
        kill_sent_at, killed_at = rush.kill_sent_at, rush.killed_at
        assert kill_sent_at is not None and killed_at is not None

        # The survivors answered everything, before, during and after the kill.
        from_survivors = [a for a in answers if a.instance in survivors]
        cancels = list(rush.cancels.values())
        no_unanswered_or_5xx(from_survivors)
        no_unanswered_or_5xx([c for c in cancels if c.instance in survivors])
        assert {a.status for a in from_survivors} == {201}, Counter(
            a.status for a in from_survivors
        )
        assert {c.status for c in cancels if c.instance in survivors} == {200}
        after_kill = [a for a in from_survivors if a.at > killed_at]
        assert len(after_kill) > KILL_ORDERS // 10, "the kill came too late to prove anything"
        # The victim answered (correctly) until it died; then connection errors, which
        # are no answers and are counted apart.
        from_victim = [a for a in answers if a.instance == victim_index]
        assert all(a.status in (0, 201) for a in from_victim), Counter(
            a.status for a in from_victim
        )
        cut_off = [a for a in from_victim if not a.answered] + [
            c for c in cancels if c.instance == victim_index and not c.answered
        ]
        assert cut_off, "no request reached the dead instance"
        # Connection errors only from the kill on (refused, or cut off mid-request).
        assert all(a.at >= kill_sent_at and "TIMEOUT" not in a.error for a in cut_off), [
            (a.at - kill_sent_at, a.error) for a in cut_off
        ][:5]
        assert sum(a.status == 201 for a in from_victim) > 0, "the victim died before serving"
        assert held_at_kill, "the victim died holding no outbox claim: nothing was in flight"
        print(
            f"victim: {sum(a.status == 201 for a in from_victim)} orders served, "
            f"{len(cut_off)} requests cut off, {len(held_at_kill)} events claimed at the kill"
        )

        # A restart of the killed instance (a new server on the same database) serves.
        restarted = await anyio.to_thread.run_sync(functools.partial(factory.start, env, workers=1))
        alive = [servers[k] for k in survivors] + [restarted]
        late = await asyncio.gather(
            *(
                load.call(
                    j, alive[j % 3], "POST", "/orders", headers=people[j].headers, json_body=body(j)
                )
                for j in range(30)
            )
        )
        assert {a.status for a in late} == {201}, [a.describe() for a in late if a.status != 201]

    # The database: every order a client saw exists as it saw it; the only others are
    # orders whose answer the kill cut off (committed before the victim died).
    seen_paid = {a.body["order_id"] for a in [*answers, *late] if a.status == 201}
    seen_cancelled = {oid for oid, c in rush.cancels.items() if c.status == 200}
    cancel_cut_off = {oid for oid, c in rush.cancels.items() if not c.answered}
    status_of = dict(rows(db, select(orders.c.id, orders.c.status)))
    assert seen_paid <= status_of.keys()
    assert len(status_of.keys() - seen_paid) <= sum(not a.answered for a in from_victim)
    assert all(status_of[oid] == "CANCELLED" for oid in seen_cancelled)
    assert {oid for oid in seen_paid - seen_cancelled if status_of[oid] != "PAID"} <= cancel_cut_off
    assert set(status_of.values()) <= {"PAID", "CANCELLED"}

    # Every event delivered (the dead relay's claims taken over after their lease),
    # and stored exactly once by the stand-in.
    deadline = time.monotonic() + KILL_WAIT_S
    while scalar(db, select(func.count()).where(outbox.c.delivered_at.is_(None))):
        if time.monotonic() > deadline:
            pytest.fail(f"events still undelivered after {KILL_WAIT_S} s")
        await anyio.sleep(0.1)
    events = rows(
        db, select(outbox.c.event_id, outbox.c.type, outbox.c.order_id, outbox.c.claimed_by)
    )
    paid_ids = {oid for oid, s in status_of.items() if s in ("PAID", "CANCELLED")}
    cancelled_ids = {oid for oid, s in status_of.items() if s == "CANCELLED"}
    assert Counter(e.type for e in events) == {
        "order.paid": len(paid_ids),
        "order.cancelled": len(cancelled_ids),
    }
    assert {e.order_id for e in events if e.type == "order.paid"} == paid_ids
    assert {e.order_id for e in events if e.type == "order.cancelled"} == cancelled_ids
    assert all(e.claimed_by is None for e in events)
    assert held_at_kill <= {e.event_id for e in events}
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=10.0) as http:
        stored = await platform_events(http)
        stats = (await http.get("/stats")).json()
    assert len(stored) == len(set(stored)), "the stand-in stored an event twice"
    assert sorted(stored) == sorted(e.event_id for e in events)
    assert stats["stored"] == len(events)
    assert stats["by_type"] == dict(Counter(e.type for e in events))

    await servers[survivors[0]].assert_audit_clean(ranking=True)
    await restarted.assert_audit_clean(cli=False, ranking=True)


# -- 4. one Idempotency-Key on two instances at once ---------------------------------------

IDEM_KEYS = 20
IDEM_COPIES = 4
IDEM_PRICE = 7_000
IDEM_STOCK = 100
IDEM_BALANCE = 50_000


async def test_one_idempotency_key_on_two_instances_at_once_has_one_effect(
    postgres_servers: ServerFactory, db: Engine
) -> None:
    servers = await start_instances(postgres_servers, 2, workers=2)
    n = len(servers)
    with anyio.fail_after(120):
        async with servers[0].client(connections=4) as client:
            admin = await servers[0].admin_headers(client)
            product = await servers[0].create_product(
                client,
                admin,
                name="Once",
                variants=[{"sku": "ONCE", "name": "One", "price": IDEM_PRICE, "stock": IDEM_STOCK}],
            )
        variant_id = product["variants"][0]["id"]
        people = await buyers(postgres_servers, IDEM_KEYS, prefix="idem", balance=IDEM_BALANCE)
        body = {"items": [{"variant_id": variant_id, "quantity": 1}], "pay": True}

        def keyed(i: int) -> dict[str, str]:
            return {**people[i].headers, "Idempotency-Key": f"order-{i:02d}-5f1c"}

        async with load_client(connections=IDEM_KEYS * IDEM_COPIES) as load:
            # Every key's copies alternate between the instances; all 80 at once.
            sends = [(i, c % n) for i in range(IDEM_KEYS) for c in range(IDEM_COPIES)]
            answers = await asyncio.gather(
                *(
                    load.call(k, servers[k], "POST", "/orders", headers=keyed(i), json_body=body)
                    for i, k in sends
                )
            )
            no_unanswered_or_5xx(answers)
            firsts: dict[int, Any] = {}
            kinds: Counter[str] = Counter()
            for i in range(IDEM_KEYS):
                mine = [a for (j, _), a in zip(sends, answers, strict=True) if j == i]
                fresh = [a for a in mine if a.status == 201 and not a.replayed]
                assert len(fresh) == 1, (i, [a.describe() for a in mine])
                firsts[i] = fresh[0].body
                for a in mine:
                    if a is fresh[0]:
                        kinds["fresh"] += 1
                    elif a.status == 201:
                        assert a.replayed and a.body == fresh[0].body, (i, a.describe())
                        kinds["replayed"] += 1
                    else:
                        assert (a.status, a.code) == (409, "IDEMPOTENCY_KEY_IN_USE"), (
                            i,
                            a.describe(),
                        )
                        kinds["in_use"] += 1
            print(f"idempotent copies: {dict(kinds)}")
            assert all(f["status"] == "PAID" for f in firsts.values())

            # Retried later on each instance: the stored answer, whoever stored it.
            retries = await asyncio.gather(
                *(
                    load.call(k, servers[k], "POST", "/orders", headers=keyed(i), json_body=body)
                    for i in range(IDEM_KEYS)
                    for k in range(n)
                )
            )
            for index, retry in enumerate(retries):
                i = index // n
                assert (retry.status, retry.replayed) == (201, True), retry.describe()
                assert retry.body == firsts[i]
            # The same key with another body is refused on either instance.
            other = {"items": [{"variant_id": variant_id, "quantity": 2}], "pay": True}
            reused = await asyncio.gather(
                *(
                    load.call(k, servers[k], "POST", "/orders", headers=keyed(0), json_body=other)
                    for k in range(n)
                )
            )
            assert {(a.status, a.code) for a in reused} == {(422, "IDEMPOTENCY_KEY_REUSED")}

        # One effect per key: one order, one payment, one ledger row, one stored key.
        ids = [p.user_id for p in people]
        order_rows = rows(db, select(orders.c.user_id, orders.c.id, orders.c.status))
        assert sorted((r.user_id, r.id) for r in order_rows) == sorted(
            (people[i].user_id, firsts[i]["order_id"]) for i in range(IDEM_KEYS)
        )
        assert {r.status for r in order_rows} == {"PAID"}
        pays = rows(db, select(payments.c.order_id, payments.c.kind, payments.c.amount))
        assert sorted(pays) == sorted(
            (f["order_id"], "PAYMENT", IDEM_PRICE) for f in firsts.values()
        )
        ledger = rows(
            db,
            select(wallet_transactions.c.user_id, wallet_transactions.c.type).where(
                wallet_transactions.c.user_id.in_(ids)
            ),
        )
        assert Counter(ledger) == Counter(
            [(u, "CHARGE") for u in ids] + [(u, "PAYMENT") for u in ids]
        )
        assert wallets_off_ledger(db) == []
        keys = rows(db, select(idempotency_keys.c.user_id, idempotency_keys.c.status))
        assert sorted(keys) == sorted((u, "DONE") for u in ids)
        assert scalar(db, select(variants.c.stock).where(variants.c.id == variant_id)) == (
            IDEM_STOCK - IDEM_KEYS
        )

        await servers[0].assert_audit_clean(cli=False)


# -- 5. restock on A while B believes "sold out" -------------------------------------------

RESTOCK_OPENING = 5
RESTOCK_UNITS = 10
RESTOCK_PRICE = 1_000
#: Margin over the freshness bound: request latency and polling.
RESTOCK_MARGIN_S = 1.0


async def test_restock_on_one_instance_is_sold_by_another_within_the_freshness_bound(
    postgres_servers: ServerFactory, db: Engine
) -> None:
    # One worker each: B's gate is one process's gate.
    a, b = await start_instances(
        postgres_servers, 2, env={"FLASHSALE_GATE_FRESHNESS_S": str(FRESHNESS_S)}
    )
    with anyio.fail_after(120):
        async with a.client(connections=4) as client:
            admin = await a.admin_headers(client)
            (buyer,) = await buyers(postgres_servers, 1, prefix="restock", balance=1_000_000)
            async with load_client(connections=4) as load:

                async def order_on_b(variant_id: int) -> Answer:
                    return await load.call(
                        1,
                        b,
                        "POST",
                        "/orders",
                        headers=buyer.headers,
                        json_body={
                            "items": [{"variant_id": variant_id, "quantity": 1}],
                            "pay": True,
                        },
                    )

                # Two rounds: restocked right after B's "sold out", and once B's
                # "sold out" is older than the bound.
                for round_, pause_s in enumerate((0.0, FRESHNESS_S + 0.5)):
                    product = await a.create_product(
                        client,
                        admin,
                        name=f"Restocked {round_}",
                        variants=[
                            {
                                "sku": f"RS-{round_}",
                                "name": "One",
                                "price": RESTOCK_PRICE,
                                "stock": RESTOCK_OPENING,
                            }
                        ],
                    )
                    variant_id = product["variants"][0]["id"]
                    for _ in range(RESTOCK_OPENING):
                        got = await order_on_b(variant_id)
                        assert got.status == 201, got.describe()
                    sold_out = await order_on_b(variant_id)
                    assert (sold_out.status, sold_out.code) == (409, "OUT_OF_STOCK"), (
                        sold_out.describe()
                    )
                    assert sold_out.body["details"]["available"] == 0
                    await anyio.sleep(pause_s)

                    restocked = a.expect(
                        await client.post(
                            f"/admin/variants/{variant_id}/restock",
                            headers=admin,
                            json={"quantity": RESTOCK_UNITS},
                        ),
                        200,
                    )
                    assert restocked["stock"] == RESTOCK_UNITS
                    restocked_at = time.monotonic()

                    # B sells again within the bound; until then only OUT_OF_STOCK.
                    while True:
                        got = await order_on_b(variant_id)
                        waited = got.at - restocked_at
                        if got.status == 201:
                            break
                        assert (got.status, got.code) == (409, "OUT_OF_STOCK"), got.describe()
                        assert waited <= FRESHNESS_S + RESTOCK_MARGIN_S, (
                            f"B still refuses {waited:.2f} s after the restock"
                        )
                        await anyio.sleep(0.02)
                    assert waited <= FRESHNESS_S + RESTOCK_MARGIN_S, waited
                    print(f"round {round_}: B sold the restock after {waited:.3f} s")

                    # And exactly the restocked units, then "sold out" again.
                    sold = 1
                    while True:
                        got = await order_on_b(variant_id)
                        if got.status != 201:
                            break
                        sold += 1
                    assert (got.status, got.code) == (409, "OUT_OF_STOCK"), got.describe()
                    assert sold == RESTOCK_UNITS
                    assert (
                        scalar(db, select(variants.c.stock).where(variants.c.id == variant_id)) == 0
                    )
                    paid_units = scalar(
                        db,
                        select(func.sum(order_items.c.quantity))
                        .join(orders, orders.c.id == order_items.c.order_id)
                        .where(order_items.c.variant_id == variant_id, orders.c.status == "PAID"),
                    )
                    assert paid_units == RESTOCK_OPENING + RESTOCK_UNITS

        await a.assert_audit_clean(cli=False)


# -- 6. the ranking across instances -------------------------------------------------------

RANK_USERS = 60
RANK_PRICE = 2_000
RANK_STOCK = 10_000
RANK_BALANCE = 1_000_000
#: Copies of each ranking read per instance and metric, on fresh connections (so every
#: worker of an instance answers some).
RANK_COPIES = 6

Ranked = list[tuple[int, int, int]]


def expected_top(sales: Mapping[int, Sequence[tuple[int, int]]], metric: str) -> Ranked:
    """``[(product_id, quantity, orders)]`` of the live sales ``{order_id: [(product_id,
    quantity)]}``, ranked as ``/products/popular`` does (ties: lower product id)."""
    quantity: Counter[int] = Counter()
    order_count: Counter[int] = Counter()
    for lines in sales.values():
        for product_id, units in lines:
            quantity[product_id] += units
        for product_id in {p for p, _ in lines}:
            order_count[product_id] += 1
    entries = [(p, quantity[p], order_count[p]) for p in quantity]
    index = 1 if metric == "quantity" else 2
    return sorted(entries, key=lambda e: (-e[index], e[0]))


async def served_tops(load: Load, servers: Sequence[LiveServer]) -> list[tuple[str, Ranked]]:
    """``(metric, top list)`` of ``RANK_COPIES`` reads per server and metric, all at once."""

    async def one(k: int, server: LiveServer, metric: str) -> tuple[str, Ranked]:
        got = await load.call(
            k,
            server,
            "GET",
            "/products/popular",
            params={"metric": metric, "days": 1, "limit": 50},
        )
        assert got.status == 200, got.describe()
        return metric, [(i["product_id"], i["quantity"], i["orders"]) for i in got.body["items"]]

    return list(
        await asyncio.gather(
            *(
                one(k, server, metric)
                for k, server in enumerate(servers)
                for metric in ("quantity", "orders")
                for _ in range(RANK_COPIES)
            )
        )
    )


async def served_as_expected(
    load: Load, servers: Sequence[LiveServer], sales: Mapping[int, Sequence[tuple[int, int]]]
) -> bool:
    want = {m: expected_top(sales, m) for m in ("quantity", "orders")}
    return all(top == want[metric] for metric, top in await served_tops(load, servers))


async def propagation_s(
    what: str,
    load: Load,
    servers: Sequence[LiveServer],
    sales: Mapping[int, Sequence[tuple[int, int]]],
    since: float,
) -> float:
    """Seconds from ``since`` until every read of the servers serves ``sales``; fails
    when that takes more than the bound (polling goes on a little longer, to report
    how long it did take)."""
    while True:
        if await served_as_expected(load, servers, sales):
            elapsed = time.monotonic() - since
            assert elapsed <= RANKING_PROPAGATION_S, f"{what}: took {elapsed:.2f} s"
            print(f"{what}: {elapsed:.3f} s")
            return elapsed
        if time.monotonic() - since > 5 * RANKING_PROPAGATION_S:
            pytest.fail(
                f"{what}: not served after {5 * RANKING_PROPAGATION_S} s: "
                f"{await served_tops(load, servers)}, want {expected_top(sales, 'quantity')}"
            )
        await anyio.sleep(0.05)


async def test_ranking_follows_sales_and_cancellations_across_instances(
    postgres_servers: ServerFactory, db: Engine
) -> None:
    a, b = await start_instances(postgres_servers, 2, workers=2)
    with anyio.fail_after(180):
        async with a.client(connections=4) as client:
            admin = await a.admin_headers(client)
            products = [
                await a.create_product(
                    client,
                    admin,
                    name=f"Rank {j}",
                    variants=[
                        {"sku": f"RK-{j}", "name": "One", "price": RANK_PRICE, "stock": RANK_STOCK}
                    ],
                )
                for j in range(5)
            ]
        product_of = {p["variants"][0]["id"]: p["id"] for p in products}
        variant = [p["variants"][0]["id"] for p in products]
        people = await buyers(postgres_servers, RANK_USERS, prefix="rank", balance=RANK_BALANCE)
        # Live (paid, not cancelled) sales: {order_id: [(product_id, quantity)]}.
        sales: dict[int, list[tuple[int, int]]] = {}

        async with (
            load_client(connections=50) as load,
            load_client(connections=RANK_COPIES * 2, fresh_connections=True) as reads,
        ):

            async def order(
                k: int, server: LiveServer, who: Buyer, lines: list[tuple[int, int]]
            ) -> Answer:
                got = await load.call(
                    k,
                    server,
                    "POST",
                    "/orders",
                    headers=who.headers,
                    json_body={
                        "items": [{"variant_id": v, "quantity": q} for v, q in lines],
                        "pay": True,
                    },
                )
                assert got.status == 201, got.describe()
                sales[got.body["order_id"]] = [(product_of[v], q) for v, q in lines]
                return got

            # A sale paid on A appears on B.
            first = await order(0, a, people[0], [(variant[0], 3)])
            await propagation_s("a sale on A reaches B", reads, [b], sales, first.at)

            # A burst of concurrent sales on both instances (commits out of id order):
            # both serve every one of them, once.
            burst = await asyncio.gather(
                *(
                    order(
                        i % 2,
                        (a, b)[i % 2],
                        people[i],
                        [(variant[i % 3], 1 + i % 4)] + ([(variant[3], 2)] if i % 5 == 0 else []),
                    )
                    for i in range(1, RANK_USERS)
                )
            )
            await propagation_s(
                "a burst on A and B reaches both", reads, [a, b], sales, max(g.at for g in burst)
            )

            # One product sold once (on B), then that order cancelled on A: it disappears
            # from B; nothing else changes.
            lonely = await order(1, b, people[0], [(variant[4], 7), (variant[0], 1)])
            await propagation_s("the lonely sale reaches A", reads, [a, b], sales, lonely.at)
            lonely_id = lonely.body["order_id"]
            cancelled = await load.call(
                0, a, "POST", f"/orders/{lonely_id}/cancel", headers=people[0].headers
            )
            assert (cancelled.status, cancelled.body["status"]) == (200, "CANCELLED"), (
                cancelled.describe()
            )
            del sales[lonely_id]
            # A's other worker learns it the same way as B's workers do.
            await propagation_s(
                "a cancellation on A reaches B (and A's other worker)",
                reads,
                [a, b],
                sales,
                cancelled.at,
            )
            assert all(
                products[4]["id"] not in {p for p, _, _ in top}
                for _, top in await served_tops(reads, [a, b])
            )

            # The database agrees with what the clients saw.
            paid_units = dict(
                rows(
                    db,
                    select(order_items.c.product_id, func.sum(order_items.c.quantity))
                    .join(orders, orders.c.id == order_items.c.order_id)
                    .where(orders.c.status == "PAID")
                    .group_by(order_items.c.product_id),
                )
            )
            assert paid_units == {p: q for p, q, _ in expected_top(sales, "quantity")}

            # B stops; a new instance rebuilds its window from the database and serves
            # the same top list at once.
            await anyio.to_thread.run_sync(b.process.stop)
            c = await anyio.to_thread.run_sync(functools.partial(postgres_servers.start, workers=2))
            assert await served_as_expected(reads, [c, a], sales), await served_tops(reads, [c, a])

        await a.assert_audit_clean(ranking=True)
        await c.assert_audit_clean(cli=False, ranking=True)
