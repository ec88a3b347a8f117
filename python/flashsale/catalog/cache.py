"""A per-process cache of the flash-crowd catalog reads.

During a sale everyone refreshes the product page and the popular list. Each
worker process keeps the serialized JSON of ``GET /products/{id}``,
``GET /products`` (per page) and ``GET /products/popular`` (per query) for at
most ``max_age_s`` seconds (``FLASHSALE_READ_CACHE_S``, default 1 s), so a hit
costs neither a database transaction nor pydantic validation or serialization.

Freshness: an entry's age is counted from the moment its database read
*started*, so what a hit shows was in the database at most ``max_age_s`` ago.
An entry is dropped earlier when the process learns of a change:

- :meth:`ReadCache.invalidate_products` -- the stock of these products changed
  (this process's committed orders, cancellations, expiries and restocks): their
  product pages and the list pages showing them go;
- :meth:`ReadCache.ranking_changed` -- a sale or cancellation was recorded in the
  ranking (this process's own or one its follower read from the outbox): those
  products' pages and every popular answer go;
- :meth:`ReadCache.invalidate_all` -- a product was created (list pages change
  membership).

A fill whose read may predate a change (it was running when the change was
learnt) still answers the requests already waiting for it but is not stored, and
later requests start a new read: a change this process committed is visible to
every request that starts after the commit.

Concurrent misses of one key are coalesced: one database read fills it while
the other requests await it. That, more than the hit rate, protects the database
when a sale's own orders keep dropping the hot product's page. The number of
entries is bounded (oldest dropped first), so a crawler walking many cursors
cannot grow memory without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

#: ``("product", id)``, ``("list", limit, after_id)`` or ``("popular", limit, days, metric)``.
Key = tuple[str | int, ...]
#: What a fill returns: the response body (JSON bytes) and the ids of the products
#: whose stock it shows.
Filled = tuple[bytes, Iterable[int]]
Fill = Callable[[], Awaitable[Filled]]

PRODUCT = "product"
LIST = "list"
POPULAR = "popular"


def product_key(product_id: int) -> Key:
    """Key of ``GET /products/{product_id}``."""
    return (PRODUCT, product_id)


def list_key(limit: int, after_id: int | None) -> Key:
    """Key of a ``GET /products`` page (``after_id`` decoded from the cursor; ``None`` first)."""
    return (LIST, limit, after_id or 0)


def popular_key(limit: int, days: int, metric: str) -> Key:
    """Key of ``GET /products/popular?limit=&days=&metric=``."""
    return (POPULAR, limit, days, metric)


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer."""

    #: The serialized JSON response body.
    body: bytes
    #: Monotonic time (seconds) its database read started.
    filled_at: float
    #: Products whose stock (and status) the body shows.
    product_ids: frozenset[int]


class _Pending:
    """A fill in progress; ``stale`` once a change it may not have seen was learnt."""

    __slots__ = ("stale", "task")

    def __init__(self) -> None:
        self.stale = False
        self.task: asyncio.Task[Entry] | None = None


def _consume(task: asyncio.Task[Entry]) -> None:
    # Every waiter may have gone (clients disconnected): the error is theirs, not the loop's.
    if not task.cancelled():
        task.exception()


