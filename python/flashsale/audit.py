"""``flashsale audit``: check the invariants (docs/invariants.md) against the database.

1. Stock: every variant's stock equals the sum of its inventory movements and is
   ≥ 0; units in PAID or PENDING orders never exceed the units ever stocked.
2. Money: every wallet's balance equals the sum of its ledger and is ≥ 0; each
   PAID order has one PAYMENT of ``paid_amount`` (payment row and ledger row);
   each refunded order one REFUND.
3. Coupons: issued count equals the number of user coupons and is ≤ the total
   quantity; at most one per user; a USED coupon belongs to exactly one PAID
   order (or the PENDING order holding it until payment or expiry).
4. Events: every order that was paid has exactly one ``order.paid`` outbox
   event, every order cancelled after payment exactly one ``order.cancelled``,
   and no other order has events. Outbox rows are never deleted, so an event
   that exists is delivered or still retrying: none is lost.
5. Ranking: given running instances (``--service-url``), each one's served
   ``/products/popular`` equals the same top-k computed in SQL over PAID orders
   in the window it reports, for both metrics and 1, 3 and 7 days. "At rest":
   the comparison is retried for a few seconds so followers can catch up.

Each failure names the rows that break the rule.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, text

from flashsale.db.engine import make_sync_engine

_LIMIT = 20


@dataclass
class AuditReport:
    """The outcome: ``checks`` run, ``failures`` found (empty when ``ok``)."""

    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        """A human-readable summary, one line per check and failure."""
        lines = [
            f"[{'FAIL' if any(f.startswith(c) for f in self.failures) else ' ok '}] {c}"
            for c in self.checks
        ]
        lines += [f"  - {f}" for f in self.failures]
        lines.append("audit: OK" if self.ok else f"audit: {len(self.failures)} failure(s)")
        return "\n".join(lines)


#: (invariant name, description, SQL returning offending rows)
_CHECKS: list[tuple[str, str, str]] = [
    (
        "1.stock",
        "variant stock = sum of inventory movements",
        """SELECT v.id, v.stock, COALESCE(SUM(m.quantity), 0) AS ledger
           FROM variants v LEFT JOIN inventory_movements m ON m.variant_id = v.id
           GROUP BY v.id, v.stock HAVING v.stock <> COALESCE(SUM(m.quantity), 0)""",
    ),
    ("1.stock", "variant stock >= 0", "SELECT id, stock FROM variants WHERE stock < 0"),
    (
        "1.stock",
        "units held by PAID/PENDING orders <= units ever stocked",
        """SELECT v.id,
                  (SELECT COALESCE(SUM(i.quantity), 0) FROM order_items i
                     JOIN orders o ON o.id = i.order_id
                    WHERE i.variant_id = v.id AND o.status IN ('PAID', 'PENDING')) AS held,
                  (SELECT COALESCE(SUM(m.quantity), 0) FROM inventory_movements m
                    WHERE m.variant_id = v.id AND m.kind = 'RESTOCK') AS stocked
           FROM variants v
           WHERE (SELECT COALESCE(SUM(i.quantity), 0) FROM order_items i
                    JOIN orders o ON o.id = i.order_id
                   WHERE i.variant_id = v.id AND o.status IN ('PAID', 'PENDING'))
               > (SELECT COALESCE(SUM(m.quantity), 0) FROM inventory_movements m
                   WHERE m.variant_id = v.id AND m.kind = 'RESTOCK')""",
    ),
    (
        "1.stock",
        "an order's movements hold its units while PAID/PENDING and return them after",
        """SELECT o.id, o.status, i.variant_id, i.quantity,
                  (SELECT COALESCE(SUM(m.quantity), 0) FROM inventory_movements m
                    WHERE m.order_id = o.id AND m.variant_id = i.variant_id) AS moved
           FROM orders o JOIN order_items i ON i.order_id = o.id
           WHERE (SELECT COALESCE(SUM(m.quantity), 0) FROM inventory_movements m
                   WHERE m.order_id = o.id AND m.variant_id = i.variant_id)
              <> CASE WHEN o.status IN ('PAID', 'PENDING') THEN -i.quantity ELSE 0 END""",
    ),
    (
        "2.money",
        "wallet balance = sum of ledger",
        """SELECT w.user_id, w.balance, COALESCE(SUM(t.amount), 0) AS ledger
           FROM wallets w LEFT JOIN wallet_transactions t ON t.user_id = w.user_id
           GROUP BY w.user_id, w.balance HAVING w.balance <> COALESCE(SUM(t.amount), 0)""",
    ),
    ("2.money", "wallet balance >= 0", "SELECT user_id, balance FROM wallets WHERE balance < 0"),
    (
        "2.money",
        "each PAID order has exactly one PAYMENT of paid_amount",
        """SELECT o.id, o.paid_amount,
                  (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.kind = 'PAYMENT') AS n,
                  (SELECT COALESCE(SUM(p.amount), 0) FROM payments p
                    WHERE p.order_id = o.id AND p.kind = 'PAYMENT') AS paid
           FROM orders o
           WHERE o.paid_at IS NOT NULL AND (
                 (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.kind = 'PAYMENT') <> 1
              OR (SELECT COALESCE(SUM(p.amount), 0) FROM payments p
                   WHERE p.order_id = o.id AND p.kind = 'PAYMENT') <> o.paid_amount)""",
    ),
    (
        "2.money",
        "each paid order's wallet PAYMENT equals -paid_amount",
        """SELECT o.id, o.paid_amount,
                  (SELECT COALESCE(SUM(t.amount), 0) FROM wallet_transactions t
                    WHERE t.order_id = o.id AND t.type = 'PAYMENT') AS ledger
           FROM orders o
           WHERE o.paid_at IS NOT NULL
             AND (SELECT COALESCE(SUM(t.amount), 0) FROM wallet_transactions t
                   WHERE t.order_id = o.id AND t.type = 'PAYMENT') <> -o.paid_amount""",
    ),
    (
        "2.money",
        "each refunded order has exactly one REFUND of paid_amount",
        """SELECT o.id, o.paid_amount,
                  (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.kind = 'REFUND') AS n
           FROM orders o
           WHERE o.status = 'CANCELLED' AND o.paid_at IS NOT NULL
             AND ((SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.kind = 'REFUND') <> 1
               OR (SELECT COALESCE(SUM(p.amount), 0) FROM payments p
                    WHERE p.order_id = o.id AND p.kind = 'REFUND') <> o.paid_amount)""",
    ),
    (
        "2.money",
        "each refunded order's wallet REFUND equals +paid_amount",
        """SELECT o.id, o.paid_amount,
                  (SELECT COALESCE(SUM(t.amount), 0) FROM wallet_transactions t
                    WHERE t.order_id = o.id AND t.type = 'REFUND') AS ledger
           FROM orders o
           WHERE o.status = 'CANCELLED' AND o.paid_at IS NOT NULL
             AND (SELECT COALESCE(SUM(t.amount), 0) FROM wallet_transactions t
                   WHERE t.order_id = o.id AND t.type = 'REFUND') <> o.paid_amount""",
    ),
    (
        "2.money",
        "no REFUND without a paid, cancelled order",
        """SELECT p.id, p.order_id FROM payments p JOIN orders o ON o.id = p.order_id
           WHERE p.kind = 'REFUND' AND NOT (o.status = 'CANCELLED' AND o.paid_at IS NOT NULL)""",
    ),
    (
        "3.coupons",
        "issued_count = number of user coupons <= total_quantity",
        """SELECT c.id, c.issued_count, c.total_quantity, COUNT(u.id) AS user_coupons
           FROM coupons c LEFT JOIN user_coupons u ON u.coupon_id = c.id
           GROUP BY c.id, c.issued_count, c.total_quantity
           HAVING c.issued_count <> COUNT(u.id) OR COUNT(u.id) > c.total_quantity""",
    ),
    (
        "3.coupons",
        "at most one coupon per user",
        """SELECT coupon_id, user_id, COUNT(*) AS n FROM user_coupons
           GROUP BY coupon_id, user_id HAVING COUNT(*) > 1""",
    ),
    (
        "3.coupons",
        "a USED coupon belongs to exactly one PAID (or PENDING, holding it) order",
        """SELECT u.id, u.order_id,
                  (SELECT COUNT(*) FROM orders o
                    WHERE o.user_coupon_id = u.id AND o.status IN ('PAID', 'PENDING')) AS orders
           FROM user_coupons u
           WHERE u.status = 'USED' AND (
                 (SELECT COUNT(*) FROM orders o
                   WHERE o.user_coupon_id = u.id AND o.status IN ('PAID', 'PENDING')) <> 1
              OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = u.order_id
                              AND o.user_coupon_id = u.id AND o.status IN ('PAID', 'PENDING')))""",
    ),
    (
        "3.coupons",
        "a PAID or PENDING order's coupon is USED by that order",
        """SELECT o.id, o.user_coupon_id FROM orders o
           LEFT JOIN user_coupons u ON u.id = o.user_coupon_id
           WHERE o.status IN ('PAID', 'PENDING') AND o.user_coupon_id IS NOT NULL
             AND (u.id IS NULL OR u.status <> 'USED' OR u.order_id <> o.id
                  OR u.user_id <> o.user_id)""",
    ),
    (
        "4.events",
        "every paid order has exactly one order.paid event",
        """SELECT o.id, o.status,
                  (SELECT COUNT(*) FROM outbox e
                    WHERE e.order_id = o.id AND e.type = 'order.paid') AS events
           FROM orders o
           WHERE (SELECT COUNT(*) FROM outbox e WHERE e.order_id = o.id AND e.type = 'order.paid')
              <> CASE WHEN o.paid_at IS NOT NULL THEN 1 ELSE 0 END""",
    ),
    (
        "4.events",
        "every order cancelled after payment has exactly one order.cancelled event",
        """SELECT o.id, o.status,
                  (SELECT COUNT(*) FROM outbox e
                    WHERE e.order_id = o.id AND e.type = 'order.cancelled') AS events
           FROM orders o
           WHERE (SELECT COUNT(*) FROM outbox e
                   WHERE e.order_id = o.id AND e.type = 'order.cancelled')
              <> CASE WHEN o.status = 'CANCELLED' AND o.paid_at IS NOT NULL THEN 1 ELSE 0 END""",
    ),
]


def _run_check(conn: Connection, name: str, what: str, sql: str, report: AuditReport) -> None:
    result = conn.execute(text(sql))
    columns = list(result.keys())
    rows = result.fetchmany(_LIMIT + 1)
    for row in rows[:_LIMIT]:
        shown = ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True))
        report.failures.append(f"{name}: {what}: {shown}")
    if len(rows) > _LIMIT:
        report.failures.append(f"{name}: {what}: ... more rows")


#: SQL twin of ``/products/popular``: PAID orders with ``paid_at`` in ``[start, end)``.
_TOP_K_SQL = """
    SELECT i.product_id, SUM(i.quantity) AS quantity, COUNT(DISTINCT o.id) AS orders
    FROM orders o JOIN order_items i ON i.order_id = o.id
    WHERE o.status = 'PAID' AND o.paid_at >= :start AND o.paid_at < :end
    GROUP BY i.product_id
