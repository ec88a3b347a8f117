"""The C++ window replay (rolling_top) against the pandas reference, and their rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flashsale.analysis import (
    SALES_COLUMNS,
    TOP_COLUMNS,
    empty_sales,
    rolling_top,
    rolling_top_reference,
    sale_events,
    top_at,
)
from flashsale.analysis.frames import astype

from .conftest import T0, sales_frame


def random_sales(seed: int, n: int = 2_500, products: int = 12, days: int = 4) -> pd.DataFrame:
    """Few products and small quantities (many ties), sub-second times, cancellations
    (some later than their sale, some at the same time), lines exactly on step boundaries."""
    rng = np.random.default_rng(seed)
    ns = T0.value + rng.integers(0, days * 86_400 * 10**9, n)
    ns[: n // 20] = T0.value + rng.integers(0, days * 24, n // 20) * 3_600 * 10**9  # on the hour
    product = rng.integers(1, products + 1, n)
    quantity = rng.integers(1, 4, n)
    cancel = rng.random(n) < 0.15
    ns[cancel] += rng.integers(0, 6 * 3_600 * 10**9, cancel.sum())
    quantity[cancel] = -rng.integers(1, 5, cancel.sum())  # may exceed the sales: totals <= 0
    frame = pd.DataFrame(
        {
            "order_id": np.arange(n),
            "user_id": pd.array(rng.integers(1, 50, n), dtype="Int64"),
            "product_id": product,
            "product_name": [f"p{p}" for p in product],
            "quantity": quantity,
            "amount": quantity * 990,
            "paid_at": pd.to_datetime(ns, utc=True),
            "status": np.where(cancel, "CANCELLED", "PAID"),
        }
    ).sample(frac=1.0, random_state=seed)  # any row order
    return pd.DataFrame({c: astype(frame[c], t) for c, t in SALES_COLUMNS.items()})


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("metric", ["quantity", "orders"])
@pytest.mark.parametrize(
    ("step", "window"), [("1h", "1h"), ("1h", "1D"), ("1D", "1D"), ("1D", "3D"), ("6h", "4h")]
)
def test_replay_equals_the_pandas_reference(seed: int, metric: str, step: str, window: str) -> None:
    sales = random_sales(seed)
    k = 5
    cpp = rolling_top(sales, k=k, step=step, window=window, metric=metric)
    reference = rolling_top_reference(
        sales,
        k=k,
        step=step,
        window=window,
        metric=metric,
    )
    pd.testing.assert_frame_equal(cpp, reference)
    assert len(cpp) > 0
    assert {str(t) for t in cpp.dtypes} == {
        str(pd.Series(dtype=t).dtype) for t in TOP_COLUMNS.values()
    }


def test_ties_go_to_the_lower_product_id() -> None:
    sales = sales_frame([(1, 9, 2, "1h"), (2, 4, 2, "2h"), (3, 7, 2, "3h"), (4, 5, 1, "4h")])
    for top in (rolling_top(sales, k=3), rolling_top_reference(sales, k=3)):
        assert top["product_id"].tolist() == [4, 7, 9]
        assert top["rank"].tolist() == [1, 2, 3]


def test_cancellations_subtract_and_non_positive_totals_are_not_ranked() -> None:
    sales = sales_frame(
        [
            (1, 1, 5, "1h"),
            (2, 2, 3, "2h"),
            (1, 1, -5, "3h"),  # product 1 fully cancelled: not ranked
            (3, 3, 1, "4h"),
            (4, 3, -2, "5h"),  # product 3 below zero: not ranked
        ]
    )
    for metric in ("quantity", "orders"):
        top = rolling_top(sales, k=5, metric=metric)
        pd.testing.assert_frame_equal(top, rolling_top_reference(sales, k=5, metric=metric))
        assert top["product_id"].tolist() == [2]
        assert top[["quantity", "orders"]].values.tolist() == [[3, 1]]


def test_window_is_half_open_and_steps_are_aligned_to_the_epoch() -> None:
    sales = sales_frame(
        [
            (1, 1, 1, "0s"),  # the first instant of day 1
            (2, 2, 1, "23h 59min 59s 999999us"),  # the last instant of day 1
            (3, 3, 1, "1D"),  # the first instant of day 2: counted on day 2 only
        ]
    )
    top = rolling_top(sales, k=5, step="1D")
    assert top["step_end"].unique().tolist() == [T0 + pd.Timedelta("1D"), T0 + pd.Timedelta("2D")]
    day1 = top[top["step_end"] == T0 + pd.Timedelta("1D")]
    day2 = top[top["step_end"] == T0 + pd.Timedelta("2D")]
    assert day1["product_id"].tolist() == [1, 2]
    assert day2["product_id"].tolist() == [3]
    # A 2-day window at the end of day 2 holds all three.
    two = rolling_top(sales, k=5, step="1D", window="2D", start=T0 + pd.Timedelta("2D"))
    assert two["product_id"].tolist() == [1, 2, 3]


def test_start_and_end_choose_the_step_ends() -> None:
    sales = random_sales(4)
    top = rolling_top(
        sales, step="1D", start=T0 + pd.Timedelta("1D 3h"), end=T0 + pd.Timedelta("3D 1h")
    )
    assert top["step_end"].unique().tolist() == [T0 + pd.Timedelta("2D"), T0 + pd.Timedelta("3D")]


def test_names_are_the_latest_name_sold_under() -> None:
    sales = sales_frame([(1, 1, 1, "1h"), (2, 1, 1, "2h")])
    sales.loc[1, "product_name"] = "renamed"
    assert rolling_top(sales)["product_name"].tolist() == ["renamed"]


def test_top_at_counts_whole_buckets_up_to_now_like_the_service() -> None:
    sales = sales_frame([(1, 1, 3, "10min"), (2, 2, 2, "1D 0h 0min 30s"), (3, 3, 9, "1D 2min")])
    now = T0 + pd.Timedelta("1D 0min 45s")
    # 60 s buckets: the window is the whole minutes (T0 + 1 min, T0 + 1 D + 1 min];
    # the sale at T0 + 1 D + 2 min has not happened yet.
    top = top_at(sales, now, k=5, window="1D", bucket=60)
    assert top["product_id"].tolist() == [1, 2]
    assert (top["step_end"] == now).all()


def test_sale_events_are_in_time_order_with_signed_orders() -> None:
    sales = sales_frame([(2, 5, 2, "2h 0.7s"), (1, 4, -1, "1h"), (3, 6, 1, "1h")])
    events = sale_events(sales)
    assert events.timestamps.tolist() == [
        T0.value // 10**9 + 3600,
        T0.value // 10**9 + 3600,
        T0.value // 10**9 + 7200,  # floored to the second
    ]
    assert events.product_ids.tolist() == [4, 6, 5]
    assert events.orders.tolist() == [-1, 1, 1]


def test_empty_sales_give_an_empty_typed_frame() -> None:
    for top in (rolling_top(empty_sales()), rolling_top_reference(empty_sales())):
        assert top.empty
        assert list(top.columns) == list(TOP_COLUMNS)
        assert str(top["step_end"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0},
        {"metric": "revenue"},
        {"step": "0s"},
        {"step": "1500ms"},
        {"window": "-1h"},
        {"start": pd.Timestamp("2026-03-02")},  # naive
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object]) -> None:
    sales = sales_frame([(1, 1, 1, "1h")])
    with pytest.raises(ValueError):
        rolling_top(sales, **kwargs)
    with pytest.raises(ValueError):
        rolling_top_reference(sales, **kwargs)


def test_not_a_sales_frame_raises_value_error() -> None:
    sales = sales_frame([(1, 1, 1, "1h")])
    with pytest.raises(ValueError, match="missing columns"):
        rolling_top(sales.drop(columns="status"))
    with pytest.raises(ValueError, match="wrong dtypes"):
        rolling_top(sales.assign(paid_at=sales["paid_at"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match="PAID or CANCELLED"):
        rolling_top(sales.assign(status=pd.array(["REFUNDED"], dtype="string")))
