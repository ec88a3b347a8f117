"""``X-Request-ID``, structured logs and ``/metrics`` (docs/operations.md).

Metrics live in the process-wide default registry, shared by every test of the
session, so the metric tests compare a scrape before and after the requests.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flashsale.api.observability import (
    REQUEST_ID,
    RequestIdFilter,
    configure_logging,
    install_observability,
)

from .support import Api, expect, iso, utc

pytestmark = pytest.mark.anyio

LATENCY_COUNT = "flashsale_http_request_duration_seconds_count"
HEX_ID = re.compile(r"[0-9a-f]{32}")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """``GET /metrics`` parsed: ``(sample name, labels) -> value``."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# -- X-Request-ID ---------------------------------------------------------------------


async def test_request_id_is_echoed(api: Api) -> None:
    for given in ("abc-123", "A.b_c-9", "x" * 128):
        r = await api.client.get("/healthz", headers={"X-Request-ID": given})
        assert r.status_code == 200
        assert r.headers["X-Request-ID"] == given


async def test_request_id_is_echoed_on_errors(api: Api) -> None:
    r = await api.client.get("/api/v1/coupons/999999", headers={"X-Request-ID": "req-404"})
    expect(r, 404, "COUPON_NOT_FOUND")
    assert r.headers["X-Request-ID"] == "req-404"
    r = await api.client.get("/no/such/path", headers={"X-Request-ID": "req-unmatched"})
    assert (r.status_code, r.headers["X-Request-ID"]) == (404, "req-unmatched")


@pytest.mark.parametrize("given", [None, "", "has space", "semi;colon", "é".encode(), "x" * 129])
async def test_request_id_is_generated_when_absent_or_invalid(
    api: Api, given: str | bytes | None
) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    first = (await api.client.get("/healthz", headers=headers)).headers["X-Request-ID"]
    second = (await api.client.get("/healthz", headers=headers)).headers["X-Request-ID"]
    assert HEX_ID.fullmatch(first) and HEX_ID.fullmatch(second)
    assert first != second


# -- logs ---------------------------------------------------------------------------------


def _logging_app() -> FastAPI:
    """A bare app with the observability middleware and a route that logs."""
    app = FastAPI()
    install_observability(app)
    log = logging.getLogger("flashsale.test_observability")

    @app.get("/log/{item_id}")
    async def log_something(item_id: int) -> dict[str, int]:
        log.warning("handling item %d", item_id, extra={"item_id": item_id})
        return {"item_id": item_id}

    return app


