"""The stand-in data platform (``flashsale data-platform``): dedup, validation, stats,
failure injection, paging, persistence and its command line."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from flashsale.cli import build_parser
from flashsale.data_platform import create_app

from .support import event_payload

pytestmark = pytest.mark.anyio


def new_event(event_type: str = "order.paid", **extra: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": event_type, "order": {"order_id": 1}} | extra


async def post(client: httpx.AsyncClient, event: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post(
        "/events", json=event, headers={"Idempotency-Key": event["event_id"], **headers}
    )


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/stats")).json()
    return body


async def test_an_event_is_stored_once_and_repeats_are_acknowledged(
    platform_client: httpx.AsyncClient,
) -> None:
    event = new_event()
    first = await post(platform_client, event)
    assert first.status_code == 201
    assert first.json() == {"event_id": event["event_id"], "duplicate": False}
    for _ in range(2):
        again = await post(platform_client, event | {"order": {"order_id": 2}})
        assert again.status_code == 200
        assert again.json() == {"event_id": event["event_id"], "duplicate": True}

    (stored,) = (await platform_client.get("/events")).json()["items"]
    assert stored["event"] == event  # the first copy is kept
    assert stored["idempotency_key"] == event["event_id"]
    assert stats_of(await stats(platform_client)) == (3, 1, 2, 0)


def stats_of(body: dict[str, Any]) -> tuple[int, int, int, int]:
    return body["received"], body["stored"], body["duplicates"], body["failed"]


async def test_the_body_is_stored_verbatim(platform_client: httpx.AsyncClient) -> None:
    event_id = str(uuid.uuid4())
    text = event_payload(event_id, extra={"nested": [1, 2.5, None]})
    response = await platform_client.post(
        "/events", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201
    (stored,) = (await platform_client.get("/events")).json()["items"]
    assert stored["event"]["extra"] == {"nested": [1, 2.5, None]}
    assert stored["idempotency_key"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"type": "order.paid"},
        {"event_id": str(uuid.uuid4())},
        {"event_id": "", "type": "order.paid"},
        {"event_id": 7, "type": "order.paid"},
        ["not", "an", "object"],
    ],
)
async def test_an_event_without_id_or_type_is_refused(
    platform_client: httpx.AsyncClient, body: Any
) -> None:
    response = await platform_client.post("/events", json=body)
    assert response.status_code == 422
    assert stats_of(await stats(platform_client)) == (0, 0, 0, 0)


async def test_an_idempotency_key_other_than_the_event_id_is_refused(
    platform_client: httpx.AsyncClient,
) -> None:
    response = await post(platform_client, new_event(), **{"Idempotency-Key": "other"})
    assert response.status_code == 422
    assert (await stats(platform_client))["stored"] == 0


async def test_stats_count_by_type(platform_client: httpx.AsyncClient) -> None:
    for event_type in ("order.paid", "order.paid", "order.cancelled"):
        assert (await post(platform_client, new_event(event_type))).status_code == 201
    assert await stats(platform_client) == {
        "received": 3,
        "stored": 3,
        "duplicates": 0,
        "failed": 0,
        "by_type": {"order.cancelled": 1, "order.paid": 2},
    }


async def test_events_are_listed_in_pages_and_by_type(platform_client: httpx.AsyncClient) -> None:
    events = [new_event("order.cancelled" if i % 3 == 2 else "order.paid") for i in range(7)]
    for event in events:
        await post(platform_client, event)

    pages: list[list[str]] = []
    after = 0
    while True:
        body = (await platform_client.get("/events", params={"limit": 3, "after": after})).json()
        pages.append([item["event_id"] for item in body["items"]])
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [e for page in pages for e in page] == [e["event_id"] for e in events]

    cancelled = (await platform_client.get("/events", params={"type": "order.cancelled"})).json()
    assert [i["event_id"] for i in cancelled["items"]] == [
        events[2]["event_id"],
        events[5]["event_id"],
    ]
    assert cancelled["next_after"] is None
    ids = [i["id"] for i in cancelled["items"]]
    assert ids == sorted(ids)

    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        assert (await platform_client.get("/events", params=bad)).status_code == 422


async def test_failures_come_before_and_after_storing(platform_client: httpx.AsyncClient) -> None:
    """fail_rate 1: every post fails, about half of them after storing (a lost ack)."""
    assert (await platform_client.put("/config", json={"fail_rate": 1.0})).json() == {
        "fail_rate": 1.0,
        "latency_ms": 0,
    }
    events = [new_event() for _ in range(40)]
    for event in events:
        response = await post(platform_client, event)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    body = await stats(platform_client)
    assert (body["received"], body["failed"]) == (40, 40)
    assert 5 <= body["stored"] <= 35  # seeded: both kinds happen

    # The sender retries everything: what was stored already is a duplicate.
    await platform_client.put("/config", json={"fail_rate": 0.0})
    answers = [(await post(platform_client, event)).status_code for event in events]
    body = await stats(platform_client)
    assert answers.count(200) == body["duplicates"] > 0
    assert answers.count(201) == 40 - body["duplicates"]
    assert (body["stored"], body["received"]) == (40, 80)


async def test_config_changes_latency_and_is_validated(
    platform_client: httpx.AsyncClient,
) -> None:
    assert (await platform_client.get("/config")).json() == {"fail_rate": 0.0, "latency_ms": 0}
    response = await platform_client.put("/config", json={"latency_ms": 150})
    assert response.json() == {"fail_rate": 0.0, "latency_ms": 150}
    started = time.perf_counter()
    assert (await post(platform_client, new_event())).status_code == 201
    assert time.perf_counter() - started >= 0.15
    for bad in ({"fail_rate": 1.5}, {"fail_rate": -0.1}, {"latency_ms": -1}):
        assert (await platform_client.put("/config", json=bad)).status_code == 422
    assert (await platform_client.get("/config")).json()["latency_ms"] == 150


async def test_events_and_counters_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "platform.db"
    event = new_event()
    for expected in (201, 200):
        app = create_app(path)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://platform.test"
        ) as client:
            assert (await post(client, event)).status_code == expected
            body = await stats(client)
    assert stats_of(body) == (2, 1, 1, 0)


def test_bad_failure_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        create_app(tmp_path / "p.db", fail_rate=2.0)
    with pytest.raises(ValidationError):
        create_app(tmp_path / "p.db", latency_ms=-5)


def test_the_command_line_options() -> None:
    args = build_parser().parse_args(["data-platform", "--database", "events.db"])
    assert (args.host, args.port, args.database) == ("127.0.0.1", 9000, "events.db")
    assert (args.fail_rate, args.latency_ms, args.seed) == (0.0, 0, None)
    args = build_parser().parse_args(
        ["data-platform", "--port", "9100", "--fail-rate", "0.25", "--latency-ms", "40",
         "--seed", "3"]
    )  # fmt: skip
    assert (args.port, args.fail_rate, args.latency_ms, args.seed) == (9100, 0.25, 40, 3)
