"""Import a shop's export in the "Online Retail" layout into a sales frame.

The layout is the UCI "Online Retail" data set's (Chen, Sain & Guo, 2012; a UK
online retailer's invoices, 2010-12 to 2011-12), also used by many shops' and
tutorials' exports::

    InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
    536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom

"Online Retail II" headers (``Invoice``, ``Price``, ``Customer ID``) are accepted too.

Mapping into the sales frame (:mod:`flashsale.analysis.frames`):

- ``InvoiceNo`` → ``order_id``: the invoice's digits (``C536379`` → 536379).
- ``StockCode`` → ``product_id``: codes are alphanumeric (``85123A``), so each
  distinct code gets an id 1..n in sorted code order (the same file always gives
  the same ids, whatever the row order); ``products`` holds the mapping.
  ``product_name`` is the code's most frequent ``Description``.
- ``CustomerID`` → ``user_id``; blank in the source → ``<NA>``.
- ``Quantity`` × ``UnitPrice`` → ``amount``. **Money**: the source's prices are
  decimal amounts of its currency (pounds sterling in the UCI data). They are
  parsed as exact decimals and converted to integers as
  ``round(Quantity × UnitPrice × money_scale)`` (half away from zero). The
  default ``money_scale=100`` gives integer minor units (pence), *not* KRW; pass
  e.g. ``money_scale=1700`` for KRW at 1,700 KRW per pound.
- ``InvoiceDate`` → ``paid_at``. **Time zone**: the source's times are naive
  local times; they are read as wall-clock times in ``tz`` (default
  ``"Europe/London"``, the UCI shop's) and converted to UTC. A wall-clock time
  that does not exist (spring DST gap) moves forward; one that happens twice
  (autumn) cannot be placed and is dropped and counted (``dropped``).
- Invoices starting with ``C`` are cancellations (credit notes): their lines get
  ``status="CANCELLED"`` and negative ``quantity``/``amount``, and subtract from
  their ``StockCode``'s sales at the credit note's own time (the source does not
  say which invoice they cancel). Other invoices are ``PAID`` sales.

Rows that are not product sales are dropped and counted by reason in
``dropped``: invoices of another kind (``A...`` bad-debt adjustments), postage,
fees and manual adjustments (``exclude_stock_codes``), sale lines with a
quantity ≤ 0 or a price ≤ 0 (stock write-offs), cancellation lines with a
quantity ≥ 0, and unparseable values. Several lines of one product in one
invoice are summed into one (order, product) line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
import pandas as pd

from flashsale.analysis.frames import SALES_COLUMNS, astype

#: The columns of the layout, in order.
COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

#: "Online Retail II" names of the same columns.
_ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

#: Stock codes of the UCI data that are not products: postage, carriage, fees,
#: manual adjustments, discounts, bank charges, samples, gift vouchers.
NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "C2",
        "M",
        "m",
        "D",
        "S",
        "B",
        "CRUK",
        "PADS",
        "AMAZONFEE",
        "BANK CHARGES",
        "ADJUST",
        "ADJUST2",
        "TEST001",
        "TEST002",
    }
)

#: Price digits kept exactly: prices are parsed as decimals and scaled by 10**6.
_PRICE_DIGITS = 6


@dataclass
class OnlineRetailImport:
    """The outcome of :func:`read_online_retail`.

    Attributes:
        sales: the sales frame (:data:`flashsale.analysis.frames.SALES_COLUMNS`),
            ordered by ``paid_at``, ``order_id``, ``product_id``.
        products: ``product_id`` (int64), ``stock_code`` (string),
            ``product_name`` (string), ordered by ``product_id``.
        dropped: rows left out, by reason (only reasons that occurred).
    """

    sales: pd.DataFrame
    products: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)


def _scaled_prices(prices: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(price × 10**6 as int64, parsed ok) per row, exact: each distinct text is parsed once."""
    scale = Decimal(10**_PRICE_DIGITS)
    parsed: dict[str, int | None] = {}
    for text in prices.dropna().unique():
        try:
            value = Decimal(str(text).strip()) * scale
        except InvalidOperation:
            parsed[text] = None
            continue
        parsed[text] = int(value) if value == value.to_integral_value() else None
    micro = prices.map(parsed)
    ok = micro.notna()
    return micro.where(ok, 0).astype("int64"), ok


