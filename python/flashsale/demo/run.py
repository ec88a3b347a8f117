"""``flashsale demo``: a flash sale on a real service, with real HTTP traffic.

Starts the data-platform stand-in (``flashsale data-platform``, failing a share of the
deliveries on purpose) and then the real service (``flashsale serve``: ``--instances``
instances of ``--workers`` worker processes each, their outbox relays pointed at the
stand-in, a short payment deadline) on a database of its own; seeds it over the admin
API; runs the coupon rush, the limited-edition rush, and shopping (pay-later orders paid
or abandoned, cancellations, cart checkouts, retries with an ``Idempotency-Key``) with
the flash-deal expiry alongside, with many concurrent clients. Then it waits for the
expiries and for the relays to deliver every event, checks stock, wallets, ranking (on
every instance), orders, keys and the stand-in's copy of the events against its own
account, runs the audit (docs/invariants.md; the ranking check against every instance), prints a
report, and exits non-zero if anything was wrong. Every child process is stopped on
every way out (end, failure, Ctrl-C, SIGTERM).

The database (``--database-url``):

- by default a fresh SQLite file in a temporary folder (the embedded default);
- ``sqlite:///PATH``: a new SQLite file at PATH (refused when it exists), removed at
  the end unless ``--keep``;
- ``postgresql://...``: a PostgreSQL *server*. The demo never writes into the database
  the URL names: it creates a scratch database ``flashsale_demo_<hex>`` on that server
  (:func:`flashsale.db.provision.create_database`, with the URL's credentials),
  migrates it, runs there, and drops it at the end (also after a failure or Ctrl-C)
  unless ``--keep``, which prints its URL instead.

Several instances (``--instances N``) share the one database, the JWT secret and the
admin, each on its own port with its own log; the load client sends each request to
the next instance in turn, so one user's requests hit different instances and the shop
must behave as one. PostgreSQL is the multi-instance setup
(docs/architecture.md#per-process-and-shared).
On SQLite several instances are allowed too: they are only more processes on one
machine sharing one file, which works for any number of worker processes,
so it shows that the instances agree -- but every write still queues for SQLite's one
write lock, so it shows nothing about scaling out.

Per rush the report gives, in total and per instance, requests, req/s, latency
percentiles as the load client measured them and as the instances' own request
histograms give them (:mod:`flashsale.demo.server_latency`), status counts, and the
database transactions per coupon issued or order placed
(:mod:`flashsale.demo.transactions`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from tqdm import tqdm

from flashsale.db.migrate import upgrade
from flashsale.db.provision import create_database, drop_database
from flashsale.demo.checks import check_expiries, check_stock, check_wallets, fetch_popular
from flashsale.demo.client import ApiClient, ScenarioStats, api_client
from flashsale.demo.common import COUPON_QUANTITY, HOLD_STOCK, LIMITED_STOCK, DemoError
from flashsale.demo.events import (
    check_events,
    check_keys,
    check_orders,
    fetch_stored_events,
    outbox_written,
    platform_stats,
    read_store,
    wait_for_relay,
)
from flashsale.demo.report import AuditLike, DataPlatformResult, DemoResult, format_report
from flashsale.demo.scenarios import (
    coupon_rush,
    hold_flash_deal,
    limited_rush,
    release_flash_deal,
)
from flashsale.demo.seeding import seed_world
from flashsale.demo.server import (
    DataPlatformProcess,
    ServerEnv,
    ServerError,
    ServerProcess,
)
from flashsale.demo.shopper import shopping
from flashsale.demo.transactions import PgStats, TransactionProbe
from flashsale.demo.world import World

__all__ = ["DemoOptions", "main", "parse_args", "run_demo"]

#: Ordinary products in the demo catalog (plus the limited edition).
CATALOG_PRODUCTS = 200
#: Requests in flight while seeding: SQLite takes one writer at a time, so more only
#: lengthens the queue (measured with 2 workers: 4-8 is fastest, 64 is 35 % slower).
SEED_CONCURRENCY = 8
#: Random users whose wallet is compared with charged - paid + refunded after shopping
#: (every user who got a refund is compared too).
WALLET_SAMPLE = 200
#: Requests in flight for the end checks (reads).
CHECK_CONCURRENCY = 16
#: How often each server instance sweeps overdue pay-later orders, seconds: well below
#: the demo's payment deadline, so expiry shows within the run.
EXPIRY_SWEEP_S = 0.5
#: Outbox relay retry backoff for the demo, seconds: base and cap (the service's
#: defaults, 0.5 and 60, would leave an unlucky event waiting a minute).
OUTBOX_BACKOFF_BASE_S = 0.2
OUTBOX_BACKOFF_MAX_S = 2.0
#: How often an idle relay looks for events, seconds.
OUTBOX_POLL_S = 0.2
#: The relay must deliver every event within this many seconds after the traffic.
RELAY_TIMEOUT_S = 120.0
#: Seconds of quiet shop over which the background transaction rate is measured.
IDLE_PROBE_S = 1.0
#: Access tokens outlive the run: the shoppers log in once, while seeding, and keep
#: their token (the service's 15 minutes, plus the shopping time beyond it).
TOKEN_TTL_MARGIN_S = 900
#: Name prefix of the scratch databases the demo creates on a PostgreSQL server.
SCRATCH_PREFIX = "flashsale_demo_"


@dataclass(frozen=True)
class DemoOptions:
    """Settings of one demo run (see ``flashsale demo --help``).

    ``workers`` is per instance; ``database_url`` None means a SQLite file in the
    temporary folder, a ``postgresql://`` URL names the server the scratch database is
    created on (see the module docstring).
    """

    users: int = 2000
    concurrency: int = 200
    seconds: float = 20.0
    workers: int = 2
    instances: int = 1
    database_url: str | None = None
    keep: bool = False
    seed: int | None = None
    progress: bool = True
    payment_timeout: int = 5
    data_platform_fail_rate: float = 0.3


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _database_url(text: str) -> str:
    """A ``--database-url``: a PostgreSQL server, or a SQLite file that does not exist yet."""
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(f"not a database URL: {text!r} ({exc})") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        return text
    if backend != "sqlite":
        raise argparse.ArgumentTypeError(f"use a sqlite:// or postgresql:// URL, not {backend}://")
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise argparse.ArgumentTypeError(
            "an in-memory SQLite database cannot be shared by server processes: "
            "give sqlite:///PATH of a new file"
        )
    if Path(url.database).exists():
        raise argparse.ArgumentTypeError(
            f"{url.database} exists: the demo only runs on a database of its own (a new file)"
        )
    return text


def parse_args(argv: list[str]) -> DemoOptions:
    """Parse ``flashsale demo`` arguments (``argv`` without the program and command)."""
    parser = argparse.ArgumentParser(
        prog="flashsale demo",
        description=(
            "Run a flash sale against real Flashsale servers on a database of their own "
            "(a fresh SQLite file by default, or a scratch database on a PostgreSQL "
            "server): a coupon rush, a limited-edition rush, and shopping with pay-later "
            "orders (paid or abandoned), cancellations, cart checkouts and retried "
            "requests, spread over one or several instances, while the outbox relays "
            "deliver events to a data-platform stand-in that fails some of them; then a "
            "report (per instance, and database transactions per order) and the audit. "
            "Exits 1 if anything was wrong."
        ),
    )
    parser.add_argument("--users", type=_positive_int, default=2000, help="users (default 2000)")
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=200,
        help="concurrent clients / HTTP connections (default 200)",
    )
    parser.add_argument(
        "--seconds",
        type=_non_negative_float,
        default=20.0,
        help="duration of the shopping scenario in seconds (default 20)",
    )
    parser.add_argument(
        "--database-url",
        type=_database_url,
        default=None,
        metavar="URL",
        help="postgresql://user@host:port/db: run on a scratch database created on that "
        "server (the named database is not written to) and dropped at the end; "
        "sqlite:///PATH: a new SQLite file there (default: a SQLite file in a temporary "
        "folder)",
    )
    parser.add_argument(
        "--instances",
        type=_positive_int,
        default=1,
        help="server instances sharing the database, each request sent to the next one in "
        "turn (default 1; PostgreSQL is the multi-instance setup, on SQLite they share one "
        "file and its one write lock)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes per instance (default 2 with one instance, 1 with several)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (logs of the servers and the data platform, the "
        "SQLite database) and the database (a PostgreSQL scratch database is not dropped; "
        "its URL is printed)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--payment-timeout",
        type=_positive_int,
        default=5,
        help="seconds to pay a pay-later order before it expires (default 5; raise it on a "
        "machine so busy that answers take seconds)",
    )
    parser.add_argument(
        "--data-platform-fail-rate",
        type=_fraction,
        default=0.3,
        help="fraction of event deliveries the data-platform stand-in fails (default 0.3)",
    )
    args = parser.parse_args(argv)
    # With several instances the instances are the parallelism: two workers each would
    # only add processes contending for the same cores.
    workers = args.workers if args.workers is not None else (2 if args.instances == 1 else 1)
    return DemoOptions(
        users=args.users,
        concurrency=args.concurrency,
        seconds=args.seconds,
        workers=workers,
        instances=args.instances,
        database_url=args.database_url,
        keep=args.keep,
        seed=args.seed,
        progress=not args.no_progress,
        payment_timeout=args.payment_timeout,
        data_platform_fail_rate=args.data_platform_fail_rate,
    )


#: What one tick of each progress bar counts (default: a request).
_UNITS = {"seed catalog": "product", "seed users": "user", "shopping": "s"}


class _Progress:
    """One tqdm bar at a time on stderr; ``bar(description, total)`` returns a tick."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def bar(self, description: str, total: int) -> Callable[[], None]:
        self.close()
        if not self.enabled:
            return lambda: None
        bar = tqdm(
            total=total,
            desc=f"{description:<13}",
            unit=_UNITS.get(description, "req"),
            file=sys.stderr,
            mininterval=0.25,
            dynamic_ncols=True,
            # disable=None: draw only on a terminal, stay silent in logs and pipes.
            disable=None,
        )
        self._bar = bar

        def tick() -> None:
            bar.update(1)

        return tick

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass(frozen=True)
class _Endpoints:
    """Where the demo's processes are: base URLs (one per instance) and the database."""

    server_urls: tuple[str, ...]
    platform_url: str
    database: _Database
    admin_email: str
    admin_password: str


