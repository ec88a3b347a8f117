"""Running ``flashsale bench http``: databases, servers, ``wrk``, figures.

Flashsale and the baseline are started once, each on its own scratch database (seeded
identically), and paused (``SIGSTOP`` of the whole process group). For each scenario,
Flashsale and then the baseline are resumed, left to settle, driven by ``wrk`` for the
scenario's duration and paused again, so the two never share the CPU. Around each
``wrk`` run the bench reads the CPU time of the server's processes and of PostgreSQL
(:mod:`~flashsale.bench.http.measure`) and the database transactions ended
(``pg_stat_database`` on PostgreSQL; on SQLite Flashsale's
``flashsale_db_transactions_total`` from ``/metrics`` and the baseline's own counts).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx

from flashsale.bench.http.baseline import (
    STATS_DIR_ENV,
    STATS_INTERVAL_S,
    read_transaction_counts,
)
from flashsale.bench.http.measure import BackendSampler, CpuMark, cpu_mark, group_cpu_us
from flashsale.bench.http.seed import Layout
from flashsale.demo.server import ServerEnv, ServerProcess, _ChildService
from flashsale.demo.transactions import PG_STATS_SETTLE_S, PgStats, TxCount, transactions_of

#: Line prefix of the JSON that ``scripts/bench.lua`` prints at the end of a run.
WRK_MARK = "FLASHSALE_BENCH "
#: After a server answers, wait until its processes use less than this share of one core
#: over :data:`SETTLE_WINDOW_S` (workers still importing, gates loading), at most
#: :data:`SETTLE_MAX_S`.
SETTLE_CPU_SHARE = 0.1
SETTLE_WINDOW_S = 0.3
SETTLE_MAX_S = 20.0
#: The two services.
FLASHSALE = "flashsale"
BASELINE = "baseline"
SERVICES = (FLASHSALE, BASELINE)


class BenchError(RuntimeError):
    """The bench could not measure: ``wrk`` missing or failing, a server not starting."""


def lua_script() -> Path:
    """Path of the ``wrk`` script shipped in the package."""
    return Path(str(files("flashsale.bench.http").joinpath("scripts", "bench.lua")))


def ensure_wrk(log: Callable[[str], None] = print) -> str:
    """The path of ``wrk``; installs Debian's package with ``apt-get`` when missing.

    Raises:
        BenchError: not installed and the installation failed (no apt-get, no root).
    """
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError("wrk is not installed and apt-get is not available: install wrk")
    sudo = [] if _is_root() else ["sudo"]
    log("wrk is missing: installing it with apt-get (Debian package wrk)")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in ([*sudo, apt, "update", "-qq"], [*sudo, apt, "install", "-y", "-qq", "wrk"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def _is_root() -> bool:
    return os.geteuid() == 0


class BaselineProcess(_ChildService):
    """The baseline service (``flashsale bench http serve-baseline``) in a child process
    group, as a context manager; see :class:`~flashsale.demo.server.ServerProcess` for
    the arguments and the lifecycle.

    Raises:
        ValueError: ``workers`` < 1.
        ServerError: from :meth:`start`, as for ``ServerProcess``.
    """

    _what = "the baseline"
    _log_prefix = "flashsale-baseline-"

    def __init__(self, env: Mapping[str, str], *, workers: int, log_path: Path) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        super().__init__(env, log_path=log_path)

    def _command(self) -> list[str]:
        return [
            "bench",
            "http",
            "serve-baseline",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]


@dataclass(frozen=True)
class Scenario:
    """One load pattern.

    Attributes:
        name: the ``--scenario`` name, e.g. ``coupon-rush``.
        title: what the table calls it.
        success: what counts as a success: ``"paid"`` (201 with a PAID order),
            ``"201"`` (a coupon issued) or ``""`` (every 200 answer: reads).
        about_running_out: the scenario sells something out on purpose (its
            successes are capped; most answers are refusals).
    """

    name: str
    title: str
    success: str
    about_running_out: bool = False

    def wrk_args(self, layout: Layout, tokens: Path) -> list[str]:
        """The script arguments (after ``--``) of the main ``wrk`` run."""
        t = str(tokens)
        if self.name == "healthz":
            return ["healthz"]
        if self.name == "paid-orders":
            return ["order", t, str(layout.first_variant), str(layout.catalog), "3"]
        if self.name == "coupon-rush":
            return ["coupon", t, str(layout.coupon_id)]
        if self.name == "limited-rush":
            return ["order", t, str(layout.limited_variant), "1", "1"]
        if self.name == "hot-sku":
            return ["order", t, str(layout.hot_variant), "1", "1"]
        if self.name == "product-page":
            return ["page", t, str(layout.page_variant)]
        raise ValueError(f"unknown scenario {self.name!r}")

    def side_args(self, layout: Layout, tokens: Path) -> list[str] | None:
        """A second ``wrk`` run beside the main one (the rush under the product page)."""
        if self.name == "product-page":
            return ["order", str(tokens), str(layout.page_variant), "1", "1"]
        return None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthz", "GET /healthz (the floor)", ""),
    Scenario("paid-orders", "paid orders (random users, 1–3 lines)", "paid"),
    Scenario("coupon-rush", "coupon rush (100 coupons)", "201", about_running_out=True),
    Scenario("limited-rush", "limited-item rush (100 units)", "paid", about_running_out=True),
    Scenario("hot-sku", "hot SKU (every order on one variant)", "paid"),
    Scenario("product-page", "product page during a rush", ""),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


@dataclass(frozen=True)
class Settings:
    """How the bench runs: ``seconds`` per scenario, ``connections`` and ``threads`` of
    ``wrk``, ``workers`` per server, and where the pieces are."""

    seconds: float
    connections: int
    threads: int
    workers: int
    postgres: bool
    wrk: str
    workdir: Path


def parse_wrk(output: str) -> dict[str, Any]:
    """The JSON line ``scripts/bench.lua`` printed.

    Raises:
        BenchError: no such line.
    """
    for line in output.splitlines():
        if line.startswith(WRK_MARK):
            data: dict[str, Any] = json.loads(line[len(WRK_MARK) :])
            return data
    raise BenchError(f"wrk printed no result line:\n{output}")


def _wrk_command(
    settings: Settings, url: str, script_args: Sequence[str], connections: int, threads: int
) -> list[str]:
    return [
        settings.wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(settings.seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua_script()),
        url,
        "--",
        *script_args,
    ]


def run_wrk(
    settings: Settings, url: str, main_args: Sequence[str], side_args: Sequence[str] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run ``wrk`` (and a second one beside it, sharing the connections and threads
    evenly) against ``url``; returns the parsed results.

    Raises:
        BenchError: ``wrk`` failed or printed no result.
    """
    if side_args is None:
        runs = [_wrk_command(settings, url, main_args, settings.connections, settings.threads)]
    else:
        connections = max(1, settings.connections // 2)
        threads = max(1, settings.threads // 2)
        runs = [
            _wrk_command(settings, url, main_args, connections, threads),
            _wrk_command(settings, url, side_args, connections, threads),
        ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in runs
    ]
    results = []
    for cmd, proc in zip(runs, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=settings.seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out}{err}")
        results.append(parse_wrk(out))
    return results[0], (results[1] if len(results) > 1 else None)


def _settle(pgrp: int) -> None:
    """Wait until the server group is nearly idle (see :data:`SETTLE_CPU_SHARE`)."""
    deadline = time.monotonic() + SETTLE_MAX_S
    before = group_cpu_us(pgrp)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_WINDOW_S)
        now = group_cpu_us(pgrp)
        if now - before < SETTLE_CPU_SHARE * SETTLE_WINDOW_S * 1e6:
            return
        before = now


def _scrape_transactions(base_url: str) -> TxCount | None:
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=10.0)
    except httpx.HTTPError:
        return None
    return transactions_of(response.text) if response.status_code == 200 else None