def _round_div(numerator: npt.NDArray[np.int64], denominator: int) -> npt.NDArray[np.int64]:
    """``numerator / denominator`` rounded half away from zero, in integers."""
    magnitude = (np.abs(numerator) + denominator // 2) // denominator
    return np.asarray(np.sign(numerator) * magnitude, dtype=np.int64)


def _parse_times(text: pd.Series, date_format: str | None) -> pd.Series:
    if date_format is not None:
        return pd.to_datetime(text, format=date_format, errors="coerce")
    try:
        # ISO first (most exports), then the UCI file's US month/day layout.
        return pd.to_datetime(text, format="ISO8601")
    except ValueError:
        return pd.to_datetime(text, format="%m/%d/%Y %H:%M", errors="coerce")


def read_online_retail(
    source: str | Path | IO[str],
    *,
    tz: str = "Europe/London",
    money_scale: int = 100,
    date_format: str | None = None,
    encoding: str = "utf-8",
    exclude_stock_codes: Iterable[str] = NON_PRODUCT_CODES,
) -> OnlineRetailImport:
    """Read an "Online Retail" CSV into a sales frame (mapping: module docstring).

    Args:
        source: a path or an open text file.
        tz: IANA time zone of the naive ``InvoiceDate`` values.
        money_scale: integer units per currency unit for ``amount`` (100: minor units).
        date_format: ``strftime`` layout of ``InvoiceDate``; by default ISO 8601,
            else ``%m/%d/%Y %H:%M`` (the UCI file saved as CSV).
        encoding: the file's encoding (Kaggle's copy of the UCI data is ``latin-1``).
        exclude_stock_codes: stock codes that are not products.

    Returns:
        An :class:`OnlineRetailImport`; ``amount`` is in 1/``money_scale`` of the
        source currency, ``paid_at`` in UTC.

    Raises:
        ValueError: a missing column, ``money_scale`` < 1, or an unknown ``tz``.
        OSError: the file cannot be read.
    """
    if money_scale < 1:
        raise ValueError("money_scale must be >= 1")
    raw = pd.read_csv(source, dtype="string", keep_default_na=False, encoding=encoding)
    raw = raw.rename(columns={k: v for k, v in _ALIASES.items() if k in raw.columns})
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"not the Online Retail layout: missing columns {missing}")
    df = raw.apply(lambda column: column.str.strip())
    df["_quantity"] = pd.to_numeric(df["Quantity"], errors="coerce")
    df["_micro"], df["_price_ok"] = _scaled_prices(df["UnitPrice"])
    df["_naive"] = _parse_times(df["InvoiceDate"], date_format)
    df["_cancelled"] = df["InvoiceNo"].str.startswith("C")
    dropped: dict[str, int] = {}

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal df
        mask = mask.fillna(True).astype(bool)
        n = int(mask.sum())
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
            df = df[~mask]

    drop(~df["InvoiceNo"].str.fullmatch(r"C?\d+"), "invoice not a sale or cancellation")
    excluded = set(exclude_stock_codes)
    drop(df["StockCode"].isin(excluded) | (df["StockCode"] == ""), "not a product")
    drop(df["_quantity"].isna() | ~df["_price_ok"] | df["_naive"].isna(), "unparseable value")
    sale = ~df["_cancelled"]
    drop(sale & ((df["_quantity"] <= 0) | (df["_micro"] <= 0)), "sale with quantity or price <= 0")
    drop(df["_cancelled"] & (df["_quantity"] >= 0), "cancellation with quantity >= 0")
    try:
        local = df["_naive"].dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
    except Exception as exc:  # zoneinfo's error types differ by platform
        raise ValueError(f"unknown time zone {tz!r}") from exc
    df = df.assign(_paid_at=local)
    drop(df["_paid_at"].isna(), "ambiguous local time")

    df = df.reset_index(drop=True)
    quantity = df["_quantity"].astype("int64")
    numerator = quantity.to_numpy() * df["_micro"].to_numpy() * money_scale
    amount = pd.Series(_round_div(numerator, 10**_PRICE_DIGITS), dtype="int64")

    codes = df["StockCode"]
    catalog = sorted(codes.unique())
    product_of = {code: i for i, code in enumerate(catalog, start=1)}
    # The most frequent description of each code; the first in sort order on a tie.
    names = (
        df.groupby(["StockCode", "Description"], sort=True)
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["StockCode", "n", "Description"], ascending=[True, False, True])
        .drop_duplicates("StockCode")
        .set_index("StockCode")["Description"]
    )
    products = pd.DataFrame(
        {
            "product_id": pd.Series(range(1, len(catalog) + 1), dtype="int64"),
            "stock_code": pd.Series(catalog, dtype="string"),
            "product_name": pd.Series([names[c] for c in catalog], dtype="string"),
        }
    )

    customer = pd.to_numeric(df["CustomerID"].replace("", pd.NA), errors="coerce")
    lines = pd.DataFrame(
        {
            "order_id": df["InvoiceNo"].str.removeprefix("C").astype("int64"),
            "user_id": customer.astype("Float64").round().astype("Int64"),
            "product_id": codes.map(product_of).astype("int64"),
            "quantity": quantity,
            "amount": amount,
            "paid_at": df["_paid_at"].dt.tz_convert("UTC").dt.as_unit("ns"),
            "status": df["_cancelled"].map({True: "CANCELLED", False: "PAID"}).astype("string"),
        }
    )
    # One (order, product) line per invoice and code, as in the service's frames.
    sales = (
        lines.groupby(["order_id", "status", "product_id"], sort=False)
        .agg(
            user_id=("user_id", "first"),
            quantity=("quantity", "sum"),
            amount=("amount", "sum"),
            paid_at=("paid_at", "min"),
        )
        .reset_index()
    )
    sales["product_name"] = sales["product_id"].map(
        products.set_index("product_id")["product_name"]
    )
    sales = pd.DataFrame({c: astype(sales[c], t) for c, t in SALES_COLUMNS.items()})
    sales = sales.sort_values(["paid_at", "order_id", "product_id"], kind="stable")
    return OnlineRetailImport(
        sales=sales.reset_index(drop=True), products=products, dropped=dropped
    )
