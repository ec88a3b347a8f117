"""The demo's server-side latency: histogram differences of two ``/metrics`` scrapes and
percentiles estimated as Prometheus' ``histogram_quantile`` does (linear inside the
bucket, the +Inf bucket giving the highest finite bound), and how the report shows them."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from flashsale.demo.client import ScenarioStats
from flashsale.demo.report import DemoResult, format_report
from flashsale.demo.server_latency import (
    LATENCY_METRIC,
    LatencyHistogram,
    ServerLatency,
    histogram_quantile,
    latency_histogram_of,
)
from flashsale.metrics import LATENCY_BUCKETS

INF = math.inf
# 10 requests ≤ 0.1 s, 20 in (0.1, 0.2], 10 in (0.2, 0.5], none above.
BUCKETS = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.25, 0.1),  # rank 10: the top of the first bucket
        (0.5, 0.15),  # rank 20: 10 of the 20 in (0.1, 0.2]
        (0.99, 0.488),  # rank 39.6: 9.6 of the 10 in (0.2, 0.5]
        (1.0, 0.5),  # rank 40: the top of the last non-empty finite bucket
        (0.0, 0.0),  # the lower bound of the first non-empty bucket
    ],
)
def test_quantile_interpolates_linearly_inside_the_bucket(q: float, expected: float) -> None:
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_first_bucket_starts_at_zero_and_empty_leading_buckets_are_skipped() -> None:
    # 4 requests in (0.1, 0.2]: p50 is rank 2, half-way through that bucket.
    assert histogram_quantile(0.5, [(0.1, 0.0), (0.2, 4.0), (INF, 4.0)]) == pytest.approx(0.15)
    assert histogram_quantile(0.5, [(0.1, 4.0), (INF, 4.0)]) == pytest.approx(0.05)


def test_a_rank_in_the_inf_bucket_gives_the_highest_finite_bound() -> None:
    # 10 of 100 requests above 0.5 s: p95 and p99 fall in +Inf, p50 does not.
    buckets = [(0.1, 50.0), (0.5, 90.0), (INF, 100.0)]
    assert histogram_quantile(0.99, buckets) == 0.5
    assert histogram_quantile(0.95, buckets) == 0.5
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)


def test_no_observation_gives_none() -> None:
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert LatencyHistogram((0.1, INF), (0, 0)).latency(99) is None
    assert LatencyHistogram((), ()).latency(50) is None  # no series at all yet


@pytest.mark.parametrize(
    ("q", "buckets"),
    [
        (1.5, BUCKETS),
        (-0.1, BUCKETS),
        (0.5, [(INF, 3.0)]),  # no finite bucket
        (0.5, [(0.1, 1.0), (0.2, 3.0)]),  # no +Inf bucket
        (0.5, [(0.2, 1.0), (0.1, 2.0), (INF, 3.0)]),  # bounds not increasing
    ],
)
def test_malformed_input_is_refused(q: float, buckets: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        histogram_quantile(q, buckets)


def _exposition(observations: list[tuple[str, float]]) -> str:
    """A /metrics text holding the service's histogram after ``(route, seconds)`` requests."""
    registry = CollectorRegistry()
    histogram = Histogram(
        LATENCY_METRIC,
        "latency",
        ("method", "route", "status"),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for route, seconds in observations:
        histogram.labels("POST", route, "201").observe(seconds)
    return generate_latest(registry).decode()


def test_window_is_the_difference_of_two_scrapes_over_api_routes() -> None:
    earlier = [("/api/v1/orders", 3.0)] * 5 + [("/metrics", 0.002)]
    window = [("/api/v1/orders", 0.003)] * 6 + [("/api/v1/coupons/{coupon_id}/issue", 0.03)] * 2
    before = latency_histogram_of(_exposition(earlier))
    after = latency_histogram_of(_exposition(earlier + window + [("/metrics", 0.002)] * 3))
    assert before is not None and after is not None
    delta = after.since(before)
    assert delta is not None
    assert delta.requests == 8  # the /metrics scrapes are not counted
    assert delta.bounds == (*LATENCY_BUCKETS, INF)
    # p50: rank 4 of the 6 in (2.5, 5] ms -> 2.5 + 2.5 * 4/6 ms
    assert delta.latency(50) == pytest.approx(2.5 + 2.5 * 4 / 6)
    # p99: rank 7.92, 1.92 of the 2 in (25, 50] ms
    assert delta.latency(99) == pytest.approx(25 + 25 * 1.92 / 2)


def test_a_slow_tail_beyond_ten_seconds_reads_as_ten_seconds() -> None:
    after = latency_histogram_of(
        _exposition([("/api/v1/orders", 0.004)] * 9 + [("/api/v1/orders", 30.0)])
    )
    assert after is not None
    assert after.latency(99) == pytest.approx(10_000.0)


def test_scrapes_without_the_histogram_or_before_any_request() -> None:
    assert latency_histogram_of('flashsale_db_transactions_total{outcome="commit"} 3.0\n') is None
    empty = latency_histogram_of(_exposition([]))  # the family, with no series yet
    assert empty == LatencyHistogram((), ())
    later = latency_histogram_of(_exposition([("/api/v1/orders", 0.02)]))
    assert later is not None
    assert later.since(empty) == later
    # Only other routes observed: the bounds are known, the counts 0.
    only_metrics = latency_histogram_of(_exposition([("/metrics", 0.002)]))
    assert only_metrics is not None and only_metrics.requests == 0
    assert only_metrics.latency(50) is None


def test_instances_are_summed_and_an_unknown_or_restarted_one_makes_the_total_unknown() -> None:
    bounds = (0.1, 0.2, INF)
    first = LatencyHistogram(bounds, (1, 2, 2))
    second = LatencyHistogram(bounds, (0, 4, 6))
    assert LatencyHistogram.sum([first, second]) == LatencyHistogram(bounds, (1, 6, 8))
    server = ServerLatency("rush", [first, second])
    assert server.requests == 8
    assert server.latency(50, instance=0) == pytest.approx(100.0)  # rank 1: top of (0, 0.1]
    assert ServerLatency("rush", [first, None]).latency(50) is None
    assert ServerLatency("rush", [first, None]).latency(50, instance=0) is not None
    assert first.since(second) is None  # counts went down: the instance restarted
    assert first.since(LatencyHistogram((0.5, INF), (0, 0))) is None  # other bounds


def _scenario(name: str, server: ServerLatency | None) -> ScenarioStats:
    stats = ScenarioStats(name, server=server)
    stats.requests = stats.successes = 1
    stats.latencies_ms.append(12.0)
    stats.started, stats.finished = 1.0, 2.0
    return stats


def test_report_shows_server_columns_the_shared_window_and_the_note() -> None:
    bounds = (*LATENCY_BUCKETS, INF)
    busy = ServerLatency("rush", [LatencyHistogram(bounds, (0, 0, 4) + (4,) * 11)])
    idle = ServerLatency("quiet", [LatencyHistogram(bounds, (0,) * 14)])
    result = DemoResult(users=1, concurrency=1, workers=1, seconds=1.0, seed=1, cpus=2)
    result.scenarios = [
        _scenario("rush", busy),
        _scenario("quiet", idle),
        _scenario("alongside", idle),
    ]
    report = format_report(result)
    assert re.search(r"client p50 ms +client p95 ms +client p99 ms +server p50 ms +server p95 ms "
                     r"+server p99 ms", report), report  # fmt: skip
    # 4 requests in (2.5, 5] ms: p50 at 3.75 ms.
    assert re.search(r"^rush +1 +1 +12\.0 +12\.0 +12\.0 +3\.8 +4\.9 +5\.0 ", report, re.M), report
    assert re.search(r"^quiet +1 +1 +12\.0 +12\.0 +12\.0 +- +- +- ", report, re.M), report
    assert re.search(r'^alongside +1 +1 +12\.0 +12\.0 +12\.0 +" +" +" ', report, re.M), report
    assert "alongside ran at the same time as quiet" in report, report
    assert (
        "a Python (aiohttp) program on the same machine as the servers, sharing its 2 cores"
        in report
    )
    assert "interpolated linearly within buckets" in report, report
    assert (
        "(bucket bounds 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 ms)" in report
    )