def successes(result: Mapping[str, Any], success: str) -> int:
    """The successes in one ``wrk`` result: PAID orders, 201s, or 200s (``success``
    ``"paid"``, ``"201"``, ``""``)."""
    statuses: Mapping[str, int] = result["statuses"]
    if success == "paid":
        return int(result["paid"])
    if success == "201":
        return int(statuses.get("201", 0))
    return int(statuses.get("200", 0))


def figures(
    scenario: Scenario,
    service: str,
    main: Mapping[str, Any],
    side: Mapping[str, Any] | None,
    cpu: tuple[CpuMark, CpuMark],
    transactions: TxCount | None,
    db_backends_us: float | None = None,
) -> dict[str, Any]:
    """The JSON record of one service in one scenario.

    Rates are per second of ``wrk``'s own duration; latencies in ms; CPU in µs (the
    server's and the database's, per request over every request of the run, the side
    run's included, and per success); ``db_transactions`` are commits + rollbacks.
    On PostgreSQL the database's CPU is ``db_backends_us`` (the backends of the
    service's database) and the whole cluster's is kept as ``cpu_db_cluster_us``.
    """
    seconds = main["duration_us"] / 1e6
    requests = int(main["requests"])
    all_requests = requests + (int(side["requests"]) if side is not None else 0)
    won = successes(main, scenario.success)
    before, after = cpu
    server_us = after.server_us - before.server_us
    cluster_us = None
    if after.db_us is not None and before.db_us is not None:
        cluster_us = after.db_us - before.db_us
    db_us = db_backends_us
    cpu_us = server_us + (db_us or 0.0)
    statuses: dict[str, int] = dict(main["statuses"])
    refused = sum(n for code, n in statuses.items() if code == "409")
    errors_5xx = sum(n for code, n in statuses.items() if code.startswith("5"))
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "service": service,
        "seconds": round(seconds, 3),
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "successes": won,
        "successes_per_s": round(won / seconds, 1),
        "refused": refused,
        "server_errors": errors_5xx,
        "p50_ms": round(main["latency_us"]["p50"] / 1000, 2),
        "p90_ms": round(main["latency_us"]["p90"] / 1000, 2),
        "p99_ms": round(main["latency_us"]["p99"] / 1000, 2),
        "statuses": statuses,
        "socket_errors": main["errors"],
        "cpu_server_us": round(server_us),
        "cpu_db_us": None if db_us is None else round(db_us),
        "cpu_db_cluster_us": None if cluster_us is None else round(cluster_us),
        "cpu_us_per_request": round(cpu_us / max(all_requests, 1), 1),
        "cpu_us_per_success": round(cpu_us / won, 1) if won else None,
        "cpu_us_per_refused": round(cpu_us / refused, 1) if refused else None,
        "db_transactions": None if transactions is None else transactions.total,
        "db_commits": None if transactions is None else transactions.commits,
        "db_tx_per_success": (
            round(transactions.total / won, 2) if transactions is not None and won else None
        ),
    }
    if side is not None:
        side_won = successes(side, "paid")
        side_seconds = side["duration_us"] / 1e6
        record["side"] = {
            "what": "limited-item rush on the same product",
            "requests": int(side["requests"]),
            "rps": round(int(side["requests"]) / side_seconds, 1),
            "successes": side_won,
            "p50_ms": round(side["latency_us"]["p50"] / 1000, 2),
            "p99_ms": round(side["latency_us"]["p99"] / 1000, 2),
            "statuses": dict(side["statuses"]),
        }
    return record


