"""``flashsale bench ranking`` runs and finds the replay equal to the reference (no timing)."""

from __future__ import annotations

import pytest

from flashsale.bench.ranking import main, make_sales
from flashsale.cli import main as cli


def test_bench_agrees_on_small_data(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ranking", "--events", "20000", "--days", "4", "--products", "300", "--rounds", "1"]
    assert cli(["bench", *argv]) == 0
    out = capsys.readouterr().out
    assert "agree on every scenario" in out
    assert out.count(" yes") == 3


def test_generated_data_is_a_sales_frame_with_cancellations() -> None:
    sales = make_sales(10_000, 3, 100, 1.1, 0.05, seed=1)
    assert len(sales) == 10_000
    assert (sales["status"] == "CANCELLED").sum() == 10_000 - round(10_000 / 1.05)
    assert sales["paid_at"].is_monotonic_increasing


def test_bad_flags_exit_2() -> None:
    assert main(["--events", "0"]) == 2
    assert main(["--cancel-share", "1.5"]) == 2
