"""Stubs of the C++ extension ``flashsale._core`` (private: import from ``flashsale``).

Every class is thread-safe without relying on the GIL. Bad arguments raise
``ValueError``; unknown ids raise ``KeyError(id)``. Ids and counts are int64.

Benchmark API: ``StockPool._try_reserve_nogil``, ``CouponGate._try_issue_nogil`` and
``SlidingWindowRanking._record_nogil`` exist only for ``flashsale bench core``
(:mod:`flashsale.bench.core`); the service never calls them. Each is its public
twin (same arguments, result and errors) with the GIL released around the C++ call.
The public methods keep the GIL because their C++ work (tens of nanoseconds) costs
less than releasing and re-taking it; the benchmark times both variants so that
this choice is measured, not assumed (docs/performance.md).
"""

import enum
from collections.abc import Sequence
from typing import final

from typing_extensions import Buffer

__version__: str

@final
class StockPool:
    """Per-SKU stock counters with all-or-nothing, lock-free reservations."""

    def __init__(self) -> None: ...
    def set(self, sku: int, available: int) -> None:
        """Create the SKU or overwrite its counter. ValueError if available < 0."""
    def available(self, sku: int) -> int:
        """Units left. KeyError for an unknown SKU."""
    def try_reserve(self, lines: Sequence[tuple[int, int]]) -> bool:
        """All-or-nothing over ``[(sku, quantity), ...]``.

        True and every counter decremented, or False and nothing changed.
        ValueError: no lines, quantity <= 0, a SKU twice; KeyError: unknown SKU
        (nothing changed in either case).
        """
    def _try_reserve_nogil(self, lines: Sequence[tuple[int, int]]) -> bool:
        """Benchmark API (see the module docstring): :meth:`try_reserve` with the GIL
        released."""
    def release(self, lines: Sequence[tuple[int, int]]) -> None:
        """Add the quantities back; same validation as try_reserve."""
    def __contains__(self, sku: object) -> bool: ...
    def __len__(self) -> int: ...

@final
class IssueResult(enum.Enum):
    """Answer of :meth:`CouponGate.try_issue`."""

    ISSUED = 0
    SOLD_OUT = 1
    ALREADY_ISSUED = 2

@final
class CouponGate:
    """First-come coupon counters, at most ``per_user_limit`` coupons per user."""

    def __init__(self) -> None: ...
    def configure(self, coupon_id: int, remaining: int, per_user_limit: int = 1) -> None:
        """Create the coupon or update remaining and limit, keeping per-user records.

        ValueError if remaining < 0 or per_user_limit < 1.
        """
    def try_issue(self, coupon_id: int, user_id: int) -> IssueResult:
        """ALREADY_ISSUED if the user holds per_user_limit, else SOLD_OUT if none
        remain, else ISSUED (remaining - 1, the user's count + 1). KeyError if unknown."""
    def _try_issue_nogil(self, coupon_id: int, user_id: int) -> IssueResult:
        """Benchmark API (see the module docstring): :meth:`try_issue` with the GIL
        released."""
    def revoke(self, coupon_id: int, user_id: int) -> None:
        """Undo one ISSUED (remaining + 1, the user's count - 1).

        ValueError if the user holds none in the gate.
        """
    def mark_issued(self, coupon_id: int, user_id: int, count: int = 1) -> None:
        """The database says the user holds ``count``: keep max(count, current).

        Does not change remaining; idempotent. ValueError if count < 0.
        """
    def remaining(self, coupon_id: int) -> int: ...
    def issued_to(self, coupon_id: int, user_id: int) -> int: ...
    def __contains__(self, coupon_id: object) -> bool: ...

@final
class RankEntry:
    """One row of :meth:`SlidingWindowRanking.top`."""

    def __init__(self, product_id: int, quantity: int, orders: int) -> None: ...
    @property
    def product_id(self) -> int: ...
    @property
    def quantity(self) -> int: ...
    @property
    def orders(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SlidingWindowRanking:
    """Time-bucketed sales counts with a sliding-window top-k.

    Timestamps are UTC epoch seconds; the bucket of ``ts`` is
    ``floor(ts / bucket_seconds)``. Bucket ``b`` is in the window ending at
    ``now`` iff ``cur - w // bucket_seconds < b <= cur`` with
    ``cur = floor(now / bucket_seconds)``.
    """

    def __init__(self, window_seconds: int = 259200, bucket_seconds: int = 60) -> None:
        """ValueError unless both > 0 and window_seconds is a multiple of bucket_seconds."""
    @property
    def window_seconds(self) -> int: ...
    @property
    def bucket_seconds(self) -> int: ...
    def record(self, product_id: int, quantity: int, orders: int, ts: float) -> None:
        """Enqueue a sale; negative values undo a cancelled one.

        ValueError if quantity and orders are both 0 or ts is not finite.
        """
    def _record_nogil(self, product_id: int, quantity: int, orders: int, ts: float) -> None:
        """Benchmark API (see the module docstring): :meth:`record` with the GIL
        released."""
    def record_many(
        self,
        product_ids: Sequence[int] | Buffer,
        quantities: Sequence[int] | Buffer,
        orders: Sequence[int] | Buffer,
        timestamps: Sequence[float] | Buffer,
    ) -> None:
        """Bulk load with record's semantics; int64 buffers (``array('q')``, numpy
        int64) and float64 or int64 timestamps are read without copying.

        ValueError if the lengths differ or any event is invalid (nothing applied).
        """
    def top(
        self,
        k: int,
        now: float,
        metric: str = "quantity",
        window_seconds: int | None = None,
    ) -> list[RankEntry]:
        """Top ``k`` by ``metric`` ("quantity" or "orders") desc, ties by lower
        product_id, among products whose metric total is > 0.

        Drains pending records first; the largest ``now`` seen is the horizon:
        buckets older than the full window before it are dropped. ValueError for
        k < 1, an unknown metric, or a window that is <= 0, longer than
        window_seconds or not a multiple of bucket_seconds.
        """
    def totals(self, now: float, window_seconds: int | None = None) -> dict[int, tuple[int, int]]:
        """product_id -> (quantity, orders) over the same window as top(); a diagnostic
        (the tests check the ranking with it), not used by the service."""
    def clear(self) -> None: ...
    def pair_count(self) -> int:
        """Live (product, bucket) pairs."""
    def memory_bytes(self) -> int:
        """Estimate of the heap bytes held, including the fixed-size queue."""
