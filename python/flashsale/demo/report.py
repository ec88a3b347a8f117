"""The plain-text report of ``flashsale demo``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flashsale.demo.client import ScenarioStats
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
            settings (``payment_timeout``: seconds to pay a pay-later order).
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
        total_seconds: wall time from the data platform's start to the end of the
            audit, seconds.
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


def _codes(stats: ScenarioStats) -> str:
    if not stats.codes:
        return "-"
    return ", ".join(f"{code} {n}" for code, n in stats.codes.most_common())


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


def format_report(result: DemoResult) -> str:
    """Render ``result`` as the demo's report (several lines, no trailing newline)."""
    out: list[str] = []
    out.append(
        f"Flashsale demo: {result.users:,} users, concurrency {result.concurrency}, "
        f"{result.workers} server workers, shopping {result.seconds:g} s, seed {result.seed}"
    )
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
    rows: list[list[str]] = [
        ["scenario", "requests", "ok", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors by code"]
    ]
    for s in result.scenarios:
        rows.append(
            [
                s.name,
                f"{s.requests:,}",
                f"{s.successes:,}",
                f"{s.latency(50):.1f}",
                f"{s.latency(95):.1f}",
                f"{s.latency(99):.1f}",
                f"{s.throughput:.0f}",
                _codes(s),
            ]
        )
    out.extend(_table(rows, right={1, 2, 3, 4, 5, 6}))
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
    out.append(f"Total time: {result.total_seconds:.1f} s (data platform start to audit)")
    if result.phases:
        out.append("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases))
    out.extend(f"Warning: {warning}" for warning in result.warnings)
    if result.ok:
        out.append("Result: PASS")
    else:
        out.append(f"Result: FAIL ({len(result.problems)} problems)")
        out.extend(f"  - {problem}" for problem in result.problems)
    return "\n".join(out)
