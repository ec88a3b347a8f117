"""``flashsale demo`` end to end, small: it must pass its own checks and the audit."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_runs_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flashsale", "demo", "--users", "300", "--concurrency", "50",
         "--seconds", "3", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    report = proc.stdout
    for scenario in ("coupon rush", "limited rush", "shopping"):
        assert scenario in report, report
    assert "Coupons issued:       100 of 100" in report, report
    assert "Limited units sold:   100 of 100 (stock left 0)" in report, report
    assert "Top 5 popular products" in report, report
    assert "Audit: OK" in report, report
    assert "Result: PASS" in report, report
