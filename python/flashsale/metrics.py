"""Prometheus metrics of the service, served at ``GET /metrics`` (docs/operations.md).

Every metric object lives here so that domain services can count without
importing the web layer; :mod:`flashsale.api.observability` serves them.

Multiprocess: ``flashsale serve --workers N`` runs N worker processes and a
scrape reaches only one of them. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(``flashsale serve`` sets it to a fresh temporary folder when ``--workers > 1``),
prometheus_client keeps every value in a per-process file there and
:func:`render_latest` merges the files of all workers. The variable must be set
before ``prometheus_client`` is first imported in a process (the library picks
its value class at import), which is why the CLI sets it before uvicorn spawns
the workers. Any Gauge defined for this service must declare a
``multiprocess_mode`` (e.g. ``"livemax"``), which says how the per-process values
are combined.

Label values are bounded sets (route templates, status codes, outcome codes),
never ids or raw paths: every label combination is a time series.
"""

from __future__ import annotations

import atexit
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "COUPON_ISSUES",
    "DB_RETRIES",
    "DB_TRANSACTIONS",
    "GATE_REJECTIONS",
    "LATENCY_BUCKETS",
    "MAIL_BACKLOG",
    "MAIL_DELIVERIES",
    "MAIL_OLDEST_AGE",
    "MULTIPROC_DIR_ENV",
    "ORDERS",
    "OUTBOX_BACKLOG",
    "OUTBOX_DELIVERIES",
    "OUTBOX_OLDEST_AGE",
    "REQUEST_LATENCY",
    "UNMATCHED_ROUTE",
    "WRITER_BATCH_SIZE",
    "multiprocess_dir",
    "observe_coupon_issue",
    "observe_order",
    "render_latest",
]

#: Environment variable naming the folder of prometheus_client's multiprocess mode.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Route label of requests that matched no route (404s, slash redirects).
UNMATCHED_ROUTE = "<unmatched>"

#: Seconds: 1 ms to 10 s, about ×2.5 per step (a gate rejection answers in ~1 ms,
#: a paid order in tens of ms, a request queued behind SQLite's writer in seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_LATENCY = Histogram(
    "flashsale_http_request_duration_seconds",
    "HTTP request latency in seconds, from the first byte received to the last byte sent.",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
)
"""Labels: ``method`` (``GET``; ``OTHER`` for non-standard methods), ``route`` (the template, e.g.
``/api/v1/orders/{order_id}``, or :data:`UNMATCHED_ROUTE`), ``status`` (``"201"``)."""

ORDERS = Counter(
    "flashsale_orders_total",
    "Order placements by outcome: paid, pending, or the lowercase error code.",
    ("outcome",),
)
"""Label ``outcome``: ``paid``, ``pending`` or an error code in lowercase (``out_of_stock``)."""

COUPON_ISSUES = Counter(
    "flashsale_coupon_issues_total",
    "Coupon issue requests by outcome: issued, or the error code without COUPON_ (lowercase).",
    ("outcome",),
)
"""Label ``outcome``: ``issued``, ``sold_out``, ``already_issued``, ``not_issuable``,
``not_found``."""

GATE_REJECTIONS = Counter(
    "flashsale_gate_rejections_total",
    "Requests turned away by a per-process admission gate before any database write.",
    ("gate", "reason"),
)
"""Labels: ``gate`` (``stock``, ``coupon``), ``reason`` (``out_of_stock``, ``contended``,
``sold_out``, ``already_issued``)."""

DB_TRANSACTIONS = Counter(
    "flashsale_db_transactions_total",
    "Database transactions ended by this service, by outcome (commit or rollback).",
    ("outcome",),
)
"""Label ``outcome``: ``commit`` (a write transaction) or ``rollback`` (a read-only
transaction ending, or a refused write). Divided by paid orders it gives the database
transactions per successful order."""

DB_RETRIES = Counter(
    "flashsale_db_retries_total",
    "Transactions re-run after PostgreSQL aborted them (deadlock or serialization failure).",
    ("sqlstate",),
)
"""Label ``sqlstate``: ``40P01`` (deadlock detected) or ``40001`` (serialization failure)."""