def _orders_since(world: World, count_before: int, instances: int) -> tuple[int, list[int]]:
    """Orders the demo saw created after the first ``count_before``: in total and per
    instance that placed them."""
    per_instance = [0] * instances
    new = list(world.orders.values())[count_before:]  # dicts keep insertion order
    for order in new:
        per_instance[order.instance] += 1
    return len(new), per_instance


def _successes_by_instance(stats: ScenarioStats, instances: int) -> list[int]:
    return [
        stats.by_instance[i].successes if i in stats.by_instance else 0 for i in range(instances)
    ]


async def _drive(
    endpoints: _Endpoints, options: DemoOptions, seed: int, result: DemoResult
) -> None:
    """Seed, run the scenarios against the server, then the end checks; fills ``result``.

    Raises:
        DemoError: when seeding over HTTP fails.
    """
    rng = random.Random(seed)
    progress = _Progress(options.progress)
    database = endpoints.database
    pg = (
        PgStats(database.server_url, database.scratch_name)
        if database.server_url is not None and database.scratch_name is not None
        else None
    )
    try:
        async with api_client(endpoints.server_urls, max_connections=options.concurrency) as api:
            world = await seed_world(
                api,
                admin_email=endpoints.admin_email,
                admin_password=endpoints.admin_password,
                users=options.users,
                products=CATALOG_PRODUCTS,
                concurrency=min(options.concurrency, SEED_CONCURRENCY),
                rng=rng,
                progress=progress.bar,
            )
            result.seed_seconds = world.seconds
            result.phases.append(("seeding", world.seconds))
            probe = TransactionProbe(api, pg)
            # Also lets pg_stat_database catch up with the seeding before the first rush.
            result.idle = await probe.idle(IDLE_PROBE_S)
            result.phases.append(("quiet shop", result.idle.seconds))
            mark = time.perf_counter()
            result.products = len(world.products)
            result.variants = world.variant_count
            result.coupon_quantity = COUPON_QUANTITY
            result.limited_stock = LIMITED_STOCK
            result.hold_stock = HOLD_STOCK
            result.lifecycle = world.lifecycle

            instances = len(endpoints.server_urls)
            await probe.start()
            rush = await coupon_rush(
                api, world, concurrency=options.concurrency, rng=rng, progress=progress.bar
            )
            progress.close()
            window = await probe.stop(
                "coupon rush", "coupon", rush.successes, _successes_by_instance(rush, instances)
            )
            result.transactions.append(window)
            rush.server = window.latency
            result.scenarios.append(rush)
            result.coupons_issued = sum(u.coupon_won for u in world.users)

            await probe.start()
            placed_before = len(world.orders)
            limited, sold, stock_left = await limited_rush(
                api, world, concurrency=options.concurrency, rng=rng, progress=progress.bar
            )
            progress.close()
            window = await probe.stop(
                "limited rush", "order", *_orders_since(world, placed_before, instances)
            )
            result.transactions.append(window)
            limited.server = window.latency
            result.scenarios.append(limited)
            result.limited_sold = sold
            result.limited_stock_left = stock_left
            result.phases.append(("rushes", time.perf_counter() - mark))
            mark = time.perf_counter()

            # The flash deal is held on a quiet server (the holds land well within the
            # deadline); its release runs alongside shopping, which fills the wait.
            await probe.start()
            placed_before = len(world.orders)
            hold_stats, held = await hold_flash_deal(
                api, world, concurrency=options.concurrency, rng=rng
            )
            async with asyncio.TaskGroup() as group:
                shop = group.create_task(
                    shopping(
                        api,
                        world,
                        seconds=options.seconds,
                        concurrency=options.concurrency,
                        rng=rng,
                        progress=progress.bar,
                    )
                )
                release = group.create_task(
                    release_flash_deal(
                        api, world, hold_stats, held, concurrency=options.concurrency, rng=rng
                    )
                )
            result.scenarios.extend([shop.result(), release.result()])
            progress.close()
            traffic_end = time.perf_counter()
            window = await probe.stop(
                "shopping + expiry release",
                "order",
                *_orders_since(world, placed_before, instances),
            )
            result.transactions.append(window)
            # They ran at the same time: one window, so one server-side figure for both.
            shop.result().server = release.result().server = window.latency
            result.phases.append(("flash deal + shopping", time.perf_counter() - mark))
            mark = time.perf_counter()
            await _after_traffic(api, world, endpoints, rng, result, traffic_end)
            result.phases.append(("end checks", time.perf_counter() - mark))
    finally:
        progress.close()
        if pg is not None:
            pg.close()


