"""A lean asyncio load driver for the Flashsale HTTP API, over one or several instances.

One shared :class:`aiohttp.ClientSession` whose connection pool is as large as the
wanted concurrency (aiohttp rather than httpx: on this 2-core machine httpx's pool
spent a whole core at ~350 req/s and became the bottleneck, aiohttp drives the
server at several thousand), a fixed pool of worker tasks (never more requests in flight than
workers), and per-scenario tallies (:class:`ScenarioStats`): status classes, error
codes from the error body, latencies in milliseconds, in total and per instance (and,
filled in by the run, the server's own latency over the scenario's window).

With several instances (base URLs) the :class:`ApiClient` sends each request to the
next one in turn (round-robin per request, not per user): the shop must behave as one,
so one user's order, payment and cancellation may land on three different instances.
"""

from __future__ import annotations

import asyncio
import itertools
import json as jsonlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from flashsale.demo.server_latency import ServerLatency

__all__ = [
    "NO_RESPONSE",
    "TIMEOUT",
    "UNANSWERED",
    "ApiClient",
    "InstanceTally",
    "Reply",
    "ScenarioStats",
    "api_client",
    "percentile",
    "run_for",
    "run_pool",
]

API_PREFIX = "/api/v1"

T = TypeVar("T")

#: Pseudo error code of a request that got no HTTP answer (connection refused/reset...).
NO_RESPONSE = "NO_RESPONSE"
#: Pseudo error code of a request that got no answer within the client timeout.
TIMEOUT = "TIMEOUT"
#: The pseudo codes of unanswered requests.
UNANSWERED = frozenset({NO_RESPONSE, TIMEOUT})


@dataclass(slots=True)
class Reply:
    """One request's outcome.

    Attributes:
        status: HTTP status, or 0 when no answer came (then ``code`` says why).
        code: ``""`` for a 2xx answer; otherwise the error body's ``code`` (e.g.
            ``"OUT_OF_STOCK"``), ``"HTTP_<status>"`` when the body has none, or
            :data:`NO_RESPONSE` / :data:`TIMEOUT`.
        body: the decoded JSON body (``None`` when absent or not JSON); for an
            unanswered request, the ``repr`` of the transport exception.
        latency_ms: wall time from send to the full answer, in milliseconds.
        replayed: the answer carried ``Idempotent-Replayed: true``: the server replayed
            the stored response of an earlier request with the same ``Idempotency-Key``.
        instance: index of the instance (base URL of the :class:`ApiClient`) the
            request was sent to; 0 with a single instance.
    """

    status: int
    code: str
    body: Any
    latency_ms: float
    replayed: bool = False
    instance: int = 0

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def json_dict(self) -> dict[str, Any]:
        """The body as a JSON object (``{}`` when it is not one)."""
        return self.body if isinstance(self.body, dict) else {}


def _count(tally: InstanceTally | ScenarioStats, reply: Reply) -> None:
    """Requests, statuses, latency, successes and error codes: what every tally counts."""
    tally.requests += 1
    tally.statuses[reply.status] += 1
    if reply.status:
        tally.latencies_ms.append(reply.latency_ms)
    if reply.ok:
        tally.successes += 1
    else:
        tally.codes[reply.code] += 1


@dataclass
class InstanceTally:
    """One instance's share of a scenario: what :class:`ScenarioStats` counts, for the
    requests sent to that instance.

    Attributes:
        requests: requests sent to it (answered or not).
        successes: its 2xx answers.
        statuses: HTTP status -> count (0: no answer).
        codes: error code -> count, for every non-2xx outcome.
        latencies_ms: latency of every answered request, in milliseconds.
    """

    requests: int = 0
    successes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, reply: Reply) -> None:
        """Count one request's outcome."""
        _count(self, reply)

    def latency(self, pct: float) -> float:
        """The ``pct``-th percentile latency in milliseconds (0.0 when nothing answered)."""
        return percentile(self.latencies_ms, pct)


