"""Time windows (a product's sale, a coupon's issue): open on ``starts ≤ now < ends``;
product status from window and stock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flashsale.catalog.service import product_status, window_is_open

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
S = timedelta(microseconds=1)
START = NOW - timedelta(hours=1)
END = NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("starts", "ends", "now", "expected"),
    [
        (START, END, NOW, True),
        (START, END, START, True),  # start inclusive
        (START, END, START - S, False),
        (START, END, END - S, True),
        (START, END, END, False),  # end exclusive
        (None, None, NOW, True),  # missing bounds are open
        (None, END, END - S, True),
        (None, END, END, False),
        (START, None, START, True),
        (START, None, START - S, False),
    ],
)
def test_window(
    starts: datetime | None, ends: datetime | None, now: datetime, expected: bool
) -> None:
    assert window_is_open(starts, ends, now) is expected


@pytest.mark.parametrize(
    ("starts", "ends", "stock", "now", "expected"),
    [
        (START, END, 5, NOW, "ON_SALE"),
        (START, END, 0, NOW, "SOLD_OUT"),
        (START, END, 5, START, "ON_SALE"),
        (START, END, 5, START - S, "UPCOMING"),
        (START, END, 0, START - S, "UPCOMING"),  # window first, then stock
        (START, END, 5, END - S, "ON_SALE"),
        (START, END, 5, END, "ENDED"),
        (START, END, 0, END, "ENDED"),
        (None, None, 1, NOW, "ON_SALE"),
        (None, None, 0, NOW, "SOLD_OUT"),
    ],
)
def test_product_status(
    starts: datetime | None, ends: datetime | None, stock: int, now: datetime, expected: str
) -> None:
    assert product_status(starts, ends, stock, now) == expected