async def _after_traffic(
    api: ApiClient,
    world: World,
    endpoints: _Endpoints,
    rng: random.Random,
    result: DemoResult,
    traffic_end: float,
) -> None:
    """The end checks: expiries, stock, wallets and ranking while the relay catches up,
    then the orders, the keys and the stand-in's events against the database."""
    # No event is written after the traffic: expiry writes none, the checks only read.
    database_url = endpoints.database.url
    written = await asyncio.to_thread(outbox_written, database_url)
    async with asyncio.TaskGroup() as group:
        relay = group.create_task(
            wait_for_relay(
                api,
                endpoints.server_urls,
                endpoints.platform_url,
                written=written,
                since=traffic_end,
                timeout_s=RELAY_TIMEOUT_S,
            )
        )
        group.create_task(_check_service(api, world, rng, result))
    waited = relay.result()

    snapshot = await asyncio.to_thread(read_store, database_url)
    try:
        stored = await fetch_stored_events(api, endpoints.platform_url)
    except RuntimeError as exc:
        result.problems.append(f"reading the data platform's events: {exc}")
        stored = []
    stats = await platform_stats(api, endpoints.platform_url)

    result.units_sold = sum(world.units_by_product.values())
    result.paid_orders = world.paid_orders
    result.standing_orders = world.standing_orders
    result.cancelled_orders = world.cancelled_orders
    result.coupon_orders = world.coupon_orders
    result.orders_tracked = len(world.orders)
    result.orders_stored = len(snapshot.order_statuses)

    platform = result.data_platform
    assert platform is not None
    platform.written = snapshot.written
    platform.by_type = snapshot.by_type
    platform.delivered = snapshot.written - snapshot.undelivered
    stored_ids = [str(e.get("event_id")) for e in stored]
    platform.stored = len(set(stored_ids))
    # Exactly the outbox's events, each stored once (check_events names any difference).
    platform.ids_match = platform.stored == len(stored_ids) and set(stored_ids) == set(
        snapshot.event_ids
    )
    platform.attempts = snapshot.attempts
    platform.max_attempts = snapshot.max_attempts
    platform.catch_up_s = waited.seconds
    if stats is not None:
        platform.received = stats.received
        platform.injected_failures = stats.failed
        platform.duplicates = stats.duplicates
    if waited.seconds is None:
        got = "?" if waited.stats is None else f"{waited.stats.stored:,}"
        result.problems.append(
            f"the relay did not deliver every event within {RELAY_TIMEOUT_S:g} s after the "
            f"traffic (backlog {waited.backlog}, the data platform stores {got} of {written:,})"
        )
    if snapshot.written != written:
        result.problems.append(
            f"{snapshot.written - written} outbox events were written after the traffic stopped"
        )
    result.problems.extend(check_events(snapshot, stored, stats, world))
    result.problems.extend(check_orders(snapshot, world))
    result.problems.extend(check_keys(snapshot, world.keyed))


