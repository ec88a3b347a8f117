"""``flashsale audit``: check the invariants of DESIGN §6 against the database.

1. Stock: every variant's stock equals the sum of its inventory movements and is
   ≥ 0; units in PAID or PENDING orders never exceed the units ever stocked.
2. Money: every wallet's balance equals the sum of its ledger and is ≥ 0; each
   PAID order has one PAYMENT of ``paid_amount`` (payment row and ledger row);
   each refunded order one REFUND.
3. Coupons: issued count equals the number of user coupons and is ≤ the total
   quantity; at most one per user; a USED coupon belongs to exactly one PAID order.

Each failure names the rows that break the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text

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
        "a USED coupon belongs to exactly one PAID order",
        """SELECT u.id, u.order_id,
                  (SELECT COUNT(*) FROM orders o
                    WHERE o.user_coupon_id = u.id AND o.status = 'PAID') AS paid_orders
           FROM user_coupons u
           WHERE u.status = 'USED' AND (
                 (SELECT COUNT(*) FROM orders o
                   WHERE o.user_coupon_id = u.id AND o.status = 'PAID') <> 1
              OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = u.order_id
                              AND o.user_coupon_id = u.id AND o.status = 'PAID'))""",
    ),
    (
        "3.coupons",
        "a PAID order's coupon is USED by that order",
        """SELECT o.id, o.user_coupon_id FROM orders o
           LEFT JOIN user_coupons u ON u.id = o.user_coupon_id
           WHERE o.status = 'PAID' AND o.user_coupon_id IS NOT NULL
             AND (u.id IS NULL OR u.status <> 'USED' OR u.order_id <> o.id
                  OR u.user_id <> o.user_id)""",
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


def run_audit(database_url: str) -> AuditReport:
    """Check invariants 1-3 of DESIGN §6 in one read transaction; never writes."""
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
    finally:
        engine.dispose()
    return report
