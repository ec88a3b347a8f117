"""The charge range (docs/rules.md): 1,000 ≤ amount ≤ 1,000,000 KRW per charge."""

from __future__ import annotations

import pytest

from flashsale.errors import ChargeAmountOutOfRange
from flashsale.wallet.service import MAX_BALANCE, MAX_CHARGE, MIN_CHARGE, check_charge_amount


def test_limits_are_the_designed_ones() -> None:
    assert (MIN_CHARGE, MAX_CHARGE, MAX_BALANCE) == (1_000, 1_000_000, 100_000_000)


@pytest.mark.parametrize("amount", [1_000, 1_001, 500_000, 999_999, 1_000_000])
def test_amounts_in_range_pass(amount: int) -> None:
    check_charge_amount(amount)


@pytest.mark.parametrize("amount", [-(10**30), -1_000, -1, 0, 1, 999, 1_000_001, 10**30])
def test_amounts_out_of_range_are_refused(amount: int) -> None:
    with pytest.raises(ChargeAmountOutOfRange) as exc:
        check_charge_amount(amount)
    err = exc.value
    assert (err.code, err.status) == ("CHARGE_AMOUNT_OUT_OF_RANGE", 422)
    assert err.details == {"amount": amount, "min": 1_000, "max": 1_000_000}
