"""``flashsale bench http --quick`` end to end: it runs every scenario on both services,
writes its JSON, passes the audit, and ``--table`` renders the JSON. Nothing about speed
is asserted (benchmarks print figures; tests never time anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flashsale.bench.http.runner import SCENARIO_NAMES
from flashsale.db.provision import databases_named

# No skip without wrk: the bench installs it (apt-get) when it is missing, and
# scripts/test.sh installs it before the suite runs.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run_bench(json_path: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "flashsale", "bench", "http", "--quick", "--json",
         str(json_path), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "audit: OK" in proc.stdout, output
    data: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return data


def _check_figures(data: dict[str, Any], database: str) -> None:
    assert data["settings"]["database"] == database
    assert data["audit"]["ok"], data["audit"]
    assert data["audit"]["checks"]
    records = {(r["scenario"], r["service"]): r for r in data["results"]}
    assert set(records) == {(s, svc) for s in SCENARIO_NAMES for svc in ("flashsale", "baseline")}
    for (scenario, service), record in records.items():
        where = f"{scenario}/{service}: {record}"
        assert record["requests"] > 0, where
        assert record["rps"] > 0, where
        assert record["p50_ms"] > 0 and record["p99_ms"] >= record["p50_ms"], where
        assert record["cpu_server_us"] > 0 and record["cpu_us_per_request"] > 0, where
        assert record["server_errors"] == 0 and record["tracebacks"] == 0, where
        if scenario != "healthz":
            assert record["successes"] > 0, where
            assert record["cpu_us_per_success"] > 0, where
            assert record["db_transactions"] > 0, where
        if database == "postgresql":
            assert record["cpu_db_us"] is not None and record["cpu_db_us"] >= 0, where
    # The rushes never grant more than there is (how fast they sell out is not asserted).
    for service in ("flashsale", "baseline"):
        assert records[("coupon-rush", service)]["successes"] <= 100
        assert records[("limited-rush", service)]["successes"] <= 100
    assert {g["goal"] for g in data["goals"]}, data["goals"]


def _check_table(json_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flashsale", "bench", "http", "--table", str(json_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout
    assert table.startswith("| scenario | service | req/s |"), table
    for title in ("coupon rush", "paid orders", "hot SKU", "product page", "/healthz"):
        assert title in table, table
    assert table.count("| baseline |") == len(SCENARIO_NAMES), table
    assert "Goals:" in table, table


def test_bench_http_quick_sqlite(tmp_path: Path) -> None:
    json_path = tmp_path / "bench-http.json"
    data = _run_bench(json_path)
    _check_figures(data, "sqlite")
    _check_table(json_path)


@pytest.mark.instances  # needs PostgreSQL: runs in the PostgreSQL pass
def test_bench_http_quick_postgresql(postgres_server_url: str, tmp_path: Path) -> None:
    server_url = postgres_server_url
    before = databases_named(server_url, "flashsale_bench_")
    json_path = tmp_path / "bench-http.json"
    data = _run_bench(json_path, "--database-url", server_url)
    _check_figures(data, "postgresql")
    _check_table(json_path)
    # The scratch databases are dropped.
    assert databases_named(server_url, "flashsale_bench_") <= before
