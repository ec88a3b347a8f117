"""Plot helpers draw on the Agg backend without warnings (pytest turns warnings into errors)."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.axes import Axes

from flashsale.analysis import (
    bump_chart,
    detect_spikes,
    hour_day_heatmap,
    metric_comparison,
    rolling_top,
    spike_chart,
    units_vs_orders,
)

from .conftest import sales_frame


@pytest.fixture
def sales() -> pd.DataFrame:
    rows = [(i, 1 + i % 7, 1 + i % 3, f"{i % 4}D {(i * 7) % 24}h {i % 60}min") for i in range(300)]
    rows += [(1_000 + i, 9, 5, f"2D 20h {i}min") for i in range(8)]  # a rush on product 9
    rows += [(5, 2, -1, "0D 12h")]  # a cancellation line
    return sales_frame(rows)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_bump_chart(sales: pd.DataFrame) -> None:
    top = rolling_top(sales, k=3, step="6h", window="1D")
    ax = bump_chart(top, highlight=2, tz="Asia/Seoul")
    assert isinstance(ax, Axes)
    assert ax.get_ylim() == (3.5, 0.5)  # rank 1 on top
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) == 2
    assert len(ax.get_lines()) == top["product_id"].nunique()


def test_hour_day_heatmap(sales: pd.DataFrame) -> None:
    _, (left, right) = plt.subplots(1, 2)
    hour_day_heatmap(sales, ax=left, by="date")
    hour_day_heatmap(sales, ax=right, by="weekday", metric="orders", tz="Asia/Seoul")
    grid = left.get_images()[0].get_array()
    assert grid is not None and grid.shape[1] == 24
    assert grid.sum() == sales["quantity"].sum()
    with pytest.raises(ValueError):
        hour_day_heatmap(sales, by="month")


def test_metric_comparison(sales: pd.DataFrame) -> None:
    ax = metric_comparison(units_vs_orders(sales), n=3)
    assert len(ax.get_lines()) >= 3
    with pytest.raises(ValueError):
        metric_comparison(units_vs_orders(sales), n=0)


def test_spike_chart(sales: pd.DataFrame) -> None:
    spikes = detect_spikes(sales, baseline="1D", min_history="6h", min_units=20)
    assert spikes["product_id"].tolist() == [9]
    shop = spike_chart(sales, spikes)
    assert "1 spike episode(s)" in shop.get_title()
    one = spike_chart(sales, spikes, product_id=9)
    assert one.get_title().startswith("product 9")