WRITER_BATCH_SIZE = Histogram(
    "flashsale_writer_batch_size",
    "Operations committed together by the group-commit writer, per transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
"""How many admitted writes (orders, coupon issues) share one commit."""

OUTBOX_BACKLOG = Gauge(
    "flashsale_outbox_backlog_events",
    "Outbox events not yet delivered to the data platform.",
    multiprocess_mode="livemax",
)
"""Set by the outbox relay (:mod:`flashsale.outbox.relay`) every round, from the database:
the same value in every process, hence ``livemax``. Order events only: mail jobs have
:data:`MAIL_BACKLOG`."""

OUTBOX_OLDEST_AGE = Gauge(
    "flashsale_outbox_oldest_age_seconds",
    "Age of the oldest undelivered outbox event in seconds (0 if none).",
    multiprocess_mode="livemax",
)
"""Seconds; set by the outbox relay with :data:`OUTBOX_BACKLOG`."""

OUTBOX_DELIVERIES = Counter(
    "flashsale_outbox_deliveries_total",
    "Delivery attempts of outbox events to the data platform, by outcome.",
    ["outcome"],
)
"""Label ``outcome``: ``delivered`` (a 2xx answer) or ``failed`` (any other status, a
timeout or a connection error)."""

MAIL_BACKLOG = Gauge(
    "flashsale_mail_backlog_jobs",
    "Mail jobs in the outbox not yet accepted by the SMTP server.",
    multiprocess_mode="livemax",
)
"""Set by the outbox relay with :data:`OUTBOX_BACKLOG`; it grows while
``FLASHSALE_SMTP_URL`` is unset or the SMTP server refuses (docs/operations.md#mail)."""

MAIL_OLDEST_AGE = Gauge(
    "flashsale_mail_oldest_age_seconds",
    "Age of the oldest unsent mail job in seconds (0 if none).",
    multiprocess_mode="livemax",
)
"""Seconds; set by the outbox relay with :data:`MAIL_BACKLOG`."""

MAIL_DELIVERIES = Counter(
    "flashsale_mail_deliveries_total",
    "Delivery attempts of mail jobs to the SMTP server, by outcome.",
    ["outcome"],
)
"""Label ``outcome``: ``sent`` (the server accepted the message) or ``failed`` (a refusal,
a timeout or a connection error; the job is retried)."""

# Series that exist from start-up with 0, so that rate() and absence alerts work
# before the first event of each kind.
for _outcome in ("paid", "pending", "out_of_stock", "insufficient_balance"):
    ORDERS.labels(outcome=_outcome)
for _outcome in ("issued", "sold_out", "already_issued", "not_issuable", "not_found"):
    COUPON_ISSUES.labels(outcome=_outcome)
for _gate, _reason in (
    ("stock", "out_of_stock"),
    ("coupon", "sold_out"),
    ("coupon", "already_issued"),
):
    GATE_REJECTIONS.labels(gate=_gate, reason=_reason)
for _outcome in ("commit", "rollback"):
    DB_TRANSACTIONS.labels(outcome=_outcome)
for _outcome in ("delivered", "failed"):
    OUTBOX_DELIVERIES.labels(outcome=_outcome)
for _outcome in ("sent", "failed"):
    MAIL_DELIVERIES.labels(outcome=_outcome)


def observe_order(outcome: str) -> None:
    """Count one order placement.

    Args:
        outcome: ``"paid"``, ``"pending"`` or the error's ``code`` (``"OUT_OF_STOCK"``);
            stored in lowercase. Pass a status or a code, never an id (each distinct
            value is a time series).

    Call it once the outcome is final, e.g. from an ``after_commit`` hook for a
    placed order and where the request's error is raised for a refused one.
    """
    ORDERS.labels(outcome=outcome.lower()).inc()


def observe_coupon_issue(outcome: str) -> None:
    """Count one coupon issue request.

    Args:
        outcome: ``"issued"`` or the error's ``code`` (``"COUPON_SOLD_OUT"``); stored
            in lowercase without the ``COUPON_`` prefix (``"sold_out"``).
    """
    label = outcome.lower()
    COUPON_ISSUES.labels(outcome=label.removeprefix("coupon_")).inc()


def multiprocess_dir() -> str | None:
    """The multiprocess folder when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def render_latest() -> tuple[bytes, str]:
    """The current metrics in Prometheus text format: ``(body, content_type)``.

    In multiprocess mode the values of all processes (live and dead) are merged
    from the files in :func:`multiprocess_dir`; otherwise the default registry of
    this process is rendered (it also holds any metric registered elsewhere, e.g.
    prometheus_client's own process and platform collectors).

    Reads files in multiprocess mode: call it off the event loop.

    Raises:
        ValueError: ``PROMETHEUS_MULTIPROC_DIR`` is set but not a folder.
    """
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    # A fresh registry per scrape, as prometheus_client documents: the collector
    # reads the files at collect time and must not be registered twice.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _mark_this_process_dead() -> None:
    # Live gauges (livesum, livemax, ...) must stop counting an exited worker.
    # Counters and histograms keep its files: totals never go backwards.
    path = multiprocess_dir()
    if path is not None and os.path.isdir(path):
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


# Runs at a normal interpreter exit, which is how uvicorn's spawned workers end on
# SIGTERM. A worker killed with SIGKILL (uvicorn kills a hung one) leaves its live
# gauge files behind until the folder is removed when `flashsale serve` exits.
atexit.register(_mark_this_process_dead)
