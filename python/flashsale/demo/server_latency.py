"""Server-side latency of a rush: the service's own request histogram, per window.

Every instance observes each HTTP request in the histogram
``flashsale_http_request_duration_seconds{method,route,status}``
(:data:`flashsale.metrics.REQUEST_LATENCY`, buckets
:data:`flashsale.metrics.LATENCY_BUCKETS`; merged over the worker processes of an
instance): from the request reaching the application to the last byte of its answer
sent. :class:`~flashsale.demo.transactions.TransactionProbe` scrapes ``GET /metrics``
of every instance before and after each rush; the difference of the cumulative bucket
counts (:func:`latency_histogram_of` on each scrape, then :meth:`LatencyHistogram.since`)
is the rush's histogram, and :func:`histogram_quantile` estimates its percentiles the
way Prometheus' ``histogram_quantile`` does.

Which requests: every route under ``/api/`` (:data:`API_ROUTE_PREFIX`), i.e. every
request the demo's load client sends in the window -- not the ``/metrics`` scrapes
themselves, nor unmatched paths.

Resolution: a percentile is only known to lie in its bucket (bounds about x2.5 apart:
1, 2.5, 5, 10, 25, 50, 100, 250 ms ...); the estimate interpolates linearly inside it,
as if the bucket's requests were spread evenly. A percentile above the highest finite
bound (10 s) is reported as that bound.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "API_ROUTE_PREFIX",
    "LATENCY_METRIC",
    "LatencyHistogram",
    "ServerLatency",
    "histogram_quantile",
    "latency_histogram_of",
]

#: The service's request latency histogram on ``/metrics`` (seconds).
LATENCY_METRIC = "flashsale_http_request_duration_seconds"
#: Route templates counted: the API's (what the load client drives).
API_ROUTE_PREFIX = "/api/"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q``-quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Args:
        q: the quantile, 0 ≤ q ≤ 1 (0.99 for p99).
        buckets: ``(upper bound, cumulative count)`` in increasing bound order, the
            last bound ``+Inf`` (its count is the number of observations).

    Returns:
        The estimate, in the unit of the bounds (seconds here): the bucket holding the
        quantile's rank is found and the value interpolated linearly between its lower
        bound (the previous bucket's upper bound; 0 for the first bucket) and its upper
        bound. A rank in the ``+Inf`` bucket gives the highest finite bound. None when
        the histogram holds no observation.

    Raises:
        ValueError: ``q`` outside [0, 1], fewer than two buckets, the last bound not
            ``+Inf``, or bounds not increasing.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        raise ValueError("a histogram needs at least one finite bucket and the +Inf bucket")
    bounds = [bound for bound, _ in buckets]
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"bucket bounds must increase: {bounds}")
    observations = buckets[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    # The first bucket whose cumulative count reaches the rank; for q = 0 the first
    # non-empty one (Prometheus would divide 0 by 0 on a leading empty bucket).
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank and count > 0)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    return lower + (upper - lower) * (rank - below) / (count - below)


@dataclass(frozen=True)
class LatencyHistogram:
    """A cumulative latency histogram (a scrape, or the difference of two).

    Attributes:
        bounds: bucket upper bounds in seconds, increasing, the last ``+Inf``; empty
            when the service has no series yet (nothing observed).
        counts: cumulative count of requests at or below each bound (the last: all).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def requests(self) -> int:
        """Requests observed (the ``+Inf`` bucket)."""
        return self.counts[-1] if self.counts else 0

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile in seconds (see :func:`histogram_quantile`); None when empty.

        Raises:
            ValueError: ``q`` outside [0, 1], or a malformed histogram.
        """
        if not self.bounds:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q}")
            return None
        return histogram_quantile(q, list(zip(self.bounds, self.counts, strict=True)))

    def latency(self, pct: float) -> float | None:
        """The ``pct``-th percentile (0..100) in milliseconds; None when empty.

        Raises:
            ValueError: ``pct`` outside [0, 100], or a malformed histogram.
        """
        seconds = self.quantile(pct / 100.0)
        return None if seconds is None else seconds * 1000.0

    def since(self, before: LatencyHistogram) -> LatencyHistogram | None:
        """What was observed after ``before`` (an earlier scrape of the same instance);
        None when the two do not compare (other bounds, or a count went down: the
        instance restarted in between)."""
        if not before.bounds:  # nothing was observed before
            return self
        if before.bounds != self.bounds:
            return None
        counts = tuple(a - b for a, b in zip(self.counts, before.counts, strict=True))
        if any(c < 0 for c in counts):
            return None
        return LatencyHistogram(self.bounds, counts)

    @classmethod
    def sum(cls, histograms: Sequence[LatencyHistogram | None]) -> Self | None:
        """The sum of ``histograms`` (e.g. over instances); None when any is unknown,
        their bounds differ, or there are none."""
        if not histograms or any(h is None for h in histograms):
            return None
        known = [h for h in histograms if h is not None and h.bounds]
        if not known:
            return cls((), ())
        bounds = known[0].bounds
        if any(h.bounds != bounds for h in known):
            return None
        columns = zip(*(h.counts for h in known), strict=True)
        return cls(bounds, tuple(sum(column) for column in columns))


def latency_histogram_of(
    metrics_text: str, route_prefix: str = API_ROUTE_PREFIX
) -> LatencyHistogram | None:
    """:data:`LATENCY_METRIC` in a Prometheus text exposition, summed over methods,
    statuses and the routes whose template starts with ``route_prefix``.

    Returns None when the exposition has no such histogram, or it cannot be parsed. A
    histogram whose counts are all 0 when no matching route has been observed yet (and
    one without bounds when no request at all has been).
    """
    by_bound: dict[float, float] = {}
    found = False
    try:
        for family in text_string_to_metric_families(metrics_text):
            if family.name != LATENCY_METRIC or family.type != "histogram":
                continue
            found = True
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                bound = float(sample.labels["le"])
                # Every label set has every bound, so other routes still tell the bounds.
                matches = sample.labels.get("route", "").startswith(route_prefix)
                by_bound[bound] = by_bound.get(bound, 0.0) + (sample.value if matches else 0.0)
    except (ValueError, KeyError):  # a malformed exposition: this scrape is unknown
        return None
    if not found:
        return None
    if not by_bound:
        return LatencyHistogram((), ())
    bounds = tuple(sorted(by_bound))
    if not math.isinf(bounds[-1]):
        return None
    return LatencyHistogram(bounds, tuple(round(by_bound[b]) for b in bounds))


@dataclass
class ServerLatency:
    """Server-side latency of one window (a rush): the growth of :data:`LATENCY_METRIC`
    on every instance between the two scrapes around it.

    Attributes:
        window: the window's name, e.g. ``"shopping + expiry release"`` (several
            scenarios running at once share one window).
        instances: per instance, its histogram of the window (None: a scrape failed, or
            the instance's counts went down).
    """

    window: str
    instances: list[LatencyHistogram | None]

    @property
    def total(self) -> LatencyHistogram | None:
        """Over all instances (None when any instance is unknown)."""
        return LatencyHistogram.sum(self.instances)

    def latency(self, pct: float, instance: int | None = None) -> float | None:
        """The ``pct``-th percentile (0..100) in milliseconds over all instances, or of
        instance ``instance``; None when unknown or when no request was observed."""
        if instance is None:
            histogram = self.total
        else:
            histogram = self.instances[instance] if instance < len(self.instances) else None
        return None if histogram is None else histogram.latency(pct)

    @property
    def requests(self) -> int | None:
        """Requests the instances observed in the window (None when unknown)."""
        total = self.total
        return None if total is None else total.requests
