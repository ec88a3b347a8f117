"""The plain-text report of ``flashsale demo``.

Per scenario one row over all instances and, with several instances, one row per
instance (requests, answers, latency percentiles as the load client measured them and
as the instances' own request histograms give them, req/s, HTTP status counts, error
codes), with a note on what each latency includes; then the database transactions
each rush cost per coupon issued or order placed (every instance's
``flashsale_db_transactions_total``, and on PostgreSQL the server's
``pg_stat_database`` as a cross-check), the sale's outcome, the order lifecycle, the
event delivery, the audit and the verdict.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flashsale.demo.client import InstanceTally, ScenarioStats
from flashsale.demo.server_latency import LATENCY_METRIC, ServerLatency
from flashsale.demo.transactions import PG_STATS_SETTLE_S, IdleRate, RushTransactions, TxCount
from flashsale.demo.world import Lifecycle

__all__ = ["AuditLike", "DataPlatformResult", "DemoResult", "format_report"]


class AuditLike(Protocol):
    """What the report needs of :func:`flashsale.audit.run_audit`'s result."""

    @property
    def ok(self) -> bool: ...

    @property
    def failures(self) -> list[str]: ...

    @property
    def checks(self) -> list[str]: ...


@dataclass
class DataPlatformResult:
    """How the outbox events reached the data-platform stand-in.

    Attributes:
        fail_rate: fraction of posts the stand-in failed on purpose (503).
        written: events in the outbox; ``by_type``: of which per type.
        delivered: outbox events marked delivered (acknowledged by the stand-in).
        stored: distinct events the stand-in stores (``GET /events``).
        ids_match: the stored event ids, once each, equal the outbox's.
        attempts: delivery attempts recorded by the relay (``Σ outbox.attempts``).
        received: posts the stand-in received (``/stats``).
        injected_failures: posts it failed on purpose (``/stats`` ``failed``).
        duplicates: posts of an event it already stored (``/stats``).
        max_attempts: the most attempts one event needed.
        catch_up_s: seconds from the end of the traffic until every event was
            delivered (None: not within the timeout).
    """

    fail_rate: float
    written: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    stored: int = 0
    ids_match: bool = False
    attempts: int = 0
    received: int = 0
    injected_failures: int = 0
    duplicates: int = 0
    max_attempts: int = 0
    catch_up_s: float | None = None

    @property
    def failed_attempts(self) -> int:
        """Attempts that did not deliver (each was retried): attempts - delivered."""
        return self.attempts - self.delivered