@dataclass
class ScenarioStats:
    """Tallies of one scenario (or phase) of the demo.

    Attributes:
        name: human name, e.g. ``"coupon rush"``.
        expected_codes: error codes that are a correct answer in this scenario (e.g.
            ``COUPON_SOLD_OUT`` in a coupon rush); any other is "unexpected".
        requests: requests sent (answered or not).
        successes: 2xx answers.
        codes: error code -> count, for every non-2xx outcome (including the pseudo
            codes of unanswered requests).
        server_errors: 5xx answers.
        latencies_ms: latency of every answered request, in milliseconds.
        started / finished: ``time.perf_counter()`` marks around the scenario, seconds.
        notes: free-form findings of the scenario's own checks (each one is a failure).
        transport_errors: the distinct transport exceptions of unanswered requests
            (at most a few, for the report).
        by_instance: instance index -> its share of the requests (see
            :attr:`Reply.instance`).
        statuses: HTTP status -> count over all instances (0: no answer).
        server: the server-side latency of the window the scenario ran in (the
            instances' own request histogram; None: not measured). Scenarios that run
            at the same time share one window, and so one object.
    """

    name: str
    expected_codes: frozenset[str] = frozenset()
    requests: int = 0
    successes: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    notes: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    by_instance: dict[int, InstanceTally] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    server: ServerLatency | None = None

    def record(self, reply: Reply) -> None:
        """Count one request's outcome (in total and for the instance it was sent to)."""
        tally = self.by_instance.get(reply.instance)
        if tally is None:
            tally = self.by_instance[reply.instance] = InstanceTally()
        tally.record(reply)
        _count(self, reply)
        if reply.status >= 500:
            self.server_errors += 1
        if (
            not reply.status
            and len(self.transport_errors) < 5
            and str(reply.body) not in self.transport_errors
        ):
            self.transport_errors.append(str(reply.body))

    def start(self) -> None:
        """Mark the start of the scenario."""
        self.started = time.perf_counter()

    def finish(self) -> None:
        """Mark the end of the scenario."""
        self.finished = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall time of the scenario, in seconds."""
        return max(self.finished - self.started, 1e-9)

    @property
    def throughput(self) -> float:
        """Requests per second over the scenario's wall time."""
        return self.requests / self.seconds if self.finished else 0.0

    @property
    def unanswered(self) -> int:
        """Requests that got no HTTP answer (no response or timeout)."""
        return sum(self.codes[c] for c in UNANSWERED)

    @property
    def unexpected_codes(self) -> dict[str, int]:
        """Error codes that are neither expected here nor an unanswered request."""
        return {
            code: n
            for code, n in self.codes.items()
            if code not in self.expected_codes and code not in UNANSWERED
        }

    def latency(self, pct: float) -> float:
        """The ``pct``-th percentile latency in milliseconds (0.0 when nothing answered)."""
        return percentile(self.latencies_ms, pct)

    @property
    def problems(self) -> list[str]:
        """Why this scenario failed (empty when it is clean)."""
        out: list[str] = []
        if self.server_errors:
            out.append(f"{self.name}: {self.server_errors} server errors (5xx)")
        if self.unanswered:
            seen = "; ".join(self.transport_errors)
            out.append(f"{self.name}: {self.unanswered} requests got no answer ({seen})")
        unexpected = self.unexpected_codes
        if unexpected:
            listed = ", ".join(f"{c} x{n}" for c, n in sorted(unexpected.items()))
            out.append(f"{self.name}: unexpected error codes: {listed}")
        out.extend(f"{self.name}: {note}" for note in self.notes)
        return out


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (``pct`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class ApiClient:
    """Async client of ``<base_url>/api/v1`` on one or several instances of the service;
    never raises for HTTP or transport errors.

    Each :meth:`request` goes to the next instance in turn (round-robin), unless it
    names one (``instance=``); its :class:`Reply` says which one answered.

    Args:
        base_urls: server root(s), e.g. ``http://127.0.0.1:8000``; every instance must
            serve the same shop (same database, same JWT secret).
        max_connections: size of the connection pool over all instances (the wanted
            concurrency).
        timeout: seconds before a request counts as :data:`TIMEOUT`.

    Raises:
        ValueError: no base URL.
    """

    def __init__(
        self, base_urls: str | Sequence[str], *, max_connections: int, timeout: float = 30.0
    ) -> None:
        roots = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not roots:
            raise ValueError("ApiClient needs at least one base URL")
        #: The instances' roots (no trailing slash, no API prefix), in instance order.
        self.server_urls: tuple[str, ...] = tuple(url.rstrip("/") for url in roots)
        self._api_urls = [url + API_PREFIX for url in self.server_urls]
        self._turn = itertools.count()
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            # Below uvicorn's 5 s keep-alive, so a pooled connection is never reused
            # just as the server closes it.
            keepalive_timeout=2.0,
        )
        self.http = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    @property
    def instances(self) -> int:
        """Number of instances the requests are spread over."""
        return len(self.server_urls)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        stats: ScenarioStats | None = None,
        instance: int | None = None,
    ) -> Reply:
        """Send one request under the API prefix and return its :class:`Reply`.

        ``path`` is relative to ``/api/v1`` (e.g. ``"/orders"``). It goes to instance
        ``instance`` (an index into :attr:`server_urls`) or, by default, to the next
        instance in turn. When ``stats`` is given the outcome is counted there.
        """
        if instance is None:
            instance = next(self._turn) % len(self._api_urls)
        start = time.perf_counter()
        try:
            async with self.http.request(
                method,
                self._api_urls[instance] + path,
                headers=headers,
                json=json,
                data=data,
                params=params,
            ) as response:
                raw = await response.read()
                status = response.status
                replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        except TimeoutError as exc:
            reply = Reply(
                0, TIMEOUT, repr(exc), (time.perf_counter() - start) * 1000.0, instance=instance
            )
        except aiohttp.ClientError as exc:
            reply = Reply(
                0, NO_RESPONSE, repr(exc), (time.perf_counter() - start) * 1000.0, instance=instance
            )
        else:
            latency = (time.perf_counter() - start) * 1000.0
            try:
                body: Any = jsonlib.loads(raw) if raw else None
            except ValueError:
                body = None
            if 200 <= status < 300:
                code = ""
            elif isinstance(body, dict) and isinstance(body.get("code"), str):
                code = body["code"]
            else:
                code = f"HTTP_{status}"
            reply = Reply(status, code, body, latency, replayed, instance)
        if stats is not None:
            stats.record(reply)
        return reply

    async def fetch(self, url: str, *, params: Mapping[str, str | int] | None = None) -> Reply:
        """``GET`` an absolute ``url`` (outside the API prefix, e.g. ``/metrics`` or the
        data-platform stand-in); never raises.

        The :class:`Reply`'s ``body`` is the decoded JSON when the answer is JSON, else
        its text (e.g. the Prometheus exposition); ``code`` is as for :meth:`request`.
        """
        start = time.perf_counter()
        try:
            async with self.http.get(url, params=params) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError as exc:
            return Reply(0, TIMEOUT, repr(exc), (time.perf_counter() - start) * 1000.0)
        except aiohttp.ClientError as exc:
            return Reply(0, NO_RESPONSE, repr(exc), (time.perf_counter() - start) * 1000.0)
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = jsonlib.loads(text) if text else None
        except ValueError:
            body = text
        code = "" if 200 <= status < 300 else f"HTTP_{status}"
        return Reply(status, code, body, (time.perf_counter() - start) * 1000.0)

    async def scrape_metrics(self) -> list[str | None]:
        """``GET /metrics`` of every instance, one after another, in instance order: the
        Prometheus text exposition of each (None for an instance that did not answer
        200 with text); never raises."""
        texts: list[str | None] = []
        for url in self.server_urls:
            reply = await self.fetch(f"{url}/metrics")
            texts.append(reply.body if reply.ok and isinstance(reply.body, str) else None)
        return texts


@asynccontextmanager
async def api_client(
    base_urls: str | Sequence[str], *, max_connections: int, request_timeout: float = 30.0
) -> AsyncIterator[ApiClient]:
    """An :class:`ApiClient` over ``base_urls`` closed on exit (``request_timeout`` in
    seconds)."""
    client = ApiClient(base_urls, max_connections=max_connections, timeout=request_timeout)
    try:
        yield client
    finally:
        await client.aclose()


async def run_pool(
    items: Iterable[T],
    job: Callable[[T], Awaitable[None]],
    *,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Run ``job(item)`` for every item with at most ``concurrency`` running at once.

    A fixed set of worker tasks pulls from one iterator, so a flash crowd of N users
    costs ``concurrency`` tasks, not N. ``on_done`` is called after each job (progress).
    The first exception of a job cancels the others and is raised.
    """
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await job(item)
            if on_done is not None:
                on_done()

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, concurrency)):
            group.create_task(worker())


async def run_for(
    seconds: float,
    step: Callable[[], Awaitable[None]],
    *,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Call ``step()`` in ``concurrency`` loops until ``seconds`` have passed.

    A step started before the deadline is finished, never cut.
    """
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await step()
            if on_done is not None:
                on_done()

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, concurrency)):
            group.create_task(worker())
