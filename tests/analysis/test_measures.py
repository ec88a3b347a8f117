"""Measures on hand-made frames: Kendall's tau, overlap, trajectories, units vs orders, spikes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flashsale.analysis import (
    SPIKE_COLUMNS,
    TOP_COLUMNS,
    compare_rankings,
    detect_spikes,
    kendall_tau_b,
    rank_trajectories,
    stability,
    topk_kendall_tau,
    units_per_period,
    units_vs_orders,
)
from flashsale.analysis.frames import astype

from .conftest import T0, sales_frame


def top_frame(lists: list[list[int]]) -> pd.DataFrame:
    """A rolling-top frame: one list of product ids (best first) per day."""
    rows = [
        (T0 + pd.Timedelta(days=day + 1), rank, product_id, f"p{product_id}", 10 - rank, 1)
        for day, ids in enumerate(lists)
        for rank, product_id in enumerate(ids, start=1)
    ]
    frame = pd.DataFrame(rows, columns=list(TOP_COLUMNS))
    return pd.DataFrame({c: astype(frame[c], t) for c, t in TOP_COLUMNS.items()})


def test_kendall_tau_b_by_hand() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # One discordant pair out of six: (5 - 1) / 6.
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # A tie in x: 2 concordant pairs over sqrt((3 - 1) * (3 - 0)).
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1], [1]))
    assert math.isnan(kendall_tau_b([1, 1], [1, 2]))
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_kendall_tau_b_agrees_with_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.integers(0, 6, 30)
        y = rng.integers(0, 6, 30)
        expected = stats.kendalltau(x, y).statistic
        assert kendall_tau_b(x, y) == pytest.approx(expected)


def test_topk_kendall_tau_ranks_missing_items_k_plus_one() -> None:
    assert topk_kendall_tau([1, 2, 3], [1, 2, 3], 3) == 1.0
    assert topk_kendall_tau([1, 2, 3], [3, 2, 1], 3) == -1.0
    # Disjoint: 4 discordant pairs, one tie on each side: -4 / sqrt(5 * 5).
    assert topk_kendall_tau([1, 2], [3, 4], 2) == pytest.approx(-0.8)
    # 4 concordant, 2 discordant (by hand in the docstring's terms): 2 / 6.
    assert topk_kendall_tau([1, 2, 3], [1, 3, 4], 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        topk_kendall_tau([1, 2, 3], [1], 2)


def test_stability_between_consecutive_steps() -> None:
    top = top_frame([[1, 2, 3], [1, 3, 4], [1, 3, 4]])
    result = stability(top)
    assert result["overlap"].tolist() == pytest.approx([2 / 3, 1.0])
    assert result["kendall_tau"].tolist() == pytest.approx([1 / 3, 1.0])
    assert result["entered"].tolist() == [1, 0]
    assert result["left"].tolist() == [1, 0]
    assert result["step_end"].tolist() == [T0 + pd.Timedelta("2D"), T0 + pd.Timedelta("3D")]
    assert result["previous_step_end"].tolist() == [
        T0 + pd.Timedelta("1D"),
        T0 + pd.Timedelta("2D"),
    ]
    assert str(result["step_end"].dtype) == "datetime64[ns, UTC]"
    assert stability(top_frame([[1]])).empty


def test_compare_rankings_at_common_steps() -> None:
    by_units = top_frame([[1, 2, 3], [4, 5, 6]])
    by_orders = top_frame([[3, 2, 1], [4, 5, 7]])
    result = compare_rankings(by_units, by_orders)
    assert result["overlap"].tolist() == pytest.approx([1.0, 2 / 3])
    assert result["kendall_tau"].iloc[0] == pytest.approx(-1.0)
    assert result["entered"].tolist() == [0, 1]
    assert result["left"].tolist() == [0, 1]


def test_rank_trajectories_are_nan_outside_the_top() -> None:
    wide = rank_trajectories(top_frame([[1, 2], [2, 3]]))
    assert list(wide.columns) == [1, 2, 3]
    assert wide[2].tolist() == [2.0, 1.0]
    assert math.isnan(wide.loc[T0 + pd.Timedelta("2D"), 1])
    assert rank_trajectories(top_frame([[1, 2]]), products=[2, 9]).columns.tolist() == [2, 9]


def test_units_vs_orders_ranks_both_ways() -> None:
    sales = sales_frame(
        [
            (1, 1, 1, "1h"),
            (2, 1, 1, "2h"),
            (3, 1, 1, "3h"),  # product 1: 3 units in 3 orders
            (4, 2, 10, "4h"),  # product 2: 10 units in 1 order
            (5, 3, 2, "5h"),
            (6, 3, 2, "6h"),
            (6, 3, -2, "7h"),  # product 3: one of its two orders cancelled
            (7, 4, 1, "8h"),
            (7, 4, -1, "9h"),  # product 4: nothing left, not ranked
        ]
    )
    result = units_vs_orders(sales)
    assert result["product_id"].tolist() == [2, 1, 3]
    assert result["quantity"].tolist() == [10, 3, 2]
    assert result["orders"].tolist() == [1, 3, 1]
    assert result["rank_quantity"].tolist() == [1, 2, 3]
    assert result["rank_orders"].tolist() == [2, 1, 3]  # 2 and 3 tie on 1 order: lower id first
    assert result["rank_shift"].tolist() == [1, -1, 0]
    assert result["units_per_order"].tolist() == pytest.approx([10.0, 1.0, 2.0])
    later = units_vs_orders(sales, start=T0 + pd.Timedelta("3h 30min"))
    assert later["product_id"].tolist() == [2, 3]


def test_units_per_period_fills_every_period() -> None:
    sales = sales_frame([(1, 1, 2, "30min"), (2, 2, 3, "2h 10min"), (3, 1, -1, "2h 20min")])
    wide = units_per_period(sales, freq="1h")
    assert wide.index.tolist() == [T0, T0 + pd.Timedelta("1h"), T0 + pd.Timedelta("2h")]
    assert wide[1].tolist() == [2, 0, -1]
    assert wide[2].tolist() == [0, 0, 3]
    orders = units_per_period(sales, freq="1h", metric="orders", product_ids=[1])
    assert orders[1].tolist() == [1, 0, -1]


def steady_then(rows: list[tuple[int, int, int, str]]) -> pd.DataFrame:
    """Product 1 sells 1 unit an hour for 3 days, then ``rows`` are added."""
    base = [(10_000 + h, 1, 1, f"{h}h 5min") for h in range(72)]
    return sales_frame(base + rows)


def test_spike_far_above_the_baseline_is_found() -> None:
    rush = [(20_000 + i, 1, 5, f"72h {i}min") for i in range(6)]  # 30 units in 6 orders
    spikes = detect_spikes(steady_then(rush), freq="1h", baseline="2D", min_units=20)
    assert len(spikes) == 1
    spike = spikes.iloc[0]
    assert spike["product_id"] == 1
    assert spike["start"] == T0 + pd.Timedelta("72h")
    assert spike["end"] == T0 + pd.Timedelta("73h")
    assert spike["units"] == 30
    assert spike["baseline"] == pytest.approx(1.0)  # 1 unit an hour over the last 2 days
    assert spike["ratio"] == pytest.approx(30.0)
    assert {c: str(t) for c, t in spikes.dtypes.items()} == SPIKE_COLUMNS


def test_one_bulk_order_is_not_a_spike_but_a_launch_is() -> None:
    bulk = [(20_000, 1, 40, "72h 10min")]  # 40 units, one buyer
    # A new product: 6 orders of 5 units in each of three hours.
    launch = [(30_000 + i, 2, 5, f"{36 + i // 6}h {i}min") for i in range(18)]
    spikes = detect_spikes(steady_then(bulk + launch), freq="1h", baseline="1D", min_units=10)
    assert spikes["product_id"].tolist() == [2]
    assert spikes["periods"].tolist() == [3]  # three consecutive hours: one episode
    assert spikes["units"].tolist() == [90]
    assert spikes["ratio"].tolist() == [math.inf]


def test_spike_arguments_are_checked() -> None:
    sales = steady_then([])
    assert detect_spikes(sales).empty
    with pytest.raises(ValueError):
        detect_spikes(sales, freq="1h", baseline="90min")
    with pytest.raises(ValueError):
        detect_spikes(sales, factor=1.0)
    with pytest.raises(ValueError):
        detect_spikes(sales, min_orders=0)