@dataclass
class DemoResult:
    """Everything the demo measured, and what went wrong.

    Attributes:
        users / concurrency / workers / seconds / seed / payment_timeout: the run's
            settings (``workers`` per instance; ``payment_timeout``: seconds to pay a
            pay-later order).
        instances: server instances sharing the database.
        database: what the database was, for the report (e.g. ``"SQLite file
            (temporary)"`` or ``"PostgreSQL 127.0.0.1:5432, scratch database ..."``).
        server_urls: the instances' base URLs, in instance order.
        cpus: logical CPUs of the machine that ran the servers and the load client
            (None: unknown).
        idle: background transactions of the quiet shop (None: not measured).
        transactions: database transactions of each rush, in order.
        seed_seconds: wall time of seeding over HTTP, seconds.
        products / variants: ordinary catalog size (plus the limited edition and the
            flash deal).
        scenarios: the scenarios' tallies, in order.
        coupons_issued: users the coupon rush issued the coupon to.
        coupon_quantity: the coupon's total quantity.
        limited_sold / limited_stock: limited units sold, and its total stock.
        limited_stock_left: stock of the limited edition afterwards (GET /products/{id}).
        hold_stock: units of the flash deal.
        units_sold: units in orders that stay PAID (client tally).
        paid_orders: orders ever paid; standing_orders: of which still PAID;
            cancelled_orders: of which cancelled (refunded); coupon_orders: paid ones
            that used the coupon.
        lifecycle: pay-later, cancellation, cart and retry counts (None: not run).
        orders_tracked / orders_stored: orders the demo saw created / the database holds.
        wallets_checked: wallets compared with charged - paid + refunded.
        data_platform: event delivery figures (None: not measured).
        popular: the body of ``GET /products/popular?limit=5&days=3`` at the end.
        audit: the audit's result (None when it could not run).
        total_seconds: wall time from the database set-up to the end of the audit,
            seconds.
        phases: ``(phase, seconds)`` in order, splitting ``total_seconds``.
        problems: every reason the run failed (empty: it passed).
        warnings: checks that could not be made (the run may still pass).
    """

    users: int
    concurrency: int
    workers: int
    seconds: float
    seed: int
    payment_timeout: int = 0
    instances: int = 1
    database: str = ""
    server_urls: list[str] = field(default_factory=list)
    cpus: int | None = None
    idle: IdleRate | None = None
    transactions: list[RushTransactions] = field(default_factory=list)
    seed_seconds: float = 0.0
    products: int = 0
    variants: int = 0
    scenarios: list[ScenarioStats] = field(default_factory=list)
    coupons_issued: int = 0
    coupon_quantity: int = 0
    limited_sold: int = 0
    limited_stock: int = 0
    limited_stock_left: int | None = None
    hold_stock: int = 0
    units_sold: int = 0
    paid_orders: int = 0
    standing_orders: int = 0
    cancelled_orders: int = 0
    coupon_orders: int = 0
    lifecycle: Lifecycle | None = None
    orders_tracked: int = 0
    orders_stored: int | None = None
    wallets_checked: int = 0
    data_platform: DataPlatformResult | None = None
    popular: dict[str, Any] = field(default_factory=dict)
    audit: AuditLike | None = None
    total_seconds: float = 0.0
    phases: list[tuple[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing went wrong."""
        return not self.problems


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _codes(stats: ScenarioStats | InstanceTally) -> str:
    if not stats.codes:
        return "-"
    return ", ".join(f"{code} {n}" for code, n in stats.codes.most_common())


def _statuses(stats: ScenarioStats | InstanceTally) -> str:
    """``"201 100, 409 230"`` (status 0: no answer)."""
    return ", ".join(f"{status} {n}" for status, n in sorted(stats.statuses.items())) or "-"


def _instance(index: int) -> str:
    return f"  instance {index + 1}"


def _ratio(count: int, per: int, digits: int) -> str:
    return f"{count / per:.{digits}f}" if per > 0 else "-"


def _table(rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _lifecycle_lines(result: DemoResult, life: Lifecycle) -> list[str]:
    held = (
        "stock not checked while held"
        if life.hold_stock_while_held is None
        else f"stock {life.hold_stock_while_held} while held"
    )
    if life.hold_probe_refused:
        held += ", one more order refused OUT_OF_STOCK"
    after = "?" if life.hold_stock_after is None else str(life.hold_stock_after)
    stored = "?" if result.orders_stored is None else f"{result.orders_stored:,}"
    return [
        "Order lifecycle:",
        f"  Pay later:           {life.pending:,} PENDING orders in shopping: "
        f"{life.paid_later:,} paid within the {result.payment_timeout} s deadline, "
        f"{life.abandoned:,} abandoned, {life.payment_refused:,} refused for the balance, "
        f"{life.paid_too_late:,} paid too late",
        f"  Expired:             {life.expired:,} of them EXPIRED after the deadline, "
        "their stock back",
        f"  Flash deal:          {life.hold_units} units held by {life.hold_orders} pending "
        f"orders ({held}), back {_seconds(life.hold_release_lag_s)} after the deadline, "
        f"{life.hold_resold} sold again (stock {after})",
        f"  Cancelled:           {life.cancelled:,} paid orders, {life.refunded_amount:,} KRW "
        f"refunded (wallets checked: {result.wallets_checked:,})",
        f"  Cart checkouts:      {life.cart_checkouts:,} (cart emptied), "
        f"{life.cart_refused:,} refused (cart kept, then cleared)",
        f"  Idempotent retries:  {life.keyed:,} POSTs sent again with the same key: "
        f"{life.replays:,} retries answered by replay "
        f"({life.in_use:,} x 409 IDEMPOTENCY_KEY_IN_USE while the first ran)",
        f"  Orders stored:       {stored}, the demo saw {result.orders_tracked:,} created",
    ]


def _data_platform_lines(platform: DataPlatformResult) -> list[str]:
    types = ", ".join(f"{t} {n:,}" for t, n in sorted(platform.by_type.items()))
    match = "ids equal the outbox's" if platform.ids_match else "ids DIFFER from the outbox's"
    return [
        f"Data platform (stand-in failing {platform.fail_rate:.0%} of posts):",
        f"  Events written:      {platform.written:,} ({types or 'none'})",
        f"  Events delivered:    {platform.delivered:,} of {platform.written:,} written; "
        f"stored {platform.stored:,}, one copy each, {match}",
        f"  Delivery attempts:   {platform.attempts:,} ({platform.failed_attempts:,} failed "
        f"and retried; the stand-in received {platform.received:,} posts, "
        f"failed {platform.injected_failures:,})",
        f"  Duplicates received: {platform.duplicates:,} (acknowledgement lost, sent again)",
        f"  Max attempts:        {platform.max_attempts} for one event",
        f"  Relay caught up:     {_seconds(platform.catch_up_s)} after the traffic stopped",
    ]


#: Percentiles in the scenario table, client and server side.
_PERCENTILES = (50, 95, 99)
#: Cell of a server-side figure that is the row above's (scenarios sharing one window).
_DITTO = '"'


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _server_cells(
    server: ServerLatency | None, shared: bool, instance: int | None = None
) -> list[str]:
    """The server-side percentile cells of a row: ``"-"`` when unknown or no request was
    observed, :data:`_DITTO` when the window is the previous scenario's."""
    if shared:
        return [_DITTO] * len(_PERCENTILES)
    if server is None:
        return ["-"] * len(_PERCENTILES)
    return [_ms(server.latency(pct, instance)) for pct in _PERCENTILES]


def _bucket_bounds(result: DemoResult) -> str | None:
    """The finite bucket bounds of the server histograms, in ms (``"1, 2.5, 5, ..."``)."""
    for s in result.scenarios:
        total = s.server.total if s.server is not None else None
        if total is not None and total.bounds:
            return ", ".join(f"{bound * 1000:g}" for bound in total.bounds[:-1])
    return None


def _latency_notes(result: DemoResult) -> list[str]:
    """What the client and the server latencies include, under the scenario table."""
    cores = "its cores" if result.cpus is None else f"its {result.cpus} cores"
    bounds = _bucket_bounds(result)
    buckets = "" if bounds is None else f" (bucket bounds {bounds} ms)"
    out = [
        "  client: measured by the load client, a Python (aiohttp) program on the same machine "
        f"as the servers, sharing {cores} with them,",
        "    so a client latency includes the client's own queueing (for its event loop and "
        "the CPU) besides the server's time",
        f"  server: the service's own histogram {LATENCY_METRIC} over the scenario (every "
        "/api/ route, all instances),",
        "    first byte received to last byte sent (not the time a request waits in the "
        "socket before the server reads it);",
        "    bucket resolution: values are interpolated linearly within buckets about x2.5 "
        f"apart{buckets},",
        "    so a server figure is only good to its bucket (it can even exceed the client's); "
        "- : nothing observed",
    ]
    shared = [
        (before.name, s.name)
        for before, s in itertools.pairwise(result.scenarios)
        if s.server is not None and s.server is before.server
    ]
    for first, second in shared:
        out.append(
            f"  {_DITTO} : {second} ran at the same time as {first}: one window, so its server "
            f"columns are {first}'s (row for row)"
        )
    return out


def _scenario_lines(result: DemoResult) -> list[str]:
    """The scenario table: a row per scenario, and one per instance under it when there
    are several (its req/s over the scenario's wall time); client-side and server-side
    latency percentiles side by side, and the notes on what each includes."""
    rows: list[list[str]] = [
        ["scenario", "requests", "ok",
         *(f"client p{pct} ms" for pct in _PERCENTILES),
         *(f"server p{pct} ms" for pct in _PERCENTILES),
         "req/s", "statuses", "errors by code"]
    ]  # fmt: skip
    previous: ServerLatency | None = None
    for s in result.scenarios:
        shared = s.server is not None and s.server is previous
        previous = s.server
        rows.append(
            [
                s.name,
                f"{s.requests:,}",
                f"{s.successes:,}",
                *(f"{s.latency(pct):.1f}" for pct in _PERCENTILES),
                *_server_cells(s.server, shared),
                f"{s.throughput:.0f}",
                _statuses(s),
                _codes(s),
            ]
        )
        if result.instances < 2:
            continue
        for index in range(result.instances):
            tally = s.by_instance.get(index, InstanceTally())
            rate = tally.requests / s.seconds if s.finished else 0.0
            rows.append(
                [
                    _instance(index),
                    f"{tally.requests:,}",
                    f"{tally.successes:,}",
                    *(f"{tally.latency(pct):.1f}" for pct in _PERCENTILES),
                    *_server_cells(s.server, shared, index),
                    f"{rate:.0f}",
                    _statuses(tally),
                    _codes(tally),
                ]
            )
    numeric = 3 + 2 * len(_PERCENTILES) + 1  # requests .. req/s
    return _table(rows, right=set(range(1, numeric))) + _latency_notes(result)


def _transaction_lines(result: DemoResult) -> list[str]:
    """Database transactions per coupon issued / order placed, per rush (and instance).

    The figures are raw: they include the instances' background work, whose rate on
    the quiet shop is given below the table. It is not subtracted: under load the
    background loops run less often than on a quiet shop, so subtracting the quiet rate
    would take off too much. ``pg_stat tx/success`` is the server's own count, on
    PostgreSQL.
    """
    pg = any(rush.pg is not None for rush in result.transactions)
    header = ["rush", "successes", "seconds", "db tx", "commits", "tx/success", "commits/success"]
    if pg:
        header.append("pg_stat tx/success")
    rows: list[list[str]] = [header]

    def row(
        name: str, unit: str, successes: int, seconds: float | None, tx: TxCount | None
    ) -> list[str]:
        cells = [
            name,
            f"{successes:,} {unit if successes == 1 else unit + 's'}",
            "" if seconds is None else f"{seconds:.1f}",
        ]
        if tx is None:
            cells += ["?", "?", "?", "?"]
        else:
            cells += [
                f"{tx.total:,}",
                f"{tx.commits:,}",
                _ratio(tx.total, successes, 1),
                _ratio(tx.commits, successes, 2),
            ]
        return [*cells, ""] if pg else cells

    for rush in result.transactions:
        total = row(rush.name, rush.unit, rush.successes, rush.seconds, rush.total)
        if pg:
            total[-1] = "?" if rush.pg is None else _ratio(rush.pg.total, rush.successes, 1)
        rows.append(total)
        if len(rush.instances) < 2:
            continue
        for index, (tx, successes) in enumerate(
            zip(rush.instances, rush.instance_successes, strict=True)
        ):
            rows.append(row(_instance(index), rush.unit, successes, None, tx))
    out = ["Database transactions per success (flashsale_db_transactions_total of every instance):"]
    out.extend(_table(rows, right=set(range(1, len(header)))))
    out.append("  db tx: commits + rollbacks (a read-only transaction ends in a rollback)")
    rate = result.idle.per_second if result.idle is not None else None
    shown = "?" if rate is None else f"{rate:.1f}"
    out.append(
        f"  Background: {shown} tx/s over all instances on the quiet shop (outbox relays, "
        "expiry sweepers), included above (less under load)"
    )
    if pg:
        out.append(
            "  pg_stat: xact_commit + xact_rollback of the database in pg_stat_database, read "
            f"{PG_STATS_SETTLE_S:g} s after each rush (statistics flush): a cross-check"
        )
    return out


def format_report(result: DemoResult) -> str:
    """Render ``result`` as the demo's report (several lines, no trailing newline)."""
    out: list[str] = []
    processes = (
        f"{result.instances} instance{'s' if result.instances != 1 else ''} x "
        f"{result.workers} server worker{'s' if result.workers != 1 else ''}"
    )
    out.append(
        f"Flashsale demo: {result.users:,} users, concurrency {result.concurrency}, "
        f"{processes}, shopping {result.seconds:g} s, seed {result.seed}"
    )
    if result.database:
        out.append(f"Database: {result.database}")
    if len(result.server_urls) > 1:
        listed = ", ".join(f"{i + 1} {url}" for i, url in enumerate(result.server_urls))
        out.append(f"Instances (each request to the next in turn): {listed}")
    if result.data_platform is not None:
        out.append(
            f"Pay-later deadline {result.payment_timeout} s; the data platform fails "
            f"{result.data_platform.fail_rate:.0%} of deliveries on purpose"
        )
    out.append(
        f"Seeded over HTTP in {result.seed_seconds:.1f} s: {result.products} products "
        f"({result.variants} variants) + 1 limited edition of {result.limited_stock} units "
        f"+ 1 flash deal of {result.hold_stock} units, 1 coupon of {result.coupon_quantity}, "
        f"{result.users:,} users charged"
    )
    out.append("")
    out.extend(_scenario_lines(result))
    out.append("")
    if result.transactions:
        out.extend(_transaction_lines(result))
        out.append("")
    out.append(f"Coupons issued:       {result.coupons_issued} of {result.coupon_quantity}")
    left = "?" if result.limited_stock_left is None else str(result.limited_stock_left)
    out.append(
        f"Limited units sold:   {result.limited_sold} of {result.limited_stock} (stock left {left})"
    )
    out.append(
        f"Units sold in total:  {result.units_sold:,} in {result.standing_orders:,} paid orders "
        f"({result.paid_orders:,} paid, {result.cancelled_orders:,} of them cancelled; "
        f"{result.coupon_orders} paid with the coupon)"
    )
    items = result.popular.get("items") or []
    metric = result.popular.get("metric", "quantity")
    out.append(f"Top {len(items)} popular products (last 3 days, by {metric}):")
    for item in items:
        out.append(
            f"  {item.get('rank')}. {item.get('name')} (#{item.get('product_id')}, "
            f"{_num(item.get('price'))} KRW): {_num(item.get('quantity'))} units "
            f"in {_num(item.get('orders'))} orders"
        )
    if result.lifecycle is not None:
        out.append("")
        out.extend(_lifecycle_lines(result, result.lifecycle))
    if result.data_platform is not None:
        out.append("")
        out.extend(_data_platform_lines(result.data_platform))
    out.append("")
    audit = result.audit
    if audit is None:
        out.append("Audit: did not run")
    else:
        verdict = "OK" if audit.ok else f"FAILED ({len(audit.failures)} failures)"
        out.append(f"Audit: {verdict}, {len(audit.checks)} checks")
        for check in audit.checks:
            failed = any(f.startswith(check) for f in audit.failures)
            out.append(f"  [{'FAIL' if failed else ' ok '}] {check}")
        out.extend(f"  - {failure}" for failure in audit.failures)
    out.append("")
    out.append(f"Total time: {result.total_seconds:.1f} s (database set-up to audit)")
    if result.phases:
        out.append("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases))
    out.extend(f"Warning: {warning}" for warning in result.warnings)
    if result.ok:
        out.append("Result: PASS")
    else:
        out.append(f"Result: FAIL ({len(result.problems)} problems)")
        out.extend(f"  - {problem}" for problem in result.problems)
    return "\n".join(out)