async def _check_service(
    api: ApiClient, world: World, rng: random.Random, result: DemoResult
) -> None:
    """What the service serves must match the demo's account: every abandoned order
    EXPIRED (waiting out the deadline), every variant's stock, the wallets, the ranking."""
    result.problems.extend(await check_expiries(api, world, concurrency=CHECK_CONCURRENCY))
    result.problems.extend(await check_stock(api, world, concurrency=CHECK_CONCURRENCY))
    checked, findings = await check_wallets(
        api, world, sample=WALLET_SAMPLE, rng=rng, concurrency=CHECK_CONCURRENCY
    )
    result.wallets_checked = checked
    result.problems.extend(findings)
    result.popular, findings = await fetch_popular(api, world, limit=5)
    result.problems.extend(findings)


def _judge(result: DemoResult) -> None:
    """Add the demo's pass conditions to ``result.problems``."""
    for stats in result.scenarios:
        result.problems.extend(stats.problems)
    expected_coupons = min(COUPON_QUANTITY, result.users)
    if result.coupons_issued != expected_coupons:
        result.problems.append(
            f"{result.coupons_issued} coupons issued, expected {expected_coupons}"
        )
    expected_sold = min(LIMITED_STOCK, result.users)
    if result.limited_sold != expected_sold:
        result.problems.append(
            f"{result.limited_sold} limited units sold, expected {expected_sold}"
        )
    if result.limited_stock_left != LIMITED_STOCK - expected_sold:
        result.problems.append(
            f"limited edition stock is {result.limited_stock_left} after the rush, "
            f"expected {LIMITED_STOCK - expected_sold}"
        )
    life = result.lifecycle
    if life is not None:
        if life.replays != life.retries:
            result.problems.append(
                f"{life.retries - life.replays} of {life.retries} retried requests were not "
                "answered by a replay"
            )
        if life.hold_units != HOLD_STOCK or life.hold_resold != HOLD_STOCK:
            result.problems.append(
                f"flash deal: {life.hold_units} units held and {life.hold_resold} resold, "
                f"expected {HOLD_STOCK} each"
            )
        if life.hold_units and not life.hold_checked:
            # Not a failure of the service: the holds took longer than the deadline.
            result.warnings.append(
                "flash deal: the first hold expired before the stock and a probe order "
                "could be checked; raise --payment-timeout on a busy machine"
            )
    if result.audit is None:
        result.problems.append("the audit did not run")
    elif not result.audit.ok:
        result.problems.append(f"the audit failed {len(result.audit.failures)} checks")