class ReadCache:
    """Serialized catalog answers of one process, each at most ``max_age_s`` old.

    Args:
        max_age_s: seconds an entry may be served after its read started
            (``FLASHSALE_READ_CACHE_S``); 0 disables the cache (every request reads
            the database, nothing is stored or shared).
        max_entries: most entries kept; the oldest fill is dropped first.
        clock: monotonic seconds (tests pass a fake one).

    Raises:
        ValueError: ``max_age_s < 0`` or ``max_entries < 1``.
    """

    def __init__(
        self,
        max_age_s: float,
        max_entries: int = 1024,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age_s < 0:
            raise ValueError("max_age_s must be >= 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._clock = clock
        #: Stored entries, oldest fill first.
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._pending: dict[Key, _Pending] = {}
        #: product id -> keys of the stored entries showing its stock.
        self._by_product: dict[int, set[Key]] = {}
        self._popular: set[Key] = set()
        #: Requests answered from a stored entry, and database reads made (for tests
        #: and debugging; waiters on a coalesced fill count as neither).
        self.hits = 0
        self.fills = 0

    @property
    def enabled(self) -> bool:
        """Whether answers are stored and shared (``max_age_s > 0``)."""
        return self.max_age_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Key) -> Entry | None:
        """The stored entry of ``key`` while it is fresh (a hit), else None; never reads
        the database (the edge of the app serves hits with it before routing)."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry.filled_at >= self.max_age_s:
            return None
        self.hits += 1
        return entry

    async def get(self, key: Key, fill: Fill) -> Entry:
        """The entry of ``key``: stored and fresh, else from the fill in progress for
        ``key``, else from a new call of ``fill`` (stored unless a change was learnt
        meanwhile).

        Raises:
            Exception: whatever ``fill`` raised (e.g. ``ProductNotFound``), to every
                request that awaited that fill; errors are never stored.
        """
        if not self.enabled:
            self.fills += 1
            started = self._clock()
            body, product_ids = await fill()
            return Entry(body, started, frozenset(product_ids))
        entry = self._entries.get(key)
        if entry is not None:
            if self._clock() - entry.filled_at < self.max_age_s:
                self.hits += 1
                return entry
            self._drop(key)
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending()
            # A task of its own: a requester that goes away mid-read must not cancel
            # the read the others await.
            pending.task = asyncio.create_task(self._fill(key, fill, pending))
            pending.task.add_done_callback(_consume)
            self._pending[key] = pending
        assert pending.task is not None
        return await asyncio.shield(pending.task)

    async def _fill(self, key: Key, fill: Fill, pending: _Pending) -> Entry:
        started = self._clock()
        self.fills += 1
        try:
            body, product_ids = await fill()
        finally:
            if self._pending.get(key) is pending:
                del self._pending[key]
        entry = Entry(body, started, frozenset(product_ids))
        if not pending.stale:
            self._store(key, entry)
        return entry

    def headers(self, entry: Entry) -> dict[str, str]:
        """``Cache-Control`` and ``Age`` (RFC 9111) of a response serving ``entry``.

        ``Age`` is the whole seconds since the entry's read started; ``max-age`` is
        ``Age`` plus the whole seconds it has left, so a downstream cache computing
        ``max-age - Age`` never keeps it beyond ``max_age_s`` either. With the 1 s
        default both are 0 as soon as the read has taken any time: fresh now, not to
        be reused downstream.
        """
        age = max(0.0, self._clock() - entry.filled_at)
        whole_age = int(age)
        left = max(0, int(self.max_age_s - age))
        return {"Cache-Control": f"public, max-age={whole_age + left}", "Age": str(whole_age)}

    # -- invalidation ----------------------------------------------------------------
    def invalidate_products(self, product_ids: Iterable[int]) -> None:
        """The stock of these products changed (a committed transaction): drop their
        pages and the list pages showing them; discard list fills in progress (a page
        may come to show any product)."""
        for product_id in set(product_ids):
            for key in list(self._by_product.get(product_id, ())):
                self._drop(key)
            self._discard_pending(product_key(product_id))
        for key in [k for k in self._pending if k[0] == LIST]:
            self._discard_pending(key)

    def ranking_changed(self, product_ids: Iterable[int]) -> None:
        """A sale or cancellation of these products was recorded in the ranking: their
        stock changed too, and any popular answer may change."""
        self.invalidate_products(product_ids)
        for key in list(self._popular):
            self._drop(key)
        for key in [k for k in self._pending if k[0] == POPULAR]:
            self._discard_pending(key)

    def invalidate_all(self) -> None:
        """Drop every entry and discard every fill in progress."""
        self._entries.clear()
        self._by_product.clear()
        self._popular.clear()
        for key in list(self._pending):
            self._discard_pending(key)

    # -- bookkeeping -------------------------------------------------------------------
    def _discard_pending(self, key: Key) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending.stale = True

    def _store(self, key: Key, entry: Entry) -> None:
        self._drop(key)
        self._entries[key] = entry
        for product_id in entry.product_ids:
            self._by_product.setdefault(product_id, set()).add(key)
        if key[0] == POPULAR:
            self._popular.add(key)
        # Entries are kept in the order their fills finished, so the expired ones (all
        # share one lifetime) and any over the bound are, but for a slow fill, in front.
        now = self._clock()
        while self._entries:
            oldest_key, oldest = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_entries and now - oldest.filled_at < self.max_age_s:
                break
            self._drop(oldest_key)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._popular.discard(key)
        for product_id in entry.product_ids:
            keys = self._by_product.get(product_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_product[product_id]
