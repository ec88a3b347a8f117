"""password reset codes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00.000000

The ``password_reset_codes`` table of the password reset by e-mail
(docs/data-model.md): at most one row per user, the keyed hash of the code last
mailed, its expiry, the wrong tries counted against it and when it was used.
Nothing else changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flashsale.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "password_reset_codes",
        sa.Column(
            "user_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", flashsale.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", flashsale.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", flashsale.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "failed_attempts >= 0",
            name=op.f("ck_password_reset_codes_failed_attempts_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_reset_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_password_reset_codes")),
    )


def downgrade() -> None:
    op.drop_table("password_reset_codes")
