"""Measures over rolling rankings and sales frames.

- :func:`rank_trajectories`: each product's rank at every step (a bump chart's data).
- :func:`stability`: how much the top k changes from one step to the next --
  overlap and Kendall's tau between consecutive steps.
- :func:`compare_rankings`: the same two numbers between two rankings of the
  same steps (units against orders).
- :func:`units_vs_orders`: per product, rank by units against rank by orders.
- :func:`detect_spikes`: periods where a product sold far above its own
  rolling baseline (flash-sale spikes), merged into episodes.

Kendall's tau is computed here (tau-b, which accounts for ties) rather than
through ``DataFrame.corr(method="kendall")``, which needs SciPy; the lists
compared are at most a few thousand items, so the O(n²) pair count is cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from flashsale.analysis.frames import TimeLike, check_sales, utc_timestamp
from flashsale.analysis.rolling import Duration, Metric, duration_seconds

_NS = 1_000_000_000


def kendall_tau_b(x: Sequence[float] | npt.ArrayLike, y: Sequence[float] | npt.ArrayLike) -> float:
    """Kendall's tau-b of two equally long sequences, in [-1, 1].

    ``(concordant - discordant) / sqrt((n0 - tx) * (n0 - ty))`` over the
    ``n0 = n(n-1)/2`` pairs, ``tx``/``ty`` the pairs tied in ``x``/``y`` (the
    definition SciPy's ``kendalltau`` uses by default).

    Returns:
        NaN when undefined: fewer than 2 items, or every pair tied in ``x`` or ``y``.

    Raises:
        ValueError: the lengths differ.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("x and y must be 1-D and equally long")
    n = len(a)
    if n < 2:
        return math.nan
    upper = np.triu_indices(n, 1)
    sx = np.sign(a[:, None] - a[None, :])[upper]
    sy = np.sign(b[:, None] - b[None, :])[upper]
    pairs = len(sx)
    untied_x = pairs - int(np.count_nonzero(sx == 0))
    untied_y = pairs - int(np.count_nonzero(sy == 0))
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float(np.sum(sx * sy)) / math.sqrt(untied_x * untied_y)


def topk_kendall_tau(previous: Sequence[int], current: Sequence[int], k: int) -> float:
    """Kendall's tau-b between two top-k lists of product ids (best first).

    The items are the union of both lists; an item missing from a list is
    ranked k + 1 there, tied with the other missing ones (the usual extension of
    tau to top-k lists, Fagin, Kumar & Sivakumar 2003). Identical lists give 1.

    Returns:
        NaN with fewer than 2 items in the union.

    Raises:
        ValueError: k smaller than a list.
    """
    if k < max(len(previous), len(current)):
        raise ValueError("k must be at least the length of both lists")
    items = list(dict.fromkeys([*previous, *current]))
    rank_prev = {p: r for r, p in enumerate(previous, start=1)}
    rank_cur = {p: r for r, p in enumerate(current, start=1)}
    return kendall_tau_b(
        [rank_prev.get(p, k + 1) for p in items], [rank_cur.get(p, k + 1) for p in items]
    )


def _lists(top: pd.DataFrame) -> dict[pd.Timestamp, list[int]]:
    ordered = top.sort_values(["step_end", "rank"], kind="stable")
    return {
        cast(pd.Timestamp, step): group["product_id"].astype("int64").tolist()
        for step, group in ordered.groupby("step_end", sort=True)
    }


def rank_trajectories(top: pd.DataFrame, products: Iterable[int] | None = None) -> pd.DataFrame:
    """Each product's rank at every step of a rolling top (``rolling_top``'s frame).

    Returns:
        A wide frame: index ``step_end`` (``datetime64[ns, UTC]``, every step
        of ``top``), one float64 column per ``product_id`` (the products given,
        or every product ever in the top), the rank 1..k, NaN when outside the top.
    """
    wide = top.pivot(index="step_end", columns="product_id", values="rank").astype("float64")
    if products is not None:
        wide = wide.reindex(columns=list(products))
    wide.columns.name = "product_id"
    return wide.sort_index()


def stability(top: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """How much the top k changes between consecutive steps of a rolling top.

    Args:
        top: a rolling-top frame (:data:`flashsale.analysis.rolling.TOP_COLUMNS`).
        k: the list length (default: the largest rank in ``top``).

    Returns:
        One row per step after the first: ``step_end``, ``previous_step_end``
        (``datetime64[ns, UTC]``; steps with no sales have no rows in ``top`` and
        are skipped), ``overlap`` (float64, shared products / k, 1.0 = same
        set), ``kendall_tau`` (float64, :func:`topk_kendall_tau`; 1.0 = same
        order), ``entered`` and ``left`` (int64, products that came in / dropped out).

    Raises:
        ValueError: k smaller than a list in ``top``.
    """
    lists = _lists(top)
    if k is None:
        k = int(top["rank"].max()) if len(top) else 1
    steps = list(lists)
    rows = []
    for before, after in itertools.pairwise(steps):
        prev, cur = lists[before], lists[after]
        rows.append(
            {
                "step_end": after,
                "previous_step_end": before,
                "overlap": len(set(prev) & set(cur)) / k,
                "kendall_tau": topk_kendall_tau(prev, cur, k),
                "entered": len(set(cur) - set(prev)),
                "left": len(set(prev) - set(cur)),
            }
        )
    return _stability_frame(rows, ["step_end", "previous_step_end"])


def _stability_frame(rows: list[dict[str, object]], time_columns: list[str]) -> pd.DataFrame:
    dtypes = {c: "datetime64[ns, UTC]" for c in time_columns}
    dtypes |= {"overlap": "float64", "kendall_tau": "float64", "entered": "int64", "left": "int64"}
    frame = pd.DataFrame(rows, columns=list(dtypes))
    return frame.astype(dtypes)


def compare_rankings(
    first: pd.DataFrame, second: pd.DataFrame, k: int | None = None
) -> pd.DataFrame:
    """Overlap and Kendall's tau between two rolling tops at each common step.

    Typically ``rolling_top(sales, metric="quantity")`` against
    ``rolling_top(sales, metric="orders")``: where they differ, a few buyers
    took many units each.

    Returns:
        One row per step present in both: ``step_end`` (``datetime64[ns, UTC]``),
        ``overlap``, ``kendall_tau`` (float64), ``entered`` (int64, in ``second``
        only) and ``left`` (int64, in ``first`` only).

    Raises:
        ValueError: k smaller than a list.
    """
    a, b = _lists(first), _lists(second)
    if k is None:
        k = int(max(first["rank"].max(), second["rank"].max())) if len(first) + len(second) else 1
    rows = [
        {
            "step_end": step,
            "overlap": len(set(a[step]) & set(b[step])) / k,
            "kendall_tau": topk_kendall_tau(a[step], b[step], k),
            "entered": len(set(b[step]) - set(a[step])),
            "left": len(set(a[step]) - set(b[step])),
        }
        for step in sorted(set(a) & set(b))
    ]
    return _stability_frame(rows, ["step_end"])


def _ordinal_rank(values: pd.Series, product_ids: pd.Series) -> pd.Series:
    # The ranking's order: higher value first, then lower product_id.
    order = pd.DataFrame({"v": values, "p": product_ids}).sort_values(
        ["v", "p"], ascending=[False, True], kind="stable"
    )
    ranks = pd.Series(np.arange(1, len(order) + 1, dtype=np.int64), index=order.index)
    return ranks.reindex(values.index)


def units_vs_orders(
    sales: pd.DataFrame, *, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """Per product, its rank by units against its rank by orders over ``[start, end)``.

    Returns:
        One row per product with units > 0 and orders > 0, ordered by
        ``rank_quantity``: ``product_id`` (int64), ``product_name`` (string),
        ``quantity``, ``orders`` (int64 net totals), ``units_per_order``
        (float64), ``rank_quantity``, ``rank_orders`` (int64, 1 = best, ties by
        lower product_id) and ``rank_shift`` (int64, ``rank_orders -
        rank_quantity``: > 0 when the product ranks better by units, i.e. it
        sells in bulk to fewer buyers).

    Raises:
        ValueError: not a sales frame, or a naive ``start``/``end``.
    """
    check_sales(sales)
    lines = sales
    if start is not None:
        lines = lines[lines["paid_at"] >= utc_timestamp(start)]
    if end is not None:
        lines = lines[lines["paid_at"] < utc_timestamp(end)]
    lines = lines.assign(orders=np.where(lines["status"] == "CANCELLED", -1, 1))
    totals = lines.groupby("product_id", sort=True).agg(
        product_name=("product_name", "last"),
        quantity=("quantity", "sum"),
        orders=("orders", "sum"),
    )
    totals = totals[(totals["quantity"] > 0) & (totals["orders"] > 0)].reset_index()
    totals["units_per_order"] = totals["quantity"] / totals["orders"]
    totals["rank_quantity"] = _ordinal_rank(totals["quantity"], totals["product_id"])
    totals["rank_orders"] = _ordinal_rank(totals["orders"], totals["product_id"])
    totals["rank_shift"] = totals["rank_orders"] - totals["rank_quantity"]
    totals = totals.astype(
        {
            "product_id": "int64",
            "product_name": "string",
            "quantity": "int64",
            "orders": "int64",
            "units_per_order": "float64",
            "rank_quantity": "int64",
            "rank_orders": "int64",
            "rank_shift": "int64",
        }
    )
    return totals.sort_values("rank_quantity").reset_index(drop=True)


def units_per_period(
    sales: pd.DataFrame,
    *,
    freq: Duration = "1h",
    metric: Metric = "quantity",
    product_ids: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Net units (or order lines) per product and period, every period present.

    Periods are multiples of ``freq`` since the Unix epoch (UTC), from the first
    line's to the last line's; periods without sales hold 0.

    Returns:
        A wide frame: index ``period`` (``datetime64[ns, UTC]``, period start),
        one int64 column per ``product_id`` (the given ones, else every product
        sold). Memory: periods × products × 8 bytes.

    Raises:
        ValueError: not a sales frame, an unknown metric, a bad ``freq``.
    """
    check_sales(sales)
    if metric not in ("quantity", "orders"):
        raise ValueError(f"metric must be 'quantity' or 'orders', not {metric!r}")
    freq_s = duration_seconds(freq, "freq")
    wanted = None if product_ids is None else list(product_ids)
    lines = sales if wanted is None else sales[sales["product_id"].isin(wanted)]
    ns = lines["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64")
    period = ns // (freq_s * _NS)
    values = (
        lines["quantity"].to_numpy()
        if metric == "quantity"
        else np.where(lines["status"].to_numpy() == "CANCELLED", -1, 1)
    )
    counts = (
        pd.DataFrame({"period": period, "product_id": lines["product_id"].to_numpy(), "v": values})
        .groupby(["period", "product_id"], sort=True)["v"]
        .sum()
        .unstack("product_id", fill_value=0)
    )
    if len(sales):
        all_ns = sales["paid_at"].to_numpy(dtype="datetime64[ns]").view("int64")
        full = np.arange(all_ns.min() // (freq_s * _NS), all_ns.max() // (freq_s * _NS) + 1)
    else:
        full = np.empty(0, dtype=np.int64)
    counts = counts.reindex(index=full, columns=wanted, fill_value=0).astype("int64")
    counts.index = pd.DatetimeIndex(
        pd.to_datetime(full * freq_s, unit="s", utc=True).as_unit("ns"), name="period"
    )
    counts.columns.name = "product_id"
    return counts


#: The columns and dtypes of :func:`detect_spikes`' frame.
SPIKE_COLUMNS: dict[str, str] = {
    "product_id": "int64",
    "product_name": "string",
    "start": "datetime64[ns, UTC]",
    "end": "datetime64[ns, UTC]",
    "periods": "int64",
    "units": "int64",
    "peak_units": "int64",
    "baseline": "float64",
    "ratio": "float64",
}


def detect_spikes(
    sales: pd.DataFrame,
    *,
    freq: Duration = "1h",
    baseline: Duration = "7D",
    min_history: Duration = "1D",
    factor: float = 5.0,
    min_units: int = 20,
    min_orders: int = 5,
) -> pd.DataFrame:
    """Spikes: periods where a product sold far above its own rolling baseline.

    A period is a spike for a product when its net units are ≥ ``min_units``,
    bought in ≥ ``min_orders`` orders (one bulk order is not a rush), and
    ≥ ``factor`` × the product's baseline: its mean units per period over
    the ``baseline`` span just before (the period itself excluded), once at
    least ``min_history`` of it is available. A product that sold nothing
    before (a flash-sale launch) has a baseline of 0, so ``min_units`` decides.
    Consecutive spike periods of one product form one episode.

    Returns:
        One row per episode, by ``start`` then ``product_id``
        (:data:`SPIKE_COLUMNS`): ``product_id`` (int64), ``product_name``
        (string), ``start``/``end`` (``datetime64[ns, UTC]``, ``[start, end)``),
        ``periods`` (int64), ``units`` (int64, in the episode), ``peak_units``
        (int64, the best period), ``baseline`` (float64, units per period before
        the episode) and ``ratio`` (float64, ``peak_units / baseline``; inf when
        the baseline is 0).

    Raises:
        ValueError: not a sales frame; ``freq``, ``baseline`` or ``min_history``
            not positive whole seconds, or ``baseline``/``min_history`` not
            multiples of ``freq``; ``factor`` ≤ 1, ``min_units`` or ``min_orders`` < 1.
    """
    check_sales(sales)
    freq_s = duration_seconds(freq, "freq")
    base_s = duration_seconds(baseline, "baseline")
    history_s = duration_seconds(min_history, "min_history")
    if base_s % freq_s or history_s % freq_s:
        raise ValueError("baseline and min_history must be multiples of freq")
    if factor <= 1 or min_units < 1 or min_orders < 1:
        raise ValueError("factor must be > 1, min_units and min_orders >= 1")
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in SPIKE_COLUMNS.items()})
    if sales.empty:
        return empty
    # Only products with some period reaching min_units can spike: the others
    # stay out of the dense periods × products frame.
    per_period = units_per_period(sales, freq=freq_s)
    candidates = per_period.columns[(per_period >= min_units).any()]
    units = per_period[candidates]
    buyers = units_per_period(
        sales, freq=freq_s, metric="orders", product_ids=[int(c) for c in candidates]
    )
    buyers = buyers.reindex(index=units.index, fill_value=0)
    base = units.rolling(base_s // freq_s, min_periods=max(1, history_s // freq_s)).mean().shift(1)
    spike = (units >= min_units) & (buyers >= min_orders) & (units >= factor * base) & base.notna()
    names = sales.sort_values("paid_at").groupby("product_id")["product_name"].last()
    rows = []
    for product_id in candidates:
        flags = spike[product_id].to_numpy()
        if not flags.any():
            continue
        positions = np.flatnonzero(flags)
        # Runs of consecutive periods.
        breaks = np.flatnonzero(np.diff(positions) > 1) + 1
        for run in np.split(positions, breaks):
            run_units = units[product_id].to_numpy()[run]
            before = float(base[product_id].to_numpy()[run[0]])
            peak = int(run_units.max())
            rows.append(
                {
                    "product_id": int(product_id),
                    "product_name": names[product_id],
                    "start": units.index[run[0]],
                    "end": units.index[run[-1]] + pd.Timedelta(seconds=freq_s),
                    "periods": len(run),
                    "units": int(run_units.sum()),
                    "peak_units": peak,
                    "baseline": before,
                    "ratio": peak / before if before > 0 else math.inf,
                }
            )
    if not rows:
        return empty
    frame = pd.DataFrame(rows, columns=list(SPIKE_COLUMNS)).astype(SPIKE_COLUMNS)
    return frame.sort_values(["start", "product_id"]).reset_index(drop=True)