def _audit(database_url: str, service_urls: Sequence[str]) -> AuditLike:
    from flashsale.audit import run_audit

    audit: AuditLike = run_audit(database_url, service_urls)
    return audit


def _server_env(events_url: str, options: DemoOptions) -> dict[str, str]:
    """The server settings of the demo on top of :class:`ServerEnv`'s."""
    return {
        "FLASHSALE_DATA_PLATFORM_URL": events_url,
        "FLASHSALE_ORDER_PAYMENT_TIMEOUT_S": str(options.payment_timeout),
        "FLASHSALE_ORDER_EXPIRY_SWEEP_S": str(EXPIRY_SWEEP_S),
        "FLASHSALE_OUTBOX_POLL_S": str(OUTBOX_POLL_S),
        "FLASHSALE_OUTBOX_BACKOFF_BASE_S": str(OUTBOX_BACKOFF_BASE_S),
        "FLASHSALE_OUTBOX_BACKOFF_MAX_S": str(OUTBOX_BACKOFF_MAX_S),
        "FLASHSALE_JWT_TTL_S": str(min(7 * 86400, TOKEN_TTL_MARGIN_S + int(options.seconds))),
    }


def _log_errors(*logs: Path) -> list[str]:
    """A finding per log that shows an unhandled error (a Python traceback)."""
    findings = []
    for path in logs:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "Traceback" in text:
            excerpt = text[text.index("Traceback") :].splitlines()[:12]
            findings.append(f"{path.name} shows an unhandled error:\n    " + "\n    ".join(excerpt))
    return findings