"""
_RANKING_WINDOWS = (1, 3, 7)
_RANKING_METRICS = ("quantity", "orders")
_RANKING_LIMIT = 50

Ranked = list[tuple[int, int, int]]


def sql_top_k(conn: Connection, start: datetime, end: datetime, metric: str, k: int) -> Ranked:
    """``[(product_id, quantity, orders)]``: the top ``k`` by ``metric`` over PAID orders
    paid in ``[start, end)`` (UTC), ties to the lower product id, zero totals left out."""
    rows = conn.execute(
        text(_TOP_K_SQL), {"start": _db_time(conn, start), "end": _db_time(conn, end)}
    ).all()
    index = 1 if metric == "quantity" else 2
    ranked = sorted(
        ((int(r[0]), int(r[1]), int(r[2])) for r in rows if r[index] > 0),
        key=lambda r: (-r[index], r[0]),
    )
    return ranked[:k]


def _db_time(conn: Connection, value: datetime) -> datetime:
    # SQLite stores naive UTC (see flashsale.db.types.UTCDateTime).
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def _served(client: httpx.Client, url: str, metric: str, days: int) -> tuple[Ranked, Any]:
    response = client.get(
        f"{url.rstrip('/')}/api/v1/products/popular",
        params={"metric": metric, "days": days, "limit": _RANKING_LIMIT},
    )
    response.raise_for_status()
    body = response.json()
    served = [(i["product_id"], i["quantity"], i["orders"]) for i in body["items"]]
    return served, body


def _ranking_mismatches(conn: Connection, client: httpx.Client, url: str) -> list[str]:
    found = []
    for metric in _RANKING_METRICS:
        for days in _RANKING_WINDOWS:
            served, body = _served(client, url, metric, days)
            start = datetime.fromisoformat(body["window_start"])
            end = datetime.fromisoformat(body["window_end"])
            expected = sql_top_k(conn, start, end, metric, _RANKING_LIMIT)
            if served != expected:
                found.append(
                    f"5.ranking: {url} metric={metric} days={days}: "
                    f"served {served[:5]} != SQL {expected[:5]}"
                )
    return found


def _check_ranking(
    engine: Engine, service_urls: Sequence[str], report: AuditReport, settle_s: float
) -> None:
    report.checks.append("5.ranking: served top-k = SQL top-k over PAID orders in the window")
    deadline = time.monotonic() + settle_s
    with httpx.Client(timeout=10.0) as client:
        for url in service_urls:
            while True:
                try:
                    with engine.connect() as conn:
                        found = _ranking_mismatches(conn, client, url)
                except httpx.HTTPError as exc:
                    found = [f"5.ranking: {url}: not answering: {exc}"]
                if not found or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)  # a follower may still be catching up
            report.failures.extend(found)


def run_audit(
    database_url: str, service_urls: Sequence[str] = (), *, settle_s: float = 5.0
) -> AuditReport:
    """Check the invariants listed in this module's docstring; never writes.

    Invariants 1-4 run in one read transaction. Invariant 5 runs when
    ``service_urls`` (base URLs of running instances, e.g. ``http://127.0.0.1:8000``)
    are given, retrying for up to ``settle_s`` seconds.
    """
    report = AuditReport()
    engine = make_sync_engine(database_url, immediate=False)
    try:
        with engine.connect() as conn:
            for name, what, sql in _CHECKS:
                label = f"{name}: {what}"
                if label not in report.checks:
                    report.checks.append(label)
                _run_check(conn, name, what, sql, report)
            conn.rollback()
        if service_urls:
            _check_ranking(engine, service_urls, report, settle_s)
    finally:
        engine.dispose()
    return report
