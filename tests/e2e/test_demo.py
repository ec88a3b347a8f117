"""``flashsale demo`` end to end, small: it must pass its own checks and the audit, on the
embedded default and on PostgreSQL with several instances (scratch database dropped)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flashsale.db.provision import databases_named

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _number(pattern: str, report: str) -> list[int]:
    """The integers captured by ``pattern`` in the report (thousands separators dropped)."""
    match = re.search(pattern, report)
    assert match, f"{pattern!r} not in the report:\n{report}"
    return [int(group.replace(",", "")) for group in match.groups()]


def test_demo_runs_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flashsale", "demo", "--users", "300", "--concurrency", "50",
         "--seconds", "3", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    report = proc.stdout
    for scenario in ("coupon rush", "limited rush", "shopping", "expiry release"):
        assert scenario in report, report
    assert "Coupons issued:       100 of 100" in report, report
    assert "Limited units sold:   100 of 100 (stock left 0)" in report, report
    assert "Top 5 popular products" in report, report

    # Server-side latency beside the client's, and what each includes. Expiry release runs
    # alongside shopping: its server cells are ditto marks for shopping's window.
    assert re.search(r"client p50 ms +client p95 ms +client p99 ms +server p50 ms +server p95 ms "
                     r"+server p99 ms +req/s", report), report  # fmt: skip
    assert "a Python (aiohttp) program on the same machine as the servers, sharing its" in report
    assert "so a client latency includes the client's own queueing" in report, report
    assert "flashsale_http_request_duration_seconds" in report, report
    assert "values are interpolated linearly within buckets" in report, report
    for scenario in ("coupon rush", "limited rush", "shopping"):
        row = re.search(
            rf"^{scenario} +([\d,]+) +[\d,]+ +[\d.]+ +[\d.]+ +[\d.]+ +([\d.]+) +([\d.]+) "
            r"+([\d.]+) ",
            report,
            re.M,
        )
        assert row, f"{scenario}: no server-side figures\n{report}"
        requests, p50, p95, p99 = (float(g.replace(",", "")) for g in row.groups())
        assert requests > 0 and p50 <= p95 <= p99, report
    assert re.search(r'^expiry release +[\d,]+ +[\d,]+ +[\d.]+ +[\d.]+ +[\d.]+ +" +" +" ',
                     report, re.M), report  # fmt: skip

    # The order lifecycle: the flash deal was held, released by expiry and sold again;
    # every retry was answered by a replay; no order exists that the demo did not create.
    assert re.search(
        r"Flash deal: +50 units held by \d+ pending orders \(stock 0 while held, one more "
        r"order refused OUT_OF_STOCK\), "
        r"back [\d.]+ s after the deadline, 50 sold again \(stock 0\)",
        report,
    ), report
    keyed, replays = _number(
        r"Idempotent retries: +([\d,]+) POSTs sent again with the same key: "
        r"([\d,]+) retries answered by replay",
        report,
    )
    assert keyed == replays > 0, report
    stored, seen = _number(r"Orders stored: +([\d,]+), the demo saw ([\d,]+) created", report)
    assert stored == seen > 0, report

    # The data platform failed deliveries on purpose, yet holds one copy of every event.
    delivered, written, copies = _number(
        r"Events delivered: +([\d,]+) of ([\d,]+) written; stored ([\d,]+), one copy each, "
        r"ids equal the outbox's",
        report,
    )
    assert delivered == written == copies > 0, report
    (retried,) = _number(r"Delivery attempts: +[\d,]+ \(([\d,]+) failed and retried", report)
    assert retried > 0, report
    assert re.search(r"Relay caught up: +[\d.]+ s after the traffic stopped", report), report

    assert "Audit: OK" in report, report
    assert "[ ok ] 5.ranking" in report, report
    assert "Result: PASS" in report, report


@pytest.mark.instances
def test_demo_on_postgresql_with_two_instances(postgres_server_url: str) -> None:
    before = databases_named(postgres_server_url, "flashsale_demo_")
    proc = subprocess.run(
        [sys.executable, "-m", "flashsale", "demo", "--database-url", postgres_server_url,
         "--instances", "2", "--users", "300", "--concurrency", "50", "--seconds", "3",
         "--seed", "7", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    # Dropped whatever the outcome: no scratch database is left on the server.
    assert databases_named(postgres_server_url, "flashsale_demo_") <= before, output
    assert proc.returncode == 0, output
    report = proc.stdout
    match = re.search(r"scratch database (flashsale_demo_[0-9a-f]+) \(dropped at the end\)", report)
    assert match, report
    assert match.group(1) not in databases_named(postgres_server_url, "flashsale_demo_")
    assert "2 instances x 1 server worker" in report, report
    assert re.search(r"Instances \(.*\): 1 http://127\.0\.0\.1:\d+, 2 http://127\.0\.0\.1:\d+$",
                     report, re.M), report  # fmt: skip

    # Per scenario a total row, then one row per instance that sums to it.
    for scenario in ("coupon rush", "limited rush", "shopping", "expiry release"):
        rows = re.search(
            rf"^{scenario} +([\d,]+) .*\n  instance 1 +([\d,]+) .*\n  instance 2 +([\d,]+) ",
            report,
            re.M,
        )
        assert rows, f"{scenario}: no per-instance rows\n{report}"
        total, first, second = (int(g.replace(",", "")) for g in rows.groups())
        assert first + second == total and first > 0 and second > 0, report

    # Database transactions per success, per rush: every issued coupon and every order
    # placed is in a commit (shared with others: group commit); the per-instance rows
    # follow; pg_stat cross-checks.
    for rush, unit in (("coupon rush", "coupon"), ("limited rush", "order"),
                       ("shopping \\+ expiry release", "order")):  # fmt: skip
        rows = re.search(
            rf"^{rush} +([\d,]+) {unit}s +[\d.]+ +[\d,]+ +[\d,]+ +([\d.]+) +([\d.]+) +([\d.]+)"
            rf"\n  instance 1 +[\d,]+ {unit}s? .*\n  instance 2 +[\d,]+ {unit}s? ",
            report,
            re.M,
        )
        assert rows, f"{rush}: no transactions per success\n{report}"
        successes = int(rows.group(1).replace(",", ""))
        per_success, commits_per_success, pg_per_success = map(float, rows.groups()[1:])
        assert successes > 0, report
        # (tx/success has one decimal, commits/success two). Group commit: winners share
        # commits, so a success may cost less than one; every success is in one.
        assert per_success + 0.05 >= commits_per_success > 0, report
        assert pg_per_success > 0, report
    assert "Coupons issued:       100 of 100" in report, report
    assert "Limited units sold:   100 of 100 (stock left 0)" in report, report
    stored, seen = _number(r"Orders stored: +([\d,]+), the demo saw ([\d,]+) created", report)
    assert stored == seen > 0, report
    assert "Audit: OK" in report, report
    assert "[ ok ] 5.ranking" in report, report
    assert "Result: PASS" in report, report


def _children(pid: int) -> list[int]:
    """Pids of the direct children of ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_the_server_and_the_data_platform() -> None:
    # Through exec, so that SIGINT is handled even when this test runs with SIGINT
    # ignored (a background job): Python then raises KeyboardInterrupt as on Ctrl-C.
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, '-m', 'flashsale', 'demo', '--users', "
        "'50', '--concurrency', '10', '--seconds', '3', '--seed', '7', '--no-progress'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Both children are session leaders: their pids are their process groups.
        deadline = time.monotonic() + 120
        groups: list[int] = []
        while len(groups) < 2 and proc.poll() is None and time.monotonic() < deadline:
            groups = _children(proc.pid)
            time.sleep(0.1)
        assert len(groups) == 2, f"the demo did not start both processes: {groups}"
        time.sleep(2.0)  # into seeding: the interrupt lands in the asyncio run
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "Interrupted: the server and the data platform were stopped." in output, output
    assert not [g for g in groups if _group_alive(g)], f"left running: {groups}"
