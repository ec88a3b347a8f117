"""``/metrics`` of ``flashsale serve --workers 2``: a scrape counts every worker's requests.

Each worker is a process with its own counters and a scrape reaches one of them;
``flashsale serve`` turns on prometheus_client's multiprocess mode (a temporary
folder of per-process files, merged at scrape time) and removes the folder at exit.
The server's ``TMPDIR`` points into the test's folder so that the test can see it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from flashsale.demo.server import ServerEnv, ServerProcess

pytestmark = [pytest.mark.e2e]

LATENCY_COUNT = "flashsale_http_request_duration_seconds_count"
ROUTE = "/api/v1/products/{product_id}"
REQUESTS = 40
#: Requests at most, should the kernel hand the first 40 connections to one worker.
MAX_REQUESTS = 400
#: Seconds the per-worker files may take to show every request.
SETTLE_S = 5.0


def route_counts(text: str) -> Counter[str]:
    """Requests per route template in a Prometheus text scrape."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LATENCY_COUNT:
                counts[sample.labels["route"]] += int(sample.value)
    return counts


def per_worker_counts(folder: Path, scratch: Path) -> dict[str, int]:
    """Requests to :data:`ROUTE` per worker pid, read from each worker's own file."""
    counts: dict[str, int] = {}
    for index, path in enumerate(sorted(folder.glob("histogram_*.db"))):
        own = scratch / str(index)
        own.mkdir(parents=True)
        shutil.copy(path, own / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(own))
        pid = path.stem.removeprefix("histogram_")
        counts[pid] = route_counts(generate_latest(registry).decode())[ROUTE]
    return counts


def test_metrics_count_the_requests_of_every_worker(tmp_path: Path) -> None:
    cfg = ServerEnv.in_folder(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **cfg.env,
        "TMPDIR": str(tmp),
        "FLASHSALE_LOG_FORMAT": "json",
        "FLASHSALE_LOG_LEVEL": "info",
    }
    log_path = tmp_path / "server.log"
    made = 0
    with ServerProcess(env, workers=2, log_path=log_path) as server:
        (folder,) = tmp.glob("flashsale-metrics-*")
        # No keep-alive: every request is a new connection, which either worker may
        # accept (a kept-alive connection would stay with one worker).
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.base_url, limits=limits, timeout=30) as client:
            workers: dict[str, int] = {}
            while made < REQUESTS or (len(workers) < 2 and made < MAX_REQUESTS):
                for _ in range(REQUESTS // 2):
                    r = client.get(f"/api/v1/products/{made + 1}")
                    assert r.status_code == 404, r.text  # no products: PRODUCT_NOT_FOUND
                    made += 1
                # A worker observes a request's latency just after sending the response:
                # the last few observations may land a moment after the client has them.
                deadline = time.monotonic() + SETTLE_S
                while True:
                    scratch = tmp_path / f"scratch{made}-{time.monotonic_ns()}"
                    counts = per_worker_counts(folder, scratch)
                    if sum(counts.values()) == made or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                workers = {pid: n for pid, n in counts.items() if n}
            scrape = client.get("/metrics", headers={"X-Request-ID": "scrape-1"})
            assert scrape.headers["X-Request-ID"] == "scrape-1"
            scraped = route_counts(scrape.text)

        assert len(workers) == 2, f"one worker took all {made} requests: {workers}"
        assert sum(workers.values()) == made
        # The scrape, answered by one worker, counts the requests of both.
        assert scraped[ROUTE] == made
        others = {route for route in scraped if route not in {ROUTE, "/healthz", "/metrics"}}
        assert not others
    assert not folder.exists(), "the metrics folder outlived the server"

    # Structured logs in the workers and the parent: one JSON object per line.
    lines = [line for line in log_path.read_text().splitlines() if not line.startswith("$ ")]
    records = [json.loads(line) for line in lines]
    assert records
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    started = [r for r in records if r["message"].startswith("Started server process")]
    assert len(started) == 2  # one per worker, through uvicorn's own logger
    assert not [r for r in records if r["logger"] == "uvicorn.access"]  # access log off
