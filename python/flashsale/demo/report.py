"""The plain-text report of ``flashsale demo``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flashsale.demo.client import ScenarioStats

__all__ = ["AuditLike", "DemoResult", "format_report"]


class AuditLike(Protocol):
    """What the report needs of :func:`flashsale.audit.run_audit`'s result."""

    @property
    def ok(self) -> bool: ...

    @property
    def failures(self) -> list[str]: ...

    @property
    def checks(self) -> list[str]: ...


@dataclass
class DemoResult:
    """Everything the demo measured, and what went wrong.

    Attributes:
        users / concurrency / workers / seconds / seed: the run's settings.
        seed_seconds: wall time of seeding over HTTP, seconds.
        products / variants: ordinary catalog size (plus one limited edition).
        scenarios: the three scenarios' tallies, in order.
        coupons_issued: users the coupon rush issued the coupon to.
        coupon_quantity: the coupon's total quantity.
        limited_sold / limited_stock: limited units sold, and its total stock.
        limited_stock_left: stock of the limited edition afterwards (GET /products/{id}).
        units_sold / paid_orders / coupon_orders: client tally of 201 orders.
        popular: the body of ``GET /products/popular?limit=5&days=3`` at the end.
        audit: the audit's result (None when it could not run).
        total_seconds: wall time from server start to the end of the audit, seconds.
        problems: every reason the run failed (empty: it passed).
    """

    users: int
    concurrency: int
    workers: int
    seconds: float
    seed: int
    seed_seconds: float = 0.0
    products: int = 0
    variants: int = 0
    scenarios: list[ScenarioStats] = field(default_factory=list)
    coupons_issued: int = 0
    coupon_quantity: int = 0
    limited_sold: int = 0
    limited_stock: int = 0
    limited_stock_left: int | None = None
    units_sold: int = 0
    paid_orders: int = 0
    coupon_orders: int = 0
    popular: dict[str, Any] = field(default_factory=dict)
    audit: AuditLike | None = None
    total_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

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


def format_report(result: DemoResult) -> str:
    """Render ``result`` as the demo's report (several lines, no trailing newline)."""
    out: list[str] = []
    out.append(
        f"Flashsale demo: {result.users:,} users, concurrency {result.concurrency}, "
        f"{result.workers} server workers, shopping {result.seconds:g} s, seed {result.seed}"
    )
    out.append(
        f"Seeded over HTTP in {result.seed_seconds:.1f} s: {result.products} products "
        f"({result.variants} variants) + 1 limited edition of {result.limited_stock} units, "
        f"1 coupon of {result.coupon_quantity}, {result.users:,} users charged"
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
        f"Units sold in total:  {result.units_sold:,} in {result.paid_orders:,} paid orders "
        f"({result.coupon_orders} with the coupon)"
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
    out.append(f"Total time: {result.total_seconds:.1f} s (server start to audit)")
    if result.ok:
        out.append("Result: PASS")
    else:
        out.append(f"Result: FAIL ({len(result.problems)} problems)")
        out.extend(f"  - {problem}" for problem in result.problems)
    return "\n".join(out)
