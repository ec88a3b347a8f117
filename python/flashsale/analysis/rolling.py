"""Rolling top-k rankings: the C++ window replay and its pandas reference.

A rolling ranking answers "what was the top k at the end of every step?". Step
ends are multiples of ``step`` since the Unix epoch (UTC midnight for days,
whole UTC hours for hours); the ranking at a step end ``t`` counts the sale
lines with ``t - window <= paid_at < t``. Products are ordered by the metric
(``"quantity"``: units; ``"orders"``: (order, product) lines), higher first,
ties broken by the lower ``product_id``, and only products whose metric total is
> 0 are ranked -- the rules of :class:`flashsale.SlidingWindowRanking`, which
serves ``/products/popular``. Cancellation lines (``status == "CANCELLED"``)
count ``quantity`` (negative) and -1 order.

:func:`rolling_top` replays the sales through the C++ ranking in time order,
``record_many`` per step then ``top`` at the step end, as a live process would
have seen them. :func:`rolling_top_reference` is the same ranking in plain
pandas (filter the window, group, sort), kept as the reference the tests and
``flashsale bench ranking`` check the replay against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from flashsale import SlidingWindowRanking
from flashsale.analysis.frames import TimeLike, check_sales, utc_timestamp

Metric = Literal["quantity", "orders"]
METRICS: tuple[Metric, ...] = ("quantity", "orders")

#: The columns and dtypes of a rolling-top frame, one row per (step end, rank).
TOP_COLUMNS: dict[str, str] = {
    "step_end": "datetime64[ns, UTC]",
    "rank": "int64",
    "product_id": "int64",
    "product_name": "string",
    "quantity": "int64",
    "orders": "int64",
}

Duration = str | pd.Timedelta | timedelta | int

_NS = 1_000_000_000


def duration_seconds(value: Duration, name: str = "duration") -> int:
    """``value`` (``"1D"``, ``"6h"``, a timedelta, or an int of seconds) in whole seconds.

    Raises:
        ValueError: not a positive whole number of seconds.
    """
    if isinstance(value, int | np.integer):
        seconds = int(value)
    else:
        delta = pd.Timedelta(value)
        if delta.value % _NS:
            raise ValueError(f"{name} must be a whole number of seconds, not {value!r}")
        seconds = delta.value // _NS
    if seconds <= 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")
    return seconds


@dataclass(frozen=True)
class SaleEvents:
    """A sales frame as the C++ ranking's columns, in time order (int64 arrays).

    ``timestamps`` are UTC epoch seconds, floored: bucket widths are whole
    seconds, so flooring never moves an event to another bucket. ``orders`` is
    +1 for a sale line and -1 for a cancellation line.
    """

    product_ids: npt.NDArray[np.int64]
    quantities: npt.NDArray[np.int64]
    orders: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.product_ids)

    def buffers(
        self, start: int, stop: int
    ) -> tuple[memoryview, memoryview, memoryview, memoryview]:
        """Events ``[start, stop)`` as the int64 buffers ``record_many`` reads without copying."""
        return (
            self.product_ids[start:stop].data,
            self.quantities[start:stop].data,
            self.orders[start:stop].data,
            self.timestamps[start:stop].data,
        )


def sale_events(sales: pd.DataFrame) -> SaleEvents:
    """The events of ``sales`` for :meth:`flashsale.SlidingWindowRanking.record_many`.

    Raises:
        ValueError: ``sales`` is not a sales frame (:func:`~flashsale.analysis.frames.check_sales`).
    """
    check_sales(sales)
    return _events(sales)


def _time_order(ns: npt.NDArray[np.int64]) -> npt.NDArray[np.intp] | slice:
    # Frames from the loaders are already in time order: skip the sort then.
    if len(ns) < 2 or bool(np.all(ns[1:] >= ns[:-1])):
        return slice(None)
    return np.argsort(ns, kind="stable")


def _events(sales: pd.DataFrame) -> SaleEvents:
    ns = sales["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64")
    order = _time_order(ns)
    cancelled = (sales["status"] == "CANCELLED").to_numpy(dtype=bool)
    return SaleEvents(
        product_ids=np.ascontiguousarray(sales["product_id"].to_numpy(dtype=np.int64)[order]),
        quantities=np.ascontiguousarray(sales["quantity"].to_numpy(dtype=np.int64)[order]),
        orders=np.ascontiguousarray(np.where(cancelled, -1, 1).astype(np.int64)[order]),
        timestamps=np.ascontiguousarray(np.floor_divide(ns[order], _NS)),
    )


@dataclass(frozen=True)
class _Plan:
    k: int
    metric: Metric
    step_s: int
    window_s: int
    ends: npt.NDArray[np.int64]  # step ends, UTC epoch seconds


def _plan(
    sales: pd.DataFrame,
    k: int,
    step: Duration,
    window: Duration | None,
    metric: str,
    start: TimeLike | None,
    end: TimeLike | None,
) -> _Plan:
    check_sales(sales)
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    if metric not in METRICS:
        raise ValueError(f"metric must be 'quantity' or 'orders', not {metric!r}")
    step_s = duration_seconds(step, "step")
    window_s = step_s if window is None else duration_seconds(window, "window")
    if sales.empty and (start is None or end is None):
        return _Plan(k, metric, step_s, window_s, np.empty(0, dtype=np.int64))
    ns = sales["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64")

    def first_end_at_or_after(seconds: int) -> int:
        return -(-seconds // step_s) * step_s

    if start is None:
        first = (int(ns.min()) // _NS // step_s + 1) * step_s
    else:
        first = first_end_at_or_after(-(-utc_timestamp(start).value // _NS))
    if end is None:
        last = (int(ns.max()) // _NS // step_s + 1) * step_s
    else:
        last = int(utc_timestamp(end).value // _NS) // step_s * step_s
    ends = np.arange(first, last + 1, step_s, dtype=np.int64)
    return _Plan(k, metric, step_s, window_s, ends)


def _names(sales: pd.DataFrame, product_ids: npt.NDArray[np.int64]) -> pd.Series:
    # The latest name each product was sold under (names are order-item
    # snapshots); only the few ranked products are looked at.
    mask = sales["product_id"].isin(np.unique(product_ids)).to_numpy(dtype=bool)
    lines = pd.DataFrame(
        {
            "product_id": sales["product_id"].to_numpy()[mask],
            "paid_at": sales["paid_at"].to_numpy(dtype="datetime64[ns]")[mask],
            "name": sales["product_name"].array[mask],
        }
    )
    latest = lines.sort_values("paid_at", kind="stable").drop_duplicates("product_id", keep="last")
    return pd.Series(latest["name"].array, index=latest["product_id"].to_numpy())


def _frame(rows: list[tuple[int, int, int, int, int]], sales: pd.DataFrame) -> pd.DataFrame:
    data = np.array(rows, dtype=np.int64).reshape(-1, 5)
    names = _names(sales, data[:, 2])
    step_end = pd.to_datetime(data[:, 0], unit="s", utc=True).as_unit("ns")
    product_id = pd.Series(data[:, 2], dtype="int64")
    return pd.DataFrame(
        {
            "step_end": pd.Series(step_end, dtype="datetime64[ns, UTC]"),
            "rank": pd.Series(data[:, 1], dtype="int64"),
            "product_id": product_id,
            "product_name": product_id.map(names).astype("string"),
            "quantity": pd.Series(data[:, 3], dtype="int64"),
            "orders": pd.Series(data[:, 4], dtype="int64"),
        }
    )


def rolling_top(
    sales: pd.DataFrame,
    *,
    k: int = 5,
    step: Duration = "1D",
    window: Duration | None = None,
    metric: Metric = "quantity",
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """Top ``k`` at every step end, by replaying ``sales`` through the C++ ranking.

    Args:
        sales: a sales frame (:mod:`flashsale.analysis.frames`).
        k: products per step.
        step: distance between rankings (``"1h"``, ``"1D"``, ...), whole seconds.
        window: the span each ranking counts (default: ``step``), whole seconds.
        metric: ``"quantity"`` (units) or ``"orders"`` (order lines).
        start, end: first and last step end (aware times; rounded inwards to
            multiples of ``step``); by default the step ends just after the
            first and the last line.

    Returns:
        One row per (step end, rank) (:data:`TOP_COLUMNS`): ``step_end``
        (``datetime64[ns, UTC]``, the window is ``[step_end - window,
        step_end)``), ``rank`` (int64, 1..k), ``product_id`` (int64),
        ``product_name`` (string), ``quantity`` and ``orders`` (int64 totals in
        the window). A step with fewer than ``k`` products with sales has fewer
        rows (none when nothing sold).

    Raises:
        ValueError: not a sales frame, k < 1, an unknown metric, a non-positive
            or fractional-second step or window.
    """
    plan = _plan(sales, k, step, window, metric, start, end)
    rows: list[tuple[int, int, int, int, int]] = []
    if len(plan.ends):
        events = _events(sales)  # checked by _plan
        # Buckets must tile both the steps and the window exactly.
        ranking = SlidingWindowRanking(plan.window_s, math.gcd(plan.step_s, plan.window_s))
        # Events before each step end, fed in time order like a live process.
        cuts = np.searchsorted(events.timestamps, plan.ends, side="left")
        done = 0
        for step_end, cut in zip(plan.ends.tolist(), cuts.tolist(), strict=True):
            if cut > done:
                ranking.record_many(*events.buffers(done, cut))
                done = cut
            # Half a second before the end: the last bucket counted is the one
            # ending at step_end, never the one starting there.
            top = ranking.top(plan.k, step_end - 0.5, plan.metric)
            rows.extend(
                (step_end, rank, e.product_id, e.quantity, e.orders)
                for rank, e in enumerate(top, start=1)
            )
    return _frame(rows, sales)


def rolling_top_reference(
    sales: pd.DataFrame,
    *,
    k: int = 5,
    step: Duration = "1D",
    window: Duration | None = None,
    metric: Metric = "quantity",
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> pd.DataFrame:
    """:func:`rolling_top` in plain pandas, without the C++ core (same arguments, same result).

    For each step end: select the lines in ``[step_end - window, step_end)``,
    sum ``quantity`` and ±1 ``orders`` per product, keep totals > 0, sort by the
    metric descending then ``product_id`` ascending, take ``k``.

    Raises:
        ValueError: as :func:`rolling_top`.
    """
    plan = _plan(sales, k, step, window, metric, start, end)
    rows: list[tuple[int, int, int, int, int]] = []
    if len(plan.ends):
        ordered = sales.iloc[
            _time_order(sales["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64"))
        ]
        lines = pd.DataFrame(
            {
                "product_id": ordered["product_id"].to_numpy(),
                "quantity": ordered["quantity"].to_numpy(),
                "orders": np.where(ordered["status"].to_numpy() == "CANCELLED", -1, 1),
            }
        )
        ns = ordered["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64")
        ends_ns = plan.ends * _NS
        lo = np.searchsorted(ns, ends_ns - plan.window_s * _NS, side="left")
        hi = np.searchsorted(ns, ends_ns, side="left")
        for step_end, a, b in zip(plan.ends.tolist(), lo.tolist(), hi.tolist(), strict=True):
            if a == b:  # nothing sold in the window
                continue
            totals = lines.iloc[a:b].groupby("product_id", sort=True)[["quantity", "orders"]].sum()
            totals = totals[totals[plan.metric] > 0].reset_index()
            best = totals.sort_values(
                [plan.metric, "product_id"], ascending=[False, True], kind="stable"
            ).head(plan.k)
            rows.extend(
                (step_end, rank, int(p), int(q), int(o))
                for rank, (p, q, o) in enumerate(
                    best[["product_id", "quantity", "orders"]].itertuples(index=False), start=1
                )
            )
    return _frame(rows, sales)


def top_at(
    sales: pd.DataFrame,
    now: TimeLike,
    *,
    k: int = 5,
    window: Duration = "1D",
    metric: Metric = "quantity",
    bucket: Duration = 60,
) -> pd.DataFrame:
    """The top ``k`` as the service's ``/products/popular`` would serve it at ``now``.

    The window is whole buckets of ``bucket`` (the service's
    ``FLASHSALE_RANKING_BUCKET_S``, 60 s by default), the last one holding
    ``now``, exactly as :class:`flashsale.SlidingWindowRanking` counts them.

    Returns:
        :data:`TOP_COLUMNS` rows with ``step_end`` = ``now``.

    Raises:
        ValueError: not a sales frame, a naive ``now``, k < 1, an unknown metric,
            or a window that is not a positive multiple of ``bucket``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    when = utc_timestamp(now)
    window_s = duration_seconds(window, "window")
    bucket_s = duration_seconds(bucket, "bucket")
    if window_s % bucket_s:
        raise ValueError("window must be a multiple of bucket")
    check_sales(sales)
    # Later sales are not known yet at `now`.
    events = sale_events(sales[sales["paid_at"] <= when])
    ranking = SlidingWindowRanking(window_s, bucket_s)
    if len(events):
        ranking.record_many(*events.buffers(0, len(events)))
    top = ranking.top(k, when.value / _NS, metric)
    frame = _frame(
        [(0, rank, e.product_id, e.quantity, e.orders) for rank, e in enumerate(top, start=1)],
        sales,
    )
    frame["step_end"] = pd.Series(when, index=frame.index, dtype="datetime64[ns, UTC]")
    return frame