@dataclass(frozen=True)
class _Database:
    """The demo's own database.

    Attributes:
        url: what the servers, the end checks and the audit use.
        description: for the report.
        server_url: the PostgreSQL server URL the user gave (None on SQLite): the
            scratch database is created, read in ``pg_stat_database`` and dropped
            through it.
        scratch_name: the scratch database's name on that server.
    """

    url: str
    description: str
    server_url: str | None = None
    scratch_name: str | None = None


def _migrate(url: str) -> None:
    """Bring the demo's database to the newest schema before any instance starts: the
    instances' own start-up migration is then a no-op, so they can never race for it."""
    try:
        upgrade(url)
    except SQLAlchemyError as exc:
        raise DemoError(f"migrating the demo's database failed: {exc}") from exc


def _hidden(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _sqlite_database(path: Path, description: str, *, remove: bool) -> Iterator[_Database]:
    url = f"sqlite:///{path}"
    try:
        _migrate(url)
        yield _Database(url, description)
    finally:
        if remove:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{suffix}").unlink()


@contextmanager
def _postgres_database(server_url: str, keep: bool) -> Iterator[_Database]:
    """A scratch database on the server of ``server_url``: created, migrated, yielded,
    and dropped on the way out unless ``keep`` (then its URL is printed)."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    where = make_url(server_url)
    server = f"{where.host or 'localhost'}:{where.port or 5432}"
    try:
        url = create_database(server_url, name)
    except SQLAlchemyError as exc:
        raise DemoError(
            f"cannot create a scratch database on the PostgreSQL server {_hidden(server_url)} "
            f"(is it reachable, and may the user create databases?): {exc}"
        ) from exc
    try:
        _migrate(url)
        fate = "kept" if keep else "dropped at the end"
        yield _Database(
            url,
            f"PostgreSQL {server}, scratch database {name} ({fate})",
            server_url=server_url,
            scratch_name=name,
        )
    finally:
        if keep:
            print(f"Kept the database {_hidden(url)}", file=sys.stderr)
        else:
            try:
                drop_database(server_url, name)
            except SQLAlchemyError as exc:
                print(f"flashsale demo: could not drop {name}: {exc}", file=sys.stderr)


@contextmanager
def _demo_database(options: DemoOptions, workdir: Path) -> Iterator[_Database]:
    """The demo's database as ``--database-url`` says (see the module docstring).

    Raises:
        DemoError: the scratch database cannot be created, or the migration failed.
    """
    if options.database_url is None:
        with _sqlite_database(
            workdir / "flashsale.db", "SQLite file in the temporary folder", remove=False
        ) as database:
            yield database
        return
    url = make_url(options.database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None  # checked by parse_args
        with _sqlite_database(
            Path(url.database),
            f"SQLite file {url.database} ({'kept' if options.keep else 'removed at the end'})",
            remove=not options.keep,
        ) as database:
            yield database
        return
    with _postgres_database(options.database_url, options.keep) as database:
        yield database


def _server_log(workdir: Path, index: int, instances: int) -> Path:
    return workdir / ("server.log" if instances == 1 else f"server-{index + 1}.log")


@contextmanager
def _workdir(options: DemoOptions) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flashsale-demo-"))
    try:
        yield path
    finally:
        if options.keep:
            count = options.instances
            logs = ", ".join(_server_log(path, i, count).name for i in range(count))
            database = "flashsale.db, " if options.database_url is None else ""
            print(
                f"Kept {path} ({database}{logs}, data-platform.db, data-platform.log)",
                file=sys.stderr,
            )
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the whole demo and return its result (the report is not printed).

    The data platform and every instance are stopped, and a PostgreSQL scratch
    database dropped (unless ``options.keep``), before this returns or raises.

    Raises:
        ServerError: when an instance or the data platform cannot be started.
        DemoError: when the database cannot be set up or seeding over HTTP fails.
    """
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    result = DemoResult(
        users=options.users,
        concurrency=options.concurrency,
        workers=options.workers,
        instances=options.instances,
        seconds=options.seconds,
        seed=seed,
        payment_timeout=options.payment_timeout,
        data_platform=DataPlatformResult(fail_rate=options.data_platform_fail_rate),
        cpus=os.cpu_count(),
    )
    started = time.perf_counter()
    # Exits in reverse: the children stop before the database is dropped.
    with (
        _workdir(options) as workdir,
        _demo_database(options, workdir) as database,
        ExitStack() as children,
    ):
        result.database = database.description
        result.phases.append(("database", time.perf_counter() - started))
        mark = time.perf_counter()
        # Before the servers: their relays post events from the first paid order on.
        platform = children.enter_context(
            DataPlatformProcess(
                workdir / "data-platform.db",
                fail_rate=options.data_platform_fail_rate,
                seed=seed,
                log_path=workdir / "data-platform.log",
            )
        )
        # One environment for all: the same database, JWT secret and admin, so a token
        # from any instance works on every other.
        cfg = ServerEnv.for_database(
            database.url, extra_env=_server_env(platform.events_url, options)
        )
        # One after another: each start waits until the instance is healthy.
        servers = [
            children.enter_context(
                ServerProcess(
                    cfg.env,
                    workers=options.workers,
                    log_path=_server_log(workdir, index, options.instances),
                    startup_timeout=60.0,
                )
            )
            for index in range(options.instances)
        ]
        server_urls = tuple(server.base_url for server in servers)
        result.server_urls = list(server_urls)
        endpoints = _Endpoints(
            server_urls=server_urls,
            platform_url=platform.base_url,
            database=database,
            admin_email=cfg.admin_email,
            admin_password=cfg.admin_password,
        )
        result.phases.append(("start", time.perf_counter() - mark))
        asyncio.run(_drive(endpoints, options, seed, result))
        mark = time.perf_counter()
        # At rest, with the instances still up: invariant 5 compares what each serves.
        result.audit = _audit(database.url, server_urls)
        result.phases.append(("audit", time.perf_counter() - mark))
        result.total_seconds = time.perf_counter() - started
        children.close()  # stop them all, so that their logs are complete
        result.problems.extend(
            _log_errors(*(server.log_path for server in servers), platform.log_path)
        )
    _judge(result)
    return result


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so that the child processes are stopped."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Entry point of ``flashsale demo``; returns the exit code (0 pass, 1 fail, 130
    interrupted by Ctrl-C or SIGTERM)."""
    options = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_demo(options)
    except KeyboardInterrupt:
        servers = "the server" if options.instances == 1 else f"the {options.instances} servers"
        print(f"\nInterrupted: {servers} and the data platform were stopped.", file=sys.stderr)
        return 130
    except (ServerError, DemoError) as exc:
        print(f"flashsale demo: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_report(result), flush=True)
    return 0 if result.ok else 1
