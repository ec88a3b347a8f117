"""The shop `flashsale bench http` loads: users with money, a stocked catalog, two limited
items, a hot SKU and a 100-coupon promotion, inserted directly with SQL.

Both services get the same rows with the same ids (Flashsale's database and the
baseline's), so one file of access tokens serves both. The data is audit-clean from
the start: each wallet's balance is one CHARGE ledger row, each variant's stock one
RESTOCK movement, and no coupon is issued yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, text

from flashsale.auth.security import Principal, create_access_token
from flashsale.db.engine import is_sqlite, make_sync_engine
from flashsale.db.models import (
    coupons,
    inventory_movements,
    products,
    users,
    variants,
    wallet_transactions,
    wallets,
)
from flashsale.db.types import utcnow

#: Each user's wallet (KRW): far more than the fastest run can spend (an order costs at
#: most 3 × 5,900 KRW in paid orders and 9,900 KRW in the rushes).
WALLET_KRW = 50_000_000
#: Units of each catalog variant and of the hot SKU: never runs out within a run.
CATALOG_STOCK = 1_000_000
HOT_STOCK = 10_000_000
#: Units of each limited item (the rushes are about running out).
LIMITED_UNITS = 100
#: Coupons in the promotion of the coupon rush.
COUPONS = 100
_BATCH = 5_000


@dataclass(frozen=True)
class Layout:
    """Ids of the seeded shop (every id explicit, equal in both databases).

    Attributes:
        users: users ``1..users``, each with :data:`WALLET_KRW`.
        catalog: catalog products ``1..catalog``, one variant each with the same id,
            priced 1,000-5,900 KRW, :data:`CATALOG_STOCK` units.
        coupon_id: the coupon of the rush (:data:`COUPONS` to issue).
    """

    users: int
    catalog: int
    coupon_id: int = 1

    @property
    def first_variant(self) -> int:
        """The first catalog variant (paid orders pick among ``catalog`` from here)."""
        return 1

    @property
    def limited_variant(self) -> int:
        """Variant (and product) of the limited-item rush: :data:`LIMITED_UNITS` units."""
        return self.catalog + 1

    @property
    def hot_variant(self) -> int:
        """Variant (and product) of the hot SKU: :data:`HOT_STOCK` units."""
        return self.catalog + 2

    @property
    def page_variant(self) -> int:
        """Variant (and product) whose page is read while it is rushed (:data:`LIMITED_UNITS`)."""
        return self.catalog + 3

    def as_dict(self) -> dict[str, int]:
        """The layout as JSON-ready numbers."""
        return {
            **asdict(self),
            "limited_variant": self.limited_variant,
            "hot_variant": self.hot_variant,
            "page_variant": self.page_variant,
        }


def _insert(conn: Connection, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.execute(insert(table), batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)


def _products(layout: Layout) -> list[tuple[int, str, int, int]]:
    """``[(id, name, price KRW, stock)]``: the catalog, then the special items."""
    items = [
        (i, f"Catalog item {i}", 1_000 + (i % 50) * 100, CATALOG_STOCK)
        for i in range(1, layout.catalog + 1)
    ]
    items += [
        (layout.limited_variant, "Limited edition", 9_900, LIMITED_UNITS),
        (layout.hot_variant, "Hot SKU", 4_900, HOT_STOCK),
        (layout.page_variant, "Limited edition (page rush)", 9_900, LIMITED_UNITS),
    ]
    return items


def seed(database_url: str, layout: Layout, *, now: datetime | None = None) -> None:
    """Insert the shop of ``layout`` into the migrated, empty database at ``database_url``.

    Users' password hashes are not bcrypt hashes: they cannot log in, the bench mints
    their tokens (:func:`write_tokens`).

    Raises:
        sqlalchemy.exc.IntegrityError: the database already holds some of these rows.
    """
    now = utcnow() if now is None else now
    engine = make_sync_engine(database_url)
    items = _products(layout)
    try:
        with engine.begin() as conn:
            ids = range(1, layout.users + 1)
            _insert(
                conn,
                users,
                (
                    {
                        "id": i,
                        "email": f"bench{i:05d}@example.com",
                        "name": f"Bench user {i}",
                        "password_hash": "!",
                        "role": "customer",
                        "created_at": now,
                    }
                    for i in ids
                ),
            )
            _insert(
                conn,
                wallets,
                ({"user_id": i, "balance": WALLET_KRW, "updated_at": now} for i in ids),
            )
            _insert(
                conn,
                wallet_transactions,
                (
                    {
                        "user_id": i,
                        "type": "CHARGE",
                        "amount": WALLET_KRW,
                        "balance_after": WALLET_KRW,
                        "order_id": None,
                        "created_at": now,
                    }
                    for i in ids
                ),
            )
            _insert(
                conn,
                products,
                (
                    {
                        "id": pid,
                        "name": name,
                        "description": f"{name} (bench)",
                        "sale_starts_at": None,
                        "sale_ends_at": None,
                        "per_user_limit": None,
                        "created_at": now,
                    }
                    for pid, name, _, _ in items
                ),
            )
            _insert(
                conn,
                variants,
                (
                    {
                        "id": pid,
                        "product_id": pid,
                        "sku": f"BENCH-{pid:06d}",
                        "name": "Standard",
                        "price": price,
                        "stock": stock,
                    }
                    for pid, _, price, stock in items
                ),
            )
            _insert(
                conn,
                inventory_movements,
                (
                    {
                        "variant_id": pid,
                        "kind": "RESTOCK",
                        "quantity": stock,
                        "order_id": None,
                        "created_at": now,
                    }
                    for pid, _, _, stock in items
                ),
            )
            _insert(
                conn,
                coupons,
                [
                    {
                        "id": layout.coupon_id,
                        "name": "Bench rush: 5,000 KRW off",
                        "discount_type": "FIXED",
                        "discount_value": 5_000,
                        "max_discount_amount": None,
                        "min_order_amount": 10_000,
                        "total_quantity": COUPONS,
                        "issued_count": 0,
                        "issue_starts_at": None,
                        "issue_ends_at": None,
                        "valid_days": 7,
                        "created_at": now,
                    }
                ],
            )
            if not is_sqlite(database_url):
                # Explicit ids do not move PostgreSQL's sequences: the server's own
                # inserts (the admin user, later rows) must start after them.
                _advance_sequences(conn, ("users", "products", "variants", "coupons"))
    finally:
        engine.dispose()


def _advance_sequences(conn: Connection, tables: Sequence[str]) -> None:
    for table in tables:
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT MAX(id) FROM {table}))"
            )
        )


def write_tokens(path: Path, users: int, secret: str, ttl_s: int) -> None:
    """Write an access token (HS256 with ``secret``, valid ``ttl_s`` seconds) for each
    user ``1..users`` to ``path``, one a line, in user order."""
    with path.open("w", encoding="ascii") as out:
        for user_id in range(1, users + 1):
            token = create_access_token(Principal(user_id=user_id, role="customer"), secret, ttl_s)
            out.write(token + "\n")
