"""Alembic environment: runs migrations with the sync driver of the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from flashsale.db.engine import is_sqlite, make_sync_engine
from flashsale.db.models import Base

#: ``pg_advisory_xact_lock`` key serialising migrations (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x666C617368  # "flash"

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=is_sqlite(url),
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Instances starting together migrate one after another: the
                    # lock is held until this transaction ends, and the next one
                    # then finds the schema at head and has nothing to do.
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations()
