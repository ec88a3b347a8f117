"""All ORM models (docs/data-model.md). Money is integer KRW; times are UTC.

Ledgers are append-only: ``wallet_transactions`` (CHARGE, PAYMENT, REFUND),
``inventory_movements`` (RESTOCK, RESERVE, RELEASE) and ``payments``
(PAYMENT, REFUND). Every balance or stock change writes its ledger row in the
same transaction, which is what ``flashsale audit`` checks (docs/invariants.md).

``outbox`` holds order events written in the same transaction as the change
(transactional outbox, docs/decisions/0002-transactional-outbox.md); ``idempotency_keys``
stores the first response of a POST sent with ``Idempotency-Key`` (docs/api.md);
``refresh_tokens`` holds the hashes of the refresh tokens, one family per login
(docs/api.md, "Authentication"); ``password_reset_codes`` the keyed hash of the
password-reset code last mailed to a user (docs/api.md, "Password reset").
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flashsale.db.types import BigId, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = BigInteger


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16), default="customer")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("role IN ('customer', 'admin')", name="role"),)


class Wallet(Base):
    __tablename__ = "wallets"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True)
    balance: Mapped[int] = mapped_column(Money, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("balance >= 0", name="balance_non_negative"),)


class WalletTransaction(Base):
    __tablename__ = "wallet_transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Money)
    balance_after: Mapped[int] = mapped_column(Money)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("type IN ('CHARGE', 'PAYMENT', 'REFUND')", name="type"),
        Index("ix_wallet_transactions_user_id_id", "user_id", "id"),
    )


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    sale_starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sale_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    per_user_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Variant(Base):
    __tablename__ = "variants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[int] = mapped_column(Money)
    stock: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_non_negative"),
        CheckConstraint("price >= 0", name="price_non_negative"),
    )


class InventoryMovement(Base):
    __tablename__ = "inventory_movements"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    variant_id: Mapped[int] = mapped_column(BigId, ForeignKey("variants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("kind IN ('RESTOCK', 'RESERVE', 'RELEASE')", name="kind"),)


class Coupon(Base):
    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    discount_type: Mapped[str] = mapped_column(String(16))
    discount_value: Mapped[int] = mapped_column(Money)
    max_discount_amount: Mapped[int | None] = mapped_column(Money, nullable=True)
    min_order_amount: Mapped[int] = mapped_column(Money, default=0)
    total_quantity: Mapped[int] = mapped_column(Integer)
    issued_count: Mapped[int] = mapped_column(Integer, default=0)
    issue_starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    issue_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("discount_type IN ('FIXED', 'PERCENT')", name="discount_type"),
        CheckConstraint("issued_count >= 0 AND issued_count <= total_quantity", name="issued"),
    )


class UserCoupon(Base):
    __tablename__ = "user_coupons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupons.id"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="ISSUED")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), nullable=True)

    __table_args__ = (
        # One user coupon per (coupon, user); the database's last word (docs/data-model.md).
        UniqueConstraint("coupon_id", "user_id", name="uq_user_coupons_coupon_user"),
        CheckConstraint("status IN ('ISSUED', 'USED', 'EXPIRED')", name="status"),
    )


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16))
    total_amount: Mapped[int] = mapped_column(Money)
    discount_amount: Mapped[int] = mapped_column(Money, default=0)
    paid_amount: Mapped[int] = mapped_column(Money)
    # No foreign key: user_coupons.order_id already points back, and a cycle of
    # foreign keys cannot be created on SQLite.
    user_coupon_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'PAID', 'CANCELLED', 'EXPIRED')", name="status"),
        CheckConstraint(
            "discount_amount >= 0 AND discount_amount <= total_amount "
            "AND paid_amount = total_amount - discount_amount",
            name="amounts",
        ),
        Index("ix_orders_user_id_id", "user_id", "id"),
        Index("ix_orders_status_paid_at", "status", "paid_at"),
        # The expiry sweeper's scan: PENDING orders by deadline.
        Index("ix_orders_status_expires_at", "status", "expires_at"),
        # Ids are never reused: followers of the orders table never mistake one order for another.
        {"sqlite_autoincrement": True},
    )


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id"), index=True)
    variant_id: Mapped[int] = mapped_column(BigId, ForeignKey("variants.id"))
    product_name: Mapped[str] = mapped_column(String(200))
    variant_name: Mapped[str] = mapped_column(String(200))
    unit_price: Mapped[int] = mapped_column(Money)
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Money)

    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("kind IN ('PAYMENT', 'REFUND')", name="kind"),)


class CartItem(Base):
    __tablename__ = "cart_items"

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), primary_key=True)
    variant_id: Mapped[int] = mapped_column(BigId, ForeignKey("variants.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("quantity >= 1 AND quantity <= 100", name="quantity"),)


class OutboxEvent(Base):
    """An event waiting for (or done with) delivery to the data platform.

    ``available_at`` is the earliest next attempt (exponential backoff);
    ``claimed_by``/``claimed_until`` is the lease of the relay delivering it, so
    several relays never send one event at the same time; ``delivered_at`` is set
    once the data platform acknowledged it. Rows are kept: the audit checks that
    every paid order has its event (docs/invariants.md#events).
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id"), index=True)
    #: The event as JSON text, sent verbatim.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_outbox_delivered_at_available_at", "delivered_at", "available_at"),
        # Ids are never reused: the ranking follower keeps a cursor on them.
        {"sqlite_autoincrement": True},
    )


class IdempotencyKey(Base):
    """The first outcome of a POST sent with ``Idempotency-Key`` (Stripe's semantics).

    ``fingerprint`` is the SHA-256 of method, path and body; ``status`` is
    IN_PROGRESS while the first request runs (``locked_at``), DONE once its
    response is stored. A success is stored in the same transaction as its effect.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
        CheckConstraint("status IN ('IN_PROGRESS', 'DONE')", name="status"),
    )


class RefreshToken(Base):
    """A refresh token, stored only as the SHA-256 of its text (docs/api.md, "Authentication").

    A login starts a family (``family_id``); each refresh marks the presented token
    used (``used_at``, a conditional write: one refresh wins) and adds the next token
    of the family. ``revoked_at`` is set on every token of a family at logout, at a
    password change, or when a used token is presented again (theft detection).
    Rows past ``expires_at`` are purged by the maintenance loop.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    #: Hex SHA-256 of the token's text; the text itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PasswordResetCode(Base):
    """The password-reset code last sent to a user (at most one per user: a new request
    replaces it; docs/api.md, "Password reset")."""

    __tablename__ = "password_reset_codes"
    __table_args__ = (CheckConstraint("failed_attempts >= 0", name="failed_attempts_non_negative"),)

    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    #: Hex HMAC-SHA-256 of the user id and the code; the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Wrong codes tried against this one; at 5 it is void.
    failed_attempts: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# Core tables for the hot paths (STYLE: Core statements, not ORM loading).
users = _table(User)
wallets = _table(Wallet)
wallet_transactions = _table(WalletTransaction)
products = _table(Product)
variants = _table(Variant)
inventory_movements = _table(InventoryMovement)
coupons = _table(Coupon)
user_coupons = _table(UserCoupon)
orders = _table(Order)
order_items = _table(OrderItem)
payments = _table(Payment)
cart_items = _table(CartItem)
outbox = _table(OutboxEvent)
idempotency_keys = _table(IdempotencyKey)
refresh_tokens = _table(RefreshToken)
password_reset_codes = _table(PasswordResetCode)