async def _get(app: FastAPI, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, **kw)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo :func:`configure_logging` on the root and uvicorn loggers."""
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error")
    saved = [(logging.getLogger(n), list(logging.getLogger(n).handlers)) for n in names]
    propagate = [logging.getLogger(n).propagate for n in names]
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for (logger, old), flag in zip(saved, propagate, strict=True):
        logger.handlers[:] = old
        logger.propagate = flag


async def test_request_id_is_in_log_records_of_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    app = _logging_app()
    with caplog.at_level(logging.WARNING, logger="flashsale.test_observability"):
        r = await _get(app, "/log/7", headers={"X-Request-ID": "trace-me-7"})
        logging.getLogger("flashsale.test_observability").warning("outside a request")
    assert r.status_code == 200
    inside, outside = caplog.records
    assert (inside.getMessage(), inside.request_id) == ("handling item 7", "trace-me-7")
    assert outside.request_id == "-"
    assert REQUEST_ID.get() is None  # reset once the request is answered


async def test_unhandled_error_is_logged_with_the_request_id_and_counted_as_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    app = FastAPI()
    install_observability(app)
    log = logging.getLogger("flashsale.test_observability")

    async def unexpected(_request: Any, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", exc)
        return JSONResponse({"code": "INTERNAL_ERROR"}, status_code=500)

    app.add_exception_handler(Exception, unexpected)

    @app.get("/boom/{n}")
    async def boom(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    labels = {"method": "GET", "route": "/boom/{n}", "status": "500"}
    before = REGISTRY.get_sample_value(LATENCY_COUNT, labels) or 0.0
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with caplog.at_level(logging.ERROR, logger="flashsale.test_observability"):
                r = await client.get("/boom/1", headers={"X-Request-ID": "boom-1"})
    finally:
        # Left set for the outer error handlers; a server ends it with the request's
        # task, but this client runs the app in the test's own task.
        REQUEST_ID.set(None)
    assert r.status_code == 500
    (record,) = caplog.records
    assert (record.getMessage(), record.request_id) == ("unhandled error: boom 1", "boom-1")
    assert REGISTRY.get_sample_value(LATENCY_COUNT, labels) == before + 1


@pytest.mark.usefixtures("restore_logging")
async def test_json_log_lines_carry_the_request_id() -> None:
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    r = await _get(_logging_app(), "/log/3", headers={"X-Request-ID": "json-3"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (record,) = [rec for rec in lines if rec.get("logger") == "flashsale.test_observability"]
    assert list(record)[:5] == ["time", "level", "logger", "message", "request_id"]
    assert record["level"] == "WARNING"
    assert record["message"] == "handling item 3"
    assert record["request_id"] == "json-3"
    assert record["item_id"] == 3  # extras are fields
    assert record["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_logging")
async def test_text_log_lines_carry_the_request_id_and_uvicorn_logs_too() -> None:
    out = io.StringIO()
    configure_logging("WARNING", json=False, stream=out)
    configure_logging("warning", json=False, stream=out)  # idempotent: one handler
    r = await _get(_logging_app(), "/log/5", headers={"X-Request-ID": "text-5"})
    assert r.status_code == 200
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING flashsale.test_observability "
        r"\[text-5\] handling item 5",
        lines[0],
    )
    assert lines[1].endswith("WARNING uvicorn.error [-] from uvicorn")


def test_unknown_log_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud")


# -- /metrics -----------------------------------------------------------------------------


async def test_metrics_endpoint(api: Api) -> None:
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# TYPE flashsale_http_request_duration_seconds histogram" in r.text
    paths = expect(await api.client.get("/openapi.json"), 200)["paths"]
    assert "/metrics" in paths
    assert not any(path.endswith("/metrics") and path != "/metrics" for path in paths)


async def test_latency_is_labelled_by_route_template(api: Api) -> None:
    coupon = await api.coupon()
    before = await scrape(api.client)
    expect(await api.get(f"/coupons/{coupon['id']}"), 200)
    expect(await api.get(f"/coupons/{coupon['id']}"), 200)
    expect(await api.get("/coupons/987654"), 404, "COUPON_NOT_FOUND")
    expect(await api.post(f"/coupons/{coupon['id']}"), 405)
    assert (await api.client.get("/no/such/path")).status_code == 404
    expect(await api.client.get("/healthz"), 200)
    after = await scrape(api.client)

    template = "/api/v1/coupons/{coupon_id}"
    for method, route, status, count in [
        ("GET", template, "200", 2),
        ("GET", template, "404", 1),
        ("POST", template, "405", 1),
        ("GET", "<unmatched>", "404", 1),
        ("GET", "/healthz", "200", 1),
    ]:
        labels = {"method": method, "route": route, "status": status}
        assert delta(before, after, LATENCY_COUNT, **labels) == count, labels
    labels = {"method": "GET", "route": template, "status": "200"}
    bucket = "flashsale_http_request_duration_seconds_bucket"
    assert delta(before, after, bucket, le="+Inf", **labels) == 2
    assert delta(before, after, "flashsale_http_request_duration_seconds_sum", **labels) > 0
    routes = {dict(key)["route"] for name, key in after if name == LATENCY_COUNT}
    assert not [route for route in routes if re.search(r"/\d+(/|$)", route)]  # no raw ids
    assert "/no/such/path" not in routes


async def test_coupon_issue_outcomes_and_gate_rejections(api: Api) -> None:
    coupon = await api.coupon(total_quantity=1)
    later = await api.coupon(issue_starts_at=iso(utc(days=1)))
    first, second = await api.user(), await api.user()
    before = await scrape(api.client)
    await api.issue(first, coupon["id"])
    expect(await api.post(f"/coupons/{coupon['id']}/issue", first), 409, "COUPON_ALREADY_ISSUED")
    expect(await api.post(f"/coupons/{coupon['id']}/issue", second), 409, "COUPON_SOLD_OUT")
    expect(await api.post(f"/coupons/{coupon['id']}/issue", second), 409, "COUPON_SOLD_OUT")
    expect(await api.post(f"/coupons/{later['id']}/issue", first), 409, "COUPON_NOT_ISSUABLE")
    expect(await api.post("/coupons/987654/issue", first), 404, "COUPON_NOT_FOUND")
    after = await scrape(api.client)

    issues = "flashsale_coupon_issues_total"
    assert delta(before, after, issues, outcome="issued") == 1
    assert delta(before, after, issues, outcome="already_issued") == 1
    assert delta(before, after, issues, outcome="sold_out") == 2
    assert delta(before, after, issues, outcome="not_issuable") == 1
    assert delta(before, after, issues, outcome="not_found") == 1
    rejections = "flashsale_gate_rejections_total"
    assert delta(before, after, rejections, gate="coupon", reason="already_issued") == 1
    assert delta(before, after, rejections, gate="coupon", reason="sold_out") == 2


async def test_stock_gate_rejections(api: Api) -> None:
    user = await api.user(balance=100_000)
    product = await api.product((1_000, 1))
    variant = product["variants"][0]["id"]
    before = await scrape(api.client)
    expect(await api.order(user, (variant, 2)), 409, "OUT_OF_STOCK")
    after = await scrape(api.client)
    rejections = "flashsale_gate_rejections_total"
    assert delta(before, after, rejections, gate="stock", reason="out_of_stock") == 1


async def test_orders_counter_is_exposed(api: Api) -> None:
    samples = await scrape(api.client)
    assert ("flashsale_orders_total", frozenset({("outcome", "paid")})) in samples


async def test_outbox_backlog_gauges_are_exposed(api: Api) -> None:
    text = (await api.client.get("/metrics")).text
    for name in ("flashsale_outbox_backlog_events", "flashsale_outbox_oldest_age_seconds"):
        assert f"# TYPE {name} gauge" in text
