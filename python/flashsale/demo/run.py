"""``flashsale demo``: a flash sale on the embedded default, with real HTTP traffic.

Starts the real service (``flashsale serve``, N worker processes) on a fresh SQLite
database in a temporary folder, seeds it over the admin API, runs the coupon rush, the
limited-edition rush and ordinary shopping with many concurrent clients, prints a
report and the audit (DESIGN §6), and exits non-zero if anything was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from flashsale.demo.client import api_client
from flashsale.demo.report import AuditLike, DemoResult, format_report
from flashsale.demo.scenarios import (
    COUPON_QUANTITY,
    LIMITED_STOCK,
    DemoError,
    check_wallets,
    coupon_rush,
    fetch_popular,
    limited_rush,
    seed_world,
    shopping,
)
from flashsale.demo.server import ServerError, ServerProcess, SqliteServerEnv

__all__ = ["DemoOptions", "main", "parse_args", "run_demo"]

#: Ordinary products in the demo catalog (plus the limited edition).
CATALOG_PRODUCTS = 200
#: Requests in flight while seeding: SQLite takes one writer at a time, so more only
#: lengthens the queue (measured with 2 workers: 4-8 is fastest, 64 is 35 % slower).
SEED_CONCURRENCY = 8
#: Users whose wallet is compared with charged - paid after shopping.
WALLET_SAMPLE = 200


@dataclass(frozen=True)
class DemoOptions:
    """Settings of one demo run (see ``flashsale demo --help``)."""

    users: int = 2000
    concurrency: int = 200
    seconds: float = 20.0
    workers: int = 2
    keep: bool = False
    seed: int | None = None
    progress: bool = True


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


def parse_args(argv: list[str]) -> DemoOptions:
    """Parse ``flashsale demo`` arguments (``argv`` without the program and command)."""
    parser = argparse.ArgumentParser(
        prog="flashsale demo",
        description=(
            "Run a flash sale against a real Flashsale server on a fresh SQLite database: "
            "a coupon rush, a limited-edition rush and ordinary shopping, then a report "
            "and the audit. Exits 1 if anything was wrong."
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
        "--workers", type=_positive_int, default=2, help="server worker processes (default 2)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (database, server log)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    return DemoOptions(
        users=args.users,
        concurrency=args.concurrency,
        seconds=args.seconds,
        workers=args.workers,
        keep=args.keep,
        seed=args.seed,
        progress=not args.no_progress,
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


async def _drive(
    base_url: str,
    options: DemoOptions,
    seed: int,
    admin_email: str,
    admin_password: str,
    result: DemoResult,
) -> None:
    """Seed and run the three scenarios against ``base_url``, filling ``result``."""
    rng = random.Random(seed)
    progress = _Progress(options.progress)
    try:
        async with api_client(base_url, max_connections=options.concurrency) as api:
            world = await seed_world(
                api,
                admin_email=admin_email,
                admin_password=admin_password,
                users=options.users,
                products=CATALOG_PRODUCTS,
                concurrency=min(options.concurrency, SEED_CONCURRENCY),
                rng=rng,
                progress=progress.bar,
            )
            result.seed_seconds = world.seconds
            result.products = len(world.products)
            result.variants = world.variant_count
            result.coupon_quantity = COUPON_QUANTITY
            result.limited_stock = LIMITED_STOCK

            rush = await coupon_rush(
                api, world, concurrency=options.concurrency, rng=rng, progress=progress.bar
            )
            result.scenarios.append(rush)
            result.coupons_issued = sum(u.coupon_won for u in world.users)

            limited, sold, stock_left = await limited_rush(
                api, world, concurrency=options.concurrency, rng=rng, progress=progress.bar
            )
            result.scenarios.append(limited)
            result.limited_sold = sold
            result.limited_stock_left = stock_left

            shop = await shopping(
                api,
                world,
                seconds=options.seconds,
                concurrency=options.concurrency,
                rng=rng,
                progress=progress.bar,
            )
            result.scenarios.append(shop)
            progress.close()

            result.units_sold = sum(world.units_by_product.values())
            result.paid_orders = world.paid_orders
            result.coupon_orders = world.coupon_orders
            result.problems.extend(
                await check_wallets(
                    api,
                    world,
                    sample=WALLET_SAMPLE,
                    rng=rng,
                    concurrency=min(options.concurrency, SEED_CONCURRENCY),
                )
            )
            result.popular, findings = await fetch_popular(api, world, limit=5)
            result.problems.extend(findings)
    finally:
        progress.close()


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
    if result.audit is None:
        result.problems.append("the audit did not run")
    elif not result.audit.ok:
        result.problems.append(f"the audit failed {len(result.audit.failures)} checks")


def _audit(database_url: str) -> AuditLike:
    from flashsale.audit import run_audit

    audit: AuditLike = run_audit(database_url)
    return audit


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flashsale-demo-"))
    try:
        yield path
    finally:
        if keep:
            print(f"Kept {path} (database flashsale.db, server log server.log)", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the whole demo and return its result (the report is not printed).

    Raises:
        ServerError: when the server cannot be started.
        DemoError: when seeding over HTTP fails.
    """
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    result = DemoResult(
        users=options.users,
        concurrency=options.concurrency,
        workers=options.workers,
        seconds=options.seconds,
        seed=seed,
    )
    with _workdir(options.keep) as workdir:
        cfg = SqliteServerEnv.in_folder(workdir)
        server = ServerProcess(
            cfg.env, workers=options.workers, log_path=workdir / "server.log", startup_timeout=60.0
        )
        started = time.perf_counter()
        with server:
            asyncio.run(
                _drive(server.base_url, options, seed, cfg.admin_email, cfg.admin_password, result)
            )
            # At rest, with the server still up: the ranking check compares what it serves.
            result.audit = _audit(cfg.database_url)
            result.total_seconds = time.perf_counter() - started
        _judge(result)
    return result


def main(argv: list[str]) -> int:
    """Entry point of ``flashsale demo``; returns the exit code (0 pass, 1 fail, 130 Ctrl-C)."""
    options = parse_args(argv)
    try:
        result = run_demo(options)
    except KeyboardInterrupt:
        print("\nInterrupted: the server was stopped.", file=sys.stderr)
        return 130
    except (ServerError, DemoError) as exc:
        print(f"flashsale demo: {exc}", file=sys.stderr)
        return 1
    print(format_report(result), flush=True)
    return 0 if result.ok else 1
