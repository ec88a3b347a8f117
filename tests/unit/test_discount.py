"""The discount rule (docs/rules.md): FIXED takes ``discount_value`` KRW; PERCENT takes
floor(total × value / 100) capped at ``max_discount_amount``; never more than the total."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashsale.coupons.service import compute_discount


@pytest.mark.parametrize(
    ("total", "kind", "value", "cap", "expected"),
    [
        # FIXED
        (10_000, "FIXED", 3_000, None, 3_000),
        (3_000, "FIXED", 3_000, None, 3_000),
        (2_999, "FIXED", 3_000, None, 2_999),  # never above the total
        (10_000, "FIXED", 3_000, 2_000, 2_000),  # a cap applies to FIXED too
        # PERCENT, floor
        (10_000, "PERCENT", 10, None, 1_000),
        (999, "PERCENT", 10, None, 99),  # 99.9 -> 99
        (19, "PERCENT", 5, None, 0),  # 0.95 -> 0
        (12_345, "PERCENT", 33, None, 4_073),  # 4073.85 -> 4073
        (10_000, "PERCENT", 100, None, 10_000),
        # PERCENT with cap
        (100_000, "PERCENT", 50, 5_000, 5_000),
        (8_000, "PERCENT", 50, 5_000, 4_000),  # below the cap
        (10_000, "PERCENT", 50, 5_000, 5_000),  # exactly the cap
        # zero total
        (0, "FIXED", 3_000, None, 0),
        (0, "PERCENT", 50, 5_000, 0),
    ],
)
def test_discount_rule(total: int, kind: str, value: int, cap: int | None, expected: int) -> None:
    assert compute_discount(total, kind, value, cap) == expected


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown discount type"):
        compute_discount(10_000, "BOGO", 1, None)


totals = st.integers(min_value=0, max_value=5 * 10**12)
caps = st.none() | st.integers(min_value=1, max_value=10**9)


@settings(deadline=None)  # a shared, loaded CI machine must not flake
@given(total=totals, value=st.integers(min_value=1, max_value=10**9), cap=caps)
def test_fixed_property(total: int, value: int, cap: int | None) -> None:
    d = compute_discount(total, "FIXED", value, cap)
    assert 0 <= d <= total
    assert d <= value
    if cap is not None:
        assert d <= cap
    assert d == min(value, total, cap if cap is not None else value)


@settings(deadline=None)  # a shared, loaded CI machine must not flake
@given(total=totals, value=st.integers(min_value=1, max_value=100), cap=caps)
def test_percent_property(total: int, value: int, cap: int | None) -> None:
    d = compute_discount(total, "PERCENT", value, cap)
    assert 0 <= d <= total
    assert d <= total * value // 100  # floor, never rounded up
    if cap is not None:
        assert d <= cap
        assert d == min(total * value // 100, cap)
    else:
        assert d == total * value // 100
