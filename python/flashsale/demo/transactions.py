"""Database transactions per successful order: how much database work a rush costs.

Every instance counts the transactions its engines end in the Prometheus counter
``flashsale_db_transactions_total{outcome="commit"|"rollback"}`` (see
:data:`flashsale.metrics.DB_TRANSACTIONS`; merged over the worker processes of an
instance). :class:`TransactionProbe` scrapes ``GET /metrics`` of every instance just
before and just after a rush and divides the growth -- commits + rollbacks, and
commits alone -- by what the rush achieved (coupons issued, orders placed). A
rollback is mostly a read-only transaction ending (every read request is one), or a
refused write.

The same two scrapes give the rush's server-side latency: the growth of every
instance's request histogram (:mod:`flashsale.demo.server_latency`).

The windows also hold the instances' background work (the outbox relay's polls and
claims, the expiry sweeper, the backlog gauge): :meth:`TransactionProbe.idle` measures
its rate on a quiet shop so the reader can tell it apart.

On PostgreSQL the probe also reads ``pg_stat_database`` (``xact_commit +
xact_rollback`` of the demo's scratch database) as a cross-check from the server's
side. Those counters lag: a backend flushes its statistics at most once a second
(PostgreSQL 15; ``pg_stat_force_next_flush()`` affects only the calling session), so
the probe waits :data:`PG_STATS_SETTLE_S` before each closing read, and the server
counts a little more than the service (connection set-up statements, transactions
that were still being flushed from the previous window, the settle time's background
work).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from sqlalchemy import Engine, text

from flashsale.db.engine import make_sync_engine
from flashsale.demo.client import ApiClient
from flashsale.demo.server_latency import LatencyHistogram, ServerLatency, latency_histogram_of

__all__ = [
    "PG_STATS_SETTLE_S",
    "TX_METRIC",
    "IdleRate",
    "PgStats",
    "RushTransactions",
    "TransactionProbe",
    "TxCount",
    "transactions_of",
]

#: The service's transaction counter on ``/metrics``.
TX_METRIC = "flashsale_db_transactions_total"
#: Seconds to wait before reading ``pg_stat_database`` after a rush: backends flush
#: their counters at most once a second, an idle one within a second.
PG_STATS_SETTLE_S = 1.5

_SAMPLE = re.compile(
    rf'^{TX_METRIC}\{{(?:[^}}]*,)?outcome="(commit|rollback)"(?:,[^}}]*)?\}}\s+(\S+)'
)


@dataclass(frozen=True)
class TxCount:
    """Database transactions: ``commits`` and ``rollbacks`` (a count or a difference)."""

    commits: int
    rollbacks: int

    @property
    def total(self) -> int:
        """Commits + rollbacks."""
        return self.commits + self.rollbacks

    def __sub__(self, other: TxCount) -> TxCount:
        return TxCount(self.commits - other.commits, self.rollbacks - other.rollbacks)

    def __add__(self, other: TxCount) -> TxCount:
        return TxCount(self.commits + other.commits, self.rollbacks + other.rollbacks)

    @classmethod
    def sum(cls, counts: Sequence[TxCount | None]) -> Self | None:
        """The sum of ``counts``; None when any is unknown (or there are none)."""
        if not counts or any(c is None for c in counts):
            return None
        return cls(
            sum(c.commits for c in counts if c is not None),
            sum(c.rollbacks for c in counts if c is not None),
        )


def transactions_of(metrics_text: str) -> TxCount | None:
    """:data:`TX_METRIC` in a Prometheus exposition (summed over any other labels);
    None when neither outcome is there."""
    found: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        found[match.group(1)] = found.get(match.group(1), 0.0) + value
    if not found:
        return None
    return TxCount(round(found.get("commit", 0.0)), round(found.get("rollback", 0.0)))


class PgStats:
    """Reads ``pg_stat_database`` for one database through a connection to another one
    (the server URL the user gave), so that the reads add no transaction to the counts.

    Args:
        server_url: a ``postgresql://`` URL on the server (its database is only read).
        database: the database whose counters are read.
    """

    def __init__(self, server_url: str, database: str) -> None:
        self.database = database
        self._engine: Engine = make_sync_engine(server_url)

    def read(self) -> TxCount | None:
        """``(xact_commit, xact_rollback)`` now (blocking); None when not readable."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT xact_commit, xact_rollback FROM pg_stat_database "
                        "WHERE datname = :name"
                    ),
                    {"name": self.database},
                ).one_or_none()
        except Exception:  # a cross-check only: never fail the demo for it
            return None
        return None if row is None else TxCount(int(row[0]), int(row[1]))

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()


