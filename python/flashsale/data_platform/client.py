"""Reading back what the stand-in stored: ``GET /events`` page by page.

``GET /events?after=&limit=`` answers ``{"items": [...], "next_after": <id> | null}``
(see :mod:`flashsale.data_platform.app`); a client passes ``next_after`` as the next
``after`` until it is null. :func:`read_all_events` (async) and
:func:`read_all_events_sync` are that loop, written once for every reader (the demo's
end checks, the tests). They take the HTTP call as a function, so any client fits::

    async def get_page(params: dict[str, int]) -> object:
        response = await client.get("/events", params=params)
        return response.raise_for_status().json()

    events = await read_all_events(get_page)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["MAX_PAGE", "parse_page", "read_all_events", "read_all_events_sync"]

#: The largest ``limit`` ``GET /events`` accepts (a larger one is answered 422).
MAX_PAGE: Final = 1000

#: The query of one page: ``{"after": <id>, "limit": <n>}``.
PageParams = dict[str, int]


def parse_page(body: object) -> tuple[list[dict[str, Any]], int | None]:
    """``(items, next_after)`` of one decoded ``GET /events`` answer.

    Raises:
        ValueError: ``body`` is not such a page (no ``items`` list, or ``next_after``
            neither an int nor null).
    """
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError(f"not a page of GET /events: {body!r:.200}")
    next_after = body.get("next_after")
    if next_after is not None and not isinstance(next_after, int):
        raise ValueError(f"GET /events: next_after is {next_after!r}")
    return body["items"], next_after


async def read_all_events(
    get_page: Callable[[PageParams], Awaitable[object]], *, limit: int = MAX_PAGE
) -> list[dict[str, Any]]:
    """Every stored event, in storage order (the ``items`` of every page, concatenated).

    Args:
        get_page: sends ``GET /events`` with the given query parameters and returns the
            decoded JSON body; it raises if the answer is not a 200.
        limit: events per page, 1 to :data:`MAX_PAGE`.

    Raises:
        ValueError: a page was malformed (:func:`parse_page`); whatever ``get_page`` raises.
    """
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        items, next_after = parse_page(await get_page({"after": after, "limit": limit}))
        events.extend(items)
        if next_after is None:
            return events
        after = next_after


def read_all_events_sync(
    get_page: Callable[[PageParams], object], *, limit: int = MAX_PAGE
) -> list[dict[str, Any]]:
    """:func:`read_all_events` with a blocking ``get_page`` (e.g. an ``httpx.Client``'s)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        items, next_after = parse_page(get_page({"after": after, "limit": limit}))
        events.extend(items)
        if next_after is None:
            return events
        after = next_after
