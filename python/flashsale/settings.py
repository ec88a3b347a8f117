"""Runtime settings, read from ``FLASHSALE_*`` environment variables (pydantic-settings).

``create_app(settings)`` takes a :class:`Settings` object, so tests and notebooks
build one directly and need no environment variables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Placeholder secret accepted only outside production (DESIGN §7: ``JWT_SECRET``).
DEVELOPMENT_JWT_SECRET = "development-only-secret-change-me-0123456789"


class Settings(BaseSettings):
    """Service configuration.

    Times are in seconds, money in integer KRW. ``database_url`` is given in its
    plain form (``sqlite:///path.db`` or ``postgresql://...``); the async and sync
    drivers are chosen by :mod:`flashsale.db.engine`.

    Raises:
        pydantic.ValidationError: in ``production`` with the placeholder JWT secret
            (rule from the full-stack FastAPI template: refuse placeholder secrets).
    """

    model_config = SettingsConfigDict(env_prefix="FLASHSALE_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///./flashsale.db"
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)
    data_platform_url: str | None = None
    #: How often an idle outbox relay looks for events to deliver.
    outbox_poll_s: float = Field(default=0.5, gt=0, le=60)
    #: Events one relay claims (and delivers concurrently) per round.
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    #: A relay's claim on its batch; after it, another relay may take the events over.
    outbox_lease_s: float = Field(default=30.0, gt=0, le=3600)
    #: Retry backoff after a failed delivery: random in [0, min(max, base × 2**attempts)].
    outbox_backoff_base_s: float = Field(default=0.5, gt=0, le=3600)
    #: Cap of the retry backoff: a failing event is retried at least this often, forever.
    outbox_backoff_max_s: float = Field(default=60.0, gt=0, le=86400)
    #: One delivery attempt (POST to ``data_platform_url``) may take this long.
    data_platform_timeout_s: float = Field(default=5.0, gt=0, le=300)
    redis_url: str | None = None
    order_payment_timeout_s: int = Field(default=600, ge=1)
    #: How often each instance looks for overdue PENDING orders to expire.
    order_expiry_sweep_s: float = Field(default=1.0, gt=0, le=60)
    #: Idempotency keys are kept at least this long (DESIGN §5: ≥ 24 h), then purged.
    idempotency_ttl_s: int = Field(default=86400, ge=1)
    #: An IN_PROGRESS key older than this belongs to a request that died; it may be taken over.
    idempotency_lock_s: float = Field(default=60.0, gt=0)
    ranking_bucket_s: int = Field(default=60, ge=1, le=3600)
    #: The in-memory window keeps 7 days, the longest ``days`` of ``/products/popular``.
    ranking_window_s: int = Field(default=7 * 86400, ge=86400)
    #: How often each process picks up sales committed by other processes.
    ranking_poll_s: float = Field(default=0.5, gt=0, le=2.0)
    #: How long the ranking follower waits for an outbox id below the newest one seen
    #: (a transaction still running on PostgreSQL); longer than any order transaction.
    ranking_gap_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: Catalog reads (``/products``, ``/products/{id}``, ``/products/popular``) are served
    #: from a per-process cache for at most this long; 0 reads the database every time.
    read_cache_s: float = Field(default=1.0, ge=0, le=60)
    #: DESIGN §2 gate freshness: a local "sold out" older than this is re-checked.
    gate_freshness_s: float = Field(default=1.0, ge=0)
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    #: bcrypt cost (log2 rounds); lower it for tests and demos with thousands of users.
    password_hash_cost: int = Field(default=12, ge=4, le=16)
    #: FastAPI's native OpenTelemetry (traces, metrics, logs to the global providers).
    opentelemetry: bool = False
    db_pool_size: int = Field(default=8, ge=1, le=100)
    #: Group commit: the writes of a process (every one goes through its writer)
    #: committed together, at most this many per transaction.
    writer_max_batch: int = Field(default=128, ge=1, le=10_000)
    #: Group commit on PostgreSQL: writer threads (connections) per process, each
    #: committing its own batches (SQLite always has one: one writer at a time). Two
    #: measured best on 2 cores: as many orders/s as 4 or 8, with less CPU per order
    #: and a lower p99 (fewer threads waiting for the GIL and for each other's locks).
    writer_threads: int = Field(default=2, ge=1, le=64)
    #: Group commit: a batch of one waits this long (ms) once for others to join it.
    writer_window_ms: float = Field(default=1.0, ge=0, le=100)
    db_busy_timeout_ms: int = Field(default=30_000, ge=0)
    #: Log lines as plain text or JSON objects (each with its request id).
    log_format: Literal["text", "json"] = "text"
    log_level: str = "warning"

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if (
            self.environment == "production"
            and self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
        ):
            raise ValueError("FLASHSALE_JWT_SECRET must be set in production")
        if self.ranking_window_s % self.ranking_bucket_s:
            raise ValueError("FLASHSALE_RANKING_WINDOW_S must be a multiple of RANKING_BUCKET_S")
        return self