@dataclass
class Databases:
    """The two scratch databases (URLs) and, on PostgreSQL, their names and server."""

    flashsale: str
    baseline: str
    server_url: str | None = None
    names: tuple[str, str] | None = None

    def url(self, service: str) -> str:
        """The database of ``service``."""
        return self.flashsale if service == FLASHSALE else self.baseline


class Service:
    """One of the two services, started once and paused (``SIGSTOP`` of its process
    group) while the other one runs, so that an idle server costs no CPU during the
    other's measurement and no server is started per scenario.

    Args:
        name: :data:`FLASHSALE` or :data:`BASELINE`.
        settings: the bench's settings (workers, work folder).
        databases: both databases (this service's is used).
        secret: the JWT secret of the bench's tokens.
    """

    def __init__(self, name: str, settings: Settings, databases: Databases, secret: str) -> None:
        self.name = name
        self.settings = settings
        url = databases.url(name)
        log_path = settings.workdir / f"{name}.log"
        env = {"FLASHSALE_JWT_SECRET": secret, "FLASHSALE_LOG_LEVEL": "warning"}
        self.stats_dir = settings.workdir / f"{name}-stats"
        self.process: _ChildService
        if name == FLASHSALE:
            self.process = ServerProcess(
                ServerEnv.for_database(url, extra_env=env).env,
                workers=settings.workers,
                log_path=log_path,
            )
        else:
            self.stats_dir.mkdir(parents=True, exist_ok=True)
            self.process = BaselineProcess(
                {"FLASHSALE_DATABASE_URL": url, STATS_DIR_ENV: str(self.stats_dir), **env},
                workers=settings.workers,
                log_path=log_path,
            )
        self.pg: PgStats | None = None
        if databases.server_url is not None and databases.names is not None:
            self.pg = PgStats(databases.server_url, databases.names[SERVICES.index(name)])
        self._paused = False

    def start(self, warm_up: Sequence[str]) -> None:
        """Start the server, warm it up with one second of ``wrk`` (``warm_up``: script
        arguments; fills the connection pools, which would otherwise open their
        connections during the first measured run), let it settle and pause it.

        Raises:
            ServerError: the server did not start.
            BenchError: the warm-up failed.
        """
        self.process.start()
        run_wrk(replace(self.settings, seconds=1.0), self.process.base_url, warm_up, None)
        _settle(self.process.pid)
        self.pause()

    def pause(self) -> None:
        """Stop every process of the server (``SIGSTOP``)."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue the server (``SIGCONT``) and wait until it is idle again."""
        os.killpg(self.process.pid, signal.SIGCONT)
        self._paused = False
        _settle(self.process.pid)

    def stop(self) -> None:
        """Continue (a paused process cannot handle SIGTERM) and stop the server."""
        if self.process.running or self._paused:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGCONT)
        self._paused = False
        self.process.stop()
        if self.pg is not None:
            self.pg.close()

    def transactions(self) -> TxCount | None:
        """Database transactions ended so far (a counter: only differences count).

        PostgreSQL: ``pg_stat_database`` of its database, read after
        :data:`PG_STATS_SETTLE_S` (backends flush their counters about once a second).
        SQLite: Flashsale's ``/metrics``; the baseline's worker files, read after two
        of their write intervals.
        """
        if self.pg is not None:
            time.sleep(PG_STATS_SETTLE_S)
            return self.pg.read()
        if self.name == FLASHSALE:
            return _scrape_transactions(self.process.base_url)
        time.sleep(2.5 * STATS_INTERVAL_S)
        return TxCount(*read_transaction_counts(self.stats_dir))

    def log_tracebacks(self) -> int:
        """Tracebacks in the server's log so far."""
        text = self.process.log_path.read_text(encoding="utf-8", errors="replace")
        return text.count("Traceback")


