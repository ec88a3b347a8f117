"""Matplotlib helpers for the analysis frames; each draws on ``ax`` and returns it.

Without ``ax`` a new figure is made with ``matplotlib.pyplot`` (imported only
then, so scripts that pass their own axes never pick a GUI backend). Times are
drawn in UTC unless a ``tz`` is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from flashsale.analysis.frames import check_sales
from flashsale.analysis.measures import rank_trajectories, units_per_period
from flashsale.analysis.rolling import Duration, Metric

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def _naive(times: pd.Series | pd.Index, tz: str) -> np.ndarray:
    # Matplotlib's date axis takes naive datetime64; label the axis with the zone.
    index = pd.DatetimeIndex(times).tz_convert(tz).tz_localize(None)
    return index.to_numpy()


def bump_chart(
    top: pd.DataFrame,
    *,
    highlight: int = 8,
    ax: Axes | None = None,
    tz: str = "UTC",
    title: str | None = None,
) -> Axes:
    """Bump chart of a rolling top: each product's rank (1 on top) over the steps.

    Args:
        top: a rolling-top frame (``rolling_top``); every product that was ever
            in it gets a line, broken where it fell out of the top.
        highlight: products drawn in colour and named in the legend: those with
            the most points over the steps (k points for a first place, 1 for
            the k-th); the others are thin grey lines, so a long tail stays readable.
        tz: zone of the time axis.

    Returns:
        The axes, with a legend of the highlighted products (best first) outside on the right.
    """
    ax = _axes(ax, (12, 5))
    ranks = rank_trajectories(top)
    k = int(top["rank"].max()) if len(top) else 1
    names = top.groupby("product_id")["product_name"].last()
    points = (k + 1 - ranks).sum().sort_values(ascending=False, kind="stable")
    leaders = list(points.index[: max(0, highlight)])
    x = _naive(ranks.index, tz)
    for product_id in ranks.columns:
        if product_id not in leaders:
            y = ranks[product_id].to_numpy()
            ax.plot(x, y, marker="o", markersize=2, linewidth=0.8, color="0.8", zorder=1)
    for color, product_id in zip(_colors(len(leaders)), leaders, strict=True):
        y = ranks[product_id].to_numpy()
        ax.plot(
            x,
            y,
            marker="o",
            markersize=5,
            linewidth=2.2,
            color=color,
            label=str(names[product_id]),
            zorder=2,
        )
    ax.set_ylim(k + 0.5, 0.5)
    ax.set_yticks(range(1, k + 1))
    ax.set_ylabel("rank")
    ax.set_xlabel(f"step end ({tz})")
    ax.set_title(title or f"Top {k} over time")
    ax.grid(axis="y", alpha=0.3)
    if leaders:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def hour_day_heatmap(
    sales: pd.DataFrame,
    *,
    ax: Axes | None = None,
    metric: Metric = "quantity",
    by: Literal["date", "weekday"] = "date",
    tz: str = "UTC",
    title: str | None = None,
) -> Axes:
    """Heatmap of sales by hour of day (columns) and date or weekday (rows).

    Args:
        sales: a sales frame; net units (``metric="quantity"``) or order lines
            (``"orders"``) are summed per cell.
        by: ``"date"`` (one row per calendar day) or ``"weekday"`` (Mon..Sun, summed).
        tz: the zone whose hours and dates are shown (the shop's local time reads best).

    Raises:
        ValueError: not a sales frame, an unknown ``metric`` or ``by``.
    """
    check_sales(sales)
    if by not in ("date", "weekday"):
        raise ValueError(f"by must be 'date' or 'weekday', not {by!r}")
    ax = _axes(ax, (11, 6))
    hourly = units_per_period(sales, freq="1h", metric=metric).sum(axis=1)
    local = pd.DatetimeIndex(hourly.index).tz_convert(tz)
    frame = pd.DataFrame({"v": hourly.to_numpy(), "hour": local.hour})
    if by == "date":
        frame["row"] = local.strftime("%Y-%m-%d %a")
    else:
        frame["row"] = local.day_of_week
    grid = frame.pivot_table(index="row", columns="hour", values="v", aggfunc="sum", fill_value=0)
    grid = grid.reindex(columns=range(24), fill_value=0)
    labels = (
        list(grid.index)
        if by == "date"
        else [_WEEKDAYS[d] for d in grid.index.to_numpy(dtype=np.int64)]
    )
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel(f"hour of day ({tz})")
    step = max(1, len(labels) // 31 + 1)
    ax.set_yticks(range(0, len(labels), step))
    ax.set_yticklabels([str(label) for label in labels[::step]], fontsize=7)
    ax.set_title(title or f"{'Units' if metric == 'quantity' else 'Orders'} by hour and {by}")
    figure = ax.get_figure()
    if figure is not None:
        figure.colorbar(image, ax=ax, label="units" if metric == "quantity" else "orders")
    return ax


def metric_comparison(
    comparison: pd.DataFrame,
    *,
    n: int = 10,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Slope chart: rank by units (left) against rank by orders (right).

    Args:
        comparison: :func:`flashsale.analysis.measures.units_vs_orders`' frame.
        n: products shown: those in the top n by either metric.

    Raises:
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    ax = _axes(ax, (8, 6))
    shown = comparison[(comparison["rank_quantity"] <= n) | (comparison["rank_orders"] <= n)]
    depth = int(max(shown["rank_quantity"].max(), shown["rank_orders"].max())) if len(shown) else n
    colors = _colors(len(shown))
    rows = zip(
        shown["product_name"].tolist(),
        shown["quantity"].tolist(),
        shown["orders"].tolist(),
        shown["rank_quantity"].tolist(),
        shown["rank_orders"].tolist(),
        strict=True,
    )
    for color, (name, quantity, orders, left, right) in zip(colors, rows, strict=True):
        ax.plot([0, 1], [left, right], marker="o", color=color, linewidth=2)
        ax.annotate(
            f"{name} ({quantity:,} u)",
            (0, left),
            xytext=(-8, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
            color=color,
        )
        ax.annotate(
            f"({orders:,} o) {name}",
            (1, right),
            xytext=(8, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=8,
            color=color,
        )
    ax.set_xlim(-0.9, 1.9)
    ax.set_ylim(depth + 0.5, 0.5)
    ax.set_xticks([0, 1], ["rank by units", "rank by orders"])
    ax.set_yticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or "Units against orders")
    return ax


def spike_chart(
    sales: pd.DataFrame,
    spikes: pd.DataFrame,
    product_id: int | None = None,
    *,
    freq: Duration = "1h",
    ax: Axes | None = None,
    tz: str = "UTC",
) -> Axes:
    """Units per period with spike episodes shaded: one product's, or the whole shop's.

    Args:
        sales: a sales frame.
        spikes: :func:`flashsale.analysis.measures.detect_spikes`' frame.
        product_id: the product drawn; ``None`` draws the shop's total units and
            marks every episode with its product's name.
        freq: the period used to detect ``spikes``.

    Raises:
        ValueError: not a sales frame, a bad ``freq``.
    """
    ax = _axes(ax, (12, 3.5))
    if product_id is None:
        series = units_per_period(sales, freq=freq).sum(axis=1)
        mine = spikes
        name = "all products"
    else:
        series = units_per_period(sales, freq=freq, product_ids=[product_id])[product_id]
        mine = spikes[spikes["product_id"] == product_id]
        names = sales.loc[sales["product_id"] == product_id, "product_name"]
        name = str(names.iloc[-1]) if len(names) else str(product_id)
    x = _naive(series.index, tz)
    ax.plot(x, series.to_numpy(), linewidth=0.9, color="tab:blue")
    top = float(series.max()) if len(series) else 1.0
    for start, end, label in zip(
        _naive(mine["start"], tz), _naive(mine["end"], tz), mine["product_name"], strict=True
    ):
        ax.axvspan(start, end, color="tab:red", alpha=0.3)
        if product_id is None:
            ax.annotate(
                str(label),
                (start, top),
                xytext=(3, -2),
                textcoords="offset points",
                rotation=90,
                va="top",
                fontsize=7,
                color="tab:red",
            )
    ax.set_title(f"{name}: units per {freq} ({len(mine)} spike episode(s) shaded)")
    ax.set_ylabel("units")
    ax.set_xlabel(f"time ({tz})")
    return ax
