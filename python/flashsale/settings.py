"""Runtime settings, read from ``FLASHSALE_*`` environment variables (pydantic-settings).

``create_app(settings)`` takes a :class:`Settings` object, so tests and notebooks
build one directly and need no environment variables. Every field's description is
rendered into docs/reference/settings.md (``python -m flashsale.reference --write``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flashsale.mail.config import parse_mail_from, parse_smtp_url

#: Placeholder secret accepted only outside production (docs/reference/settings.md).
DEVELOPMENT_JWT_SECRET = "development-only-secret-change-me-0123456789"


class Settings(BaseSettings):
    """Service configuration.

    Times are in seconds, money in integer KRW. ``database_url`` is given in its
    plain form (``sqlite:///path.db`` or ``postgresql://...``); the async and sync
    drivers are chosen by :mod:`flashsale.db.engine`.

    Raises:
        pydantic.ValidationError: in ``production`` with the placeholder JWT secret
            (rule from the full-stack FastAPI template: refuse placeholder secrets);
            an ``smtp_url`` or ``mail_from`` that does not parse
            (:mod:`flashsale.mail.config`).
    """

    model_config = SettingsConfigDict(env_prefix="FLASHSALE_", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        default="development",
        description="Where the service runs. `production` refuses to start with the "
        "development placeholder `jwt_secret`; nothing else depends on it.",
    )
    database_url: str = Field(
        default="sqlite:///./flashsale.db",
        description="The database, in its plain form: `sqlite:///path.db` or "
        "`postgresql://user:password@host:port/name`; the async and sync drivers are "
        "chosen from it. The default is a SQLite file in the working directory.",
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_JWT_SECRET),
        description="HS256 key that signs and verifies the access tokens. The default is "
        "a public development placeholder, refused when `environment` is `production`; "
        "every instance of one deployment needs the same secret.",
    )
    jwt_ttl_s: int = Field(
        default=900,
        ge=60,
        le=7 * 86400,
        description="Lifetime of an access token from `POST /api/v1/auth/token` or "
        "`/auth/refresh`, seconds. Access tokens cannot be revoked: a logout or a password "
        "change leaves those already issued valid until they expire.",
    )
    refresh_ttl_s: int = Field(
        default=14 * 86400,
        ge=60,
        le=365 * 86400,
        description="Lifetime of a refresh token, seconds, counted from its issue: each "
        "refresh returns a new one valid this long, so a session unused for this long "
        "must log in again.",
    )
    password_reset_ttl_s: int = Field(
        default=900,
        ge=60,
        le=86400,
        description="How long a password-reset code sent by `POST /api/v1/auth/password-reset` "
        "works, seconds (15 minutes by default). A new request replaces the code; a used "
        "code, or one after 5 wrong tries, no longer works.",
    )
    data_platform_url: str | None = Field(
        default=None,
        description="URL the outbox relay POSTs each event to (the data platform's "
        "`/events` endpoint). Unset: events stay in the outbox and only the backlog is "
        "measured.",
    )
    outbox_poll_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often an idle outbox relay looks for events to deliver, seconds.",
    )
    outbox_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Events one relay claims (and delivers concurrently) per round.",
    )
    outbox_lease_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A relay's claim on its batch, seconds; after it, another relay (of "
        "another process) may take the events over.",
    )
    outbox_backoff_base_s: float = Field(
        default=0.5,
        gt=0,
        le=3600,
        description="Retry backoff after a failed delivery, seconds: random in "
        "[0, min(`outbox_backoff_max_s`, base × 2^attempts)].",
    )
    outbox_backoff_max_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Cap of the retry backoff, seconds: a failing event is retried at "
        "least this often, forever.",
    )
    data_platform_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long one delivery attempt (POST to `data_platform_url`) may "
        "take, seconds; past it the attempt counts as failed.",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="SMTP server the outbox relay sends mail jobs to: "
        "`smtp://HOST[:PORT]` (port 25), `?starttls=1` to upgrade with STARTTLS, "
        "`USER:PASSWORD@` to log in, `smtps://` for TLS from the start (port 465). "
        "Unset: mail jobs stay in the outbox (a warning says so) until it is set.",
    )
    mail_from: str = Field(
        default="Flashsale <no-reply@flashsale.example>",
        description="Sender of the mail: the `From` header (`Name <address>` or an "
        "address) and its address as the envelope sender.",
    )
    smtp_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long one mail delivery attempt (connect, send, quit) may take, "
        "seconds; past it the attempt counts as failed and is retried.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Accepted for compatibility but not used: the service keeps no state "
        "in Redis (the database is the only shared state).",
    )
    order_payment_timeout_s: int = Field(
        default=600,
        ge=1,
        description="How long a PENDING order (`pay` false) holds its stock and coupon "
        "before it expires, seconds (its `expires_at`).",
    )
    order_expiry_sweep_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each instance looks for overdue PENDING orders to expire, seconds.",
    )
    idempotency_ttl_s: int = Field(
        default=86400,
        ge=1,
        description="Idempotency keys are kept at least this long, seconds (a retry "
        "within it replays the first answer), then purged.",
    )
    idempotency_lock_s: float = Field(
        default=60.0,
        gt=0,
        description="An IN_PROGRESS idempotency key older than this, seconds, belongs to "
        "a request that died; a retry may take it over.",
    )
    ranking_bucket_s: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="Width of one bucket of the in-memory ranking window, seconds; "
        "`ranking_window_s` must be a multiple of it.",
    )
    ranking_window_s: int = Field(
        default=7 * 86400,
        ge=86400,
        description="Span of the in-memory ranking window, seconds; the default 7 days "
        "is the longest `days` of `/products/popular`.",
    )
    ranking_poll_s: float = Field(
        default=0.5,
        gt=0,
        le=2.0,
        description="How often each process picks up sales committed by other processes "
        "(the ranking follower reads the outbox), seconds.",
    )
    ranking_gap_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How long the ranking follower waits for an outbox id below the "
        "newest one seen (a transaction still running on PostgreSQL), seconds; longer "
        "than any order transaction.",
    )
    read_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Catalog reads (`/products`, `/products/{id}`, `/products/popular`) "
        "are served from a per-process cache for at most this long, seconds; 0 reads "
        "the database every time.",
    )
    gate_freshness_s: float = Field(
        default=1.0,
        ge=0,
        description='Freshness of the C++ gates, seconds: a local "sold out" older '
        "than this is re-checked against the database.",
    )
    admin_email: str | None = Field(
        default=None,
        description="With `admin_password`: `flashsale serve` creates this admin user "
        "at start if it does not exist. Unset: no admin is created.",
    )
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password of the admin user created from `admin_email`.",
    )
    password_hash_cost: int = Field(
        default=12,
        ge=4,
        le=16,
        description="bcrypt cost (log2 of the rounds) of new password hashes; lower it "
        "for tests and demos with thousands of users.",
    )
    opentelemetry: bool = Field(
        default=False,
        description="Turn on FastAPI's native OpenTelemetry (traces, metrics and logs "
        "to the global providers). Off: only the Prometheus metrics are exported.",
    )
    db_pool_size: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Read connections per process (the pool may open as many again "
        "as overflow); count it per worker and instance in the connection budget.",
    )
    writer_max_batch: int = Field(
        default=128,
        ge=1,
        le=10_000,
        description="Group commit: the writes of a process (every one goes through its "
        "writer) are committed together, at most this many per transaction.",
    )
    writer_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Group commit on PostgreSQL: writer threads (connections) per "
        "process, each committing its own batches; SQLite always has one. Two measured "
        "best on 2 cores: as many orders/s as 4 or 8, less CPU per order, lower p99.",
    )
    writer_window_ms: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Group commit: a batch of one waits this long, milliseconds, once "
        "for others to join it.",
    )
    db_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="SQLite busy timeout, milliseconds: how long a statement waits for "
        "the database lock before the request is answered 503 `SERVICE_BUSY`.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as plain text or as JSON objects (each with its request id).",
    )
    log_level: str = Field(
        default="warning",
        description="Level of the log handler on the root logger: a Python logging level "
        "name, any case (`debug`, `info`, `warning`, `error`, `critical`).",
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if (
            self.environment == "production"
            and self.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
        ):
            raise ValueError("FLASHSALE_JWT_SECRET must be set in production")
        if self.smtp_url is not None:
            parse_smtp_url(self.smtp_url.get_secret_value())  # ValueError names the part
        parse_mail_from(self.mail_from)
        if self.ranking_window_s % self.ranking_bucket_s:
            raise ValueError("FLASHSALE_RANKING_WINDOW_S must be a multiple of RANKING_BUCKET_S")
        return self