def run_scenario(
    scenario: Scenario, service: Service, layout: Layout, tokens: Path
) -> dict[str, Any]:
    """Resume ``service``, drive it with ``wrk`` for the scenario, pause it again;
    returns :func:`figures` of the run.

    Raises:
        BenchError: ``wrk`` failed.
    """
    settings = service.settings
    service.resume()
    try:
        tx_before = service.transactions()
        sampler = None
        if service.pg is not None:
            sampler = BackendSampler(service.pg.database)
            sampler.start()
        cpu_before = cpu_mark(service.process.pid, postgres=settings.postgres)
        main, side = run_wrk(
            settings,
            service.process.base_url,
            scenario.wrk_args(layout, tokens),
            scenario.side_args(layout, tokens),
        )
        cpu_after = cpu_mark(service.process.pid, postgres=settings.postgres)
        db_backends_us = None if sampler is None else sampler.stop()
        # Requests still in flight when wrk stopped finish in the next resume's settle.
        tx_after = service.transactions()
    finally:
        service.pause()
    transactions = None
    if tx_before is not None and tx_after is not None:
        transactions = tx_after - tx_before
    record = figures(
        scenario, service.name, main, side, (cpu_before, cpu_after), transactions, db_backends_us
    )
    record["tracebacks"] = service.log_tracebacks()
    return record


def describe(record: Mapping[str, Any]) -> str:
    """One progress line for a finished run."""
    per_success = record["cpu_us_per_success"]
    tx = record["db_tx_per_success"]
    text = (
        f"  {record['service']:<9} {record['rps']:>9,.0f} req/s  "
        f"{record['successes']:>7,} ok  p50 {record['p50_ms']:>7.1f} ms  "
        f"p99 {record['p99_ms']:>7.1f} ms  CPU {record['cpu_us_per_request']:>6,.0f} µs/req"
    )
    if per_success is not None and record["scenario"] != "healthz":
        text += f"  {per_success:,.0f} µs/success"
    if tx is not None and record["scenario"] != "healthz":
        text += f"  {tx:.2f} tx/success"
    if record["server_errors"]:
        text += f"  {record['server_errors']} 5xx!"
    return text


def run_all(
    scenarios: Sequence[Scenario],
    settings: Settings,
    databases: Databases,
    layout: Layout,
    tokens: Path,
    secret: str,
) -> list[dict[str, Any]]:
    """Every scenario on both services (Flashsale first, then the baseline), printing
    progress; both servers are started once and stopped at the end.

    Raises:
        BenchError / ServerError: ``wrk`` or a server failed.
    """
    services = [Service(name, settings, databases, secret) for name in SERVICES]
    records = []
    try:
        warm_up = ["page", str(tokens), str(layout.first_variant)]
        for service in services:
            service.start(warm_up)
        for scenario in scenarios:
            print(f"{scenario.title} ({settings.seconds:g} s each):", flush=True)
            for service in services:
                record = run_scenario(scenario, service, layout, tokens)
                print(describe(record), flush=True)
                records.append(record)
    finally:
        for service in services:
            service.stop()
    sys.stdout.flush()
    return records
