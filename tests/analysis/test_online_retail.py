"""The "Online Retail" importer on a small fixture in that exact layout."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from flashsale.analysis import (
    SALES_COLUMNS,
    check_sales,
    read_online_retail,
    rolling_top,
    rolling_top_reference,
)

from .conftest import DATA

SAMPLE = DATA / "online_retail_sample.csv"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_the_fixture_is_the_online_retail_layout() -> None:
    header = SAMPLE.read_text().splitlines()[0]
    assert header == (
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    )


def test_import_gives_a_typed_sales_frame() -> None:
    result = read_online_retail(SAMPLE)
    sales = result.sales
    check_sales(sales)
    assert {c: str(t) for c, t in sales.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in SALES_COLUMNS.items()
    }
    assert sales["paid_at"].is_monotonic_increasing
    # 19 rows: 4 dropped, the two 85123A lines of invoice 536544 merged.
    assert len(sales) == 14
    assert result.dropped == {
        "invoice not a sale or cancellation": 1,  # A563185, an adjustment
        "not a product": 2,  # POST and D
        "sale with quantity or price <= 0": 1,  # 536414, a write-off at price 0
    }


def test_stock_codes_map_to_ids_in_sorted_code_order() -> None:
    products = read_online_retail(SAMPLE).products
    assert products["stock_code"].tolist() == sorted(products["stock_code"].tolist())
    assert products["product_id"].tolist() == list(range(1, len(products) + 1))
    by_code = products.set_index("stock_code")["product_name"]
    # The most frequent description wins (3 lines against 1).
    assert by_code["85123A"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert by_code["21622"] == "VINTAGE UNION JACK CUSHION COVER, RED"  # a quoted comma


def line(result: pd.DataFrame, order_id: int, code: str, products: pd.DataFrame) -> pd.Series:
    product_id = int(products.set_index("stock_code").loc[code, "product_id"])
    rows = result[(result["order_id"] == order_id) & (result["product_id"] == product_id)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_amounts_are_integer_minor_units() -> None:
    result = read_online_retail(SAMPLE)
    first = line(result.sales, 536365, "85123A", result.products)
    assert (first["quantity"], first["amount"]) == (6, 1530)  # 6 × 2.55 GBP = 1,530 pence
    krw = read_online_retail(SAMPLE, money_scale=1_700)
    assert line(krw.sales, 536365, "85123A", krw.products)["amount"] == 26_010


def test_cancellation_invoices_subtract_from_their_stock_code() -> None:
    result = read_online_retail(SAMPLE)
    cancel = line(result.sales, 536383, "35004C", result.products)
    assert cancel["status"] == "CANCELLED"
    assert (cancel["quantity"], cancel["amount"]) == (-1, -465)
    assert cancel["paid_at"] == utc("2010-12-01 09:49")
    top = rolling_top(result.sales, k=20, step="1D")
    ducks = top[top["product_name"] == "SET OF 3 COLOURED  FLYING DUCKS"]
    assert ducks[["quantity", "orders"]].values.tolist() == [[1, 0]]  # 2 sold, 1 taken back


def test_missing_customers_are_na_and_duplicate_lines_are_summed() -> None:
    result = read_online_retail(SAMPLE)
    merged = line(result.sales, 536544, "85123A", result.products)
    assert pd.isna(merged["user_id"])
    assert (merged["quantity"], merged["amount"]) == (3, 1773)
    assert line(result.sales, 554000, "85123A", result.products)["user_id"] == 17850  # "17850.0"


def test_local_times_are_converted_to_utc() -> None:
    result = read_online_retail(SAMPLE)
    winter = line(result.sales, 536365, "85123A", result.products)["paid_at"]
    summer = line(result.sales, 554000, "85123A", result.products)["paid_at"]
    assert winter == utc("2010-12-01 08:26")  # GMT = UTC
    assert summer == utc("2011-05-20 09:15")  # 10:15 BST
    in_seoul = read_online_retail(SAMPLE, tz="Asia/Seoul")
    assert line(in_seoul.sales, 554000, "85123A", in_seoul.products)["paid_at"] == utc(
        "2011-05-20 01:15"
    )


def test_online_retail_ii_headers_and_iso_dates_are_accepted() -> None:
    text = (
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
        "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085,"
        "United Kingdom\n"
    )
    sales = read_online_retail(io.StringIO(text)).sales
    assert sales[["order_id", "quantity", "amount"]].values.tolist() == [[489434, 12, 8340]]
    assert sales["paid_at"].tolist() == [utc("2009-12-01 07:45")]


def test_replay_of_the_import_equals_the_reference() -> None:
    sales = read_online_retail(SAMPLE).sales
    for step in ("1h", "1D"):
        pd.testing.assert_frame_equal(
            rolling_top(sales, k=3, step=step), rolling_top_reference(sales, k=3, step=step)
        )


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="missing columns"):
        read_online_retail(io.StringIO("InvoiceNo,StockCode\n1,A\n"))
    with pytest.raises(ValueError, match="money_scale"):
        read_online_retail(SAMPLE, money_scale=0)
    with pytest.raises(ValueError, match="time zone"):
        read_online_retail(SAMPLE, tz="Mars/Olympus_Mons")