@dataclass
class RushTransactions:
    """Database transactions of one rush.

    Attributes:
        name: the rush, e.g. ``"coupon rush"``.
        unit: what a success is, e.g. ``"coupon"`` or ``"order"``.
        successes: coupons issued / orders placed in the rush (all instances).
        instance_successes: the same per instance (the instance that answered).
        instances: per instance, the growth of :data:`TX_METRIC` over the rush (None:
            a scrape failed).
        pg: growth of ``pg_stat_database`` for the demo's database (None: not
            PostgreSQL, or not readable).
        seconds: wall time between the two scrapes.
        latency: the server-side request latency of the same window, from the same
            scrapes (None: not measured).
    """

    name: str
    unit: str
    successes: int
    instance_successes: list[int]
    instances: list[TxCount | None]
    pg: TxCount | None
    seconds: float
    latency: ServerLatency | None = None

    @property
    def total(self) -> TxCount | None:
        """Over all instances (None when any instance is unknown)."""
        return TxCount.sum(self.instances)


@dataclass(frozen=True)
class IdleRate:
    """Background transactions of the quiet shop: ``count`` over ``seconds`` on all
    instances (None: a scrape failed)."""

    count: TxCount | None
    seconds: float

    @property
    def per_second(self) -> float | None:
        """Transactions (commits + rollbacks) per second."""
        return None if self.count is None else self.count.total / max(self.seconds, 1e-9)


def _deltas(after: list[TxCount | None], before: list[TxCount | None]) -> list[TxCount | None]:
    return [None if a is None or b is None else a - b for a, b in zip(after, before, strict=True)]


def _latency_deltas(
    after: list[LatencyHistogram | None], before: list[LatencyHistogram | None]
) -> list[LatencyHistogram | None]:
    return [
        None if a is None or b is None else a.since(b) for a, b in zip(after, before, strict=True)
    ]


@dataclass(frozen=True)
class _Scrape:
    """One scrape of every instance's ``/metrics``, parsed (in instance order)."""

    transactions: list[TxCount | None]
    latency: list[LatencyHistogram | None]


def _parse(texts: list[str | None]) -> _Scrape:
    return _Scrape(
        [None if t is None else transactions_of(t) for t in texts],
        [None if t is None else latency_histogram_of(t) for t in texts],
    )


@dataclass
class _Mark:
    at: float
    texts: list[str | None]
    pg: TxCount | None


class TransactionProbe:
    """Scrapes every instance's transaction counter and request latency histogram (and
    ``pg_stat_database``) around the rushes.

    Args:
        api: the client over every instance (its :attr:`~ApiClient.server_urls`).
        pg: the PostgreSQL cross-check, or None.
    """

    def __init__(self, api: ApiClient, pg: PgStats | None = None) -> None:
        self.api = api
        self.pg = pg
        self._mark: _Mark | None = None

    async def scrape(self) -> list[TxCount | None]:
        """:data:`TX_METRIC` of every instance now, in instance order."""
        texts = await self.api.scrape_metrics()
        return [None if t is None else transactions_of(t) for t in texts]

    async def _read_pg(self) -> TxCount | None:
        return None if self.pg is None else await asyncio.to_thread(self.pg.read)

    async def idle(self, seconds: float) -> IdleRate:
        """The background transaction rate over ``seconds`` of a quiet shop.

        Also gives ``pg_stat_database`` time to catch up with what came before.
        """
        before = await self.scrape()
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        after = await self.scrape()
        elapsed = time.perf_counter() - started
        return IdleRate(TxCount.sum(_deltas(after, before)), elapsed)

    async def start(self) -> None:
        """Mark the start of a rush."""
        pg = await self._read_pg()
        at = time.perf_counter()
        # Parsed in stop(), outside the window: parsing a histogram exposition takes tens
        # of milliseconds.
        self._mark = _Mark(at, await self.api.scrape_metrics(), pg)

    async def stop(
        self, name: str, unit: str, successes: int, instance_successes: Sequence[int]
    ) -> RushTransactions:
        """Mark the end of the rush started last and return its figures (with its
        server-side latency, :attr:`RushTransactions.latency`).

        On PostgreSQL this waits :data:`PG_STATS_SETTLE_S` before reading
        ``pg_stat_database`` (after the scrape of the instances, which is not delayed).

        Raises:
            RuntimeError: :meth:`start` was not called.
        """
        mark = self._mark
        if mark is None:
            raise RuntimeError("TransactionProbe.stop() before start()")
        self._mark = None
        texts = await self.api.scrape_metrics()
        seconds = time.perf_counter() - mark.at
        before, after = _parse(mark.texts), _parse(texts)
        pg: TxCount | None = None
        if self.pg is not None:
            await asyncio.sleep(PG_STATS_SETTLE_S)
            pg_after = await self._read_pg()
            if pg_after is not None and mark.pg is not None:
                pg = pg_after - mark.pg
        return RushTransactions(
            name=name,
            unit=unit,
            successes=successes,
            instance_successes=list(instance_successes),
            instances=_deltas(after.transactions, before.transactions),
            pg=pg,
            seconds=seconds,
            latency=ServerLatency(name, _latency_deltas(after.latency, before.latency)),
        )
