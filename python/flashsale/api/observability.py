"""Request ids, structured logs and ``GET /metrics`` (docs/operations.md).

- :class:`ObservabilityMiddleware` (pure ASGI): takes ``X-Request-ID`` from the
  request or makes one, keeps it in :data:`REQUEST_ID` for the request's log
  lines, echoes it in the response and observes
  :data:`~flashsale.metrics.REQUEST_LATENCY` by route template.
- :func:`configure_logging`: one root handler, text or JSON, every line with
  its ``request_id``; uvicorn's loggers are routed through it.
- :func:`install_observability`: the middleware and the ``/metrics`` route.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from flashsale.metrics import REQUEST_LATENCY, UNMATCHED_ROUTE, render_latest

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "ObservabilityMiddleware",
    "RequestIdFilter",
    "RouteTemplates",
    "configure_logging",
    "install_observability",
]

#: Header that carries the request id, both ways.
REQUEST_ID_HEADER = "X-Request-ID"

#: The id of the request being handled in this context, or None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("flashsale_request_id", default=None)

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("ascii")  # ASGI header names are lowercase
# A method label outside these is "OTHER": a client may send any token as a method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A caller's id is kept only when it is short and safe to put in logs and headers.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def _request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` when valid (1–128 of ``[A-Za-z0-9._-]``), else a
    new one (32 hex characters, :class:`_RequestIds`)."""
    for name, value in headers:
        if name == _HEADER_KEY:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return _new_request_id()


class _RequestIds:
    """32 hex characters: a random 64-bit prefix per process and a counter. As unique
    as a UUID4 for log correlation, at a fraction of its cost on every request."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._next = itertools.count()

    def __call__(self) -> str:
        if self._pid != os.getpid():  # a forked child must not repeat its parent's ids
            self._pid, self._prefix = os.getpid(), secrets.token_hex(8)
        return f"{self._prefix}{next(self._next) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_new_request_id = _RequestIds()


# -- route templates ---------------------------------------------------------------------


def _route_templates(routes: Sequence[BaseRoute]) -> dict[int, tuple[object, str]]:
    """``id(route) -> (route, full path template)`` for every route of an app."""
    templates: dict[int, tuple[object, str]] = {}
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI < 0.137 copied included routes with their full path
        for route in routes:
            path = getattr(route, "path_format", None)
            if isinstance(path, str):
                templates.setdefault(id(route), (route, path))
        return templates
    # FastAPI >= 0.137 keeps an included router as one lazy node: after routing,
    # scope["route"] is the router's own APIRoute, whose path lacks the include
    # prefixes. The route contexts carry the full, prefixed template.
    for context in iter_route_contexts(routes):
        path = context.path_format
        if path is not None:
            original = context.original_route
            # The first inclusion wins should one route object be included twice.
            templates.setdefault(id(original), (original, path))
    return templates


class RouteTemplates:
    """Maps the route Starlette/FastAPI matched (``scope["route"]``) to its full path
    template, e.g. ``/api/v1/orders/{order_id}``: a bounded label, unlike the raw path.

    The table is built on first use and rebuilt when a route is not in it (routes
    added after start-up); a lookup is one dict access.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        # Keyed by id(): routes define __eq__ and so are unhashable. The route is kept
        # in the value, which also keeps its id from being reused.
        self._templates: dict[int, tuple[object, str]] = {}

    def template(self, route: object | None) -> str:
        """The template of ``route``; :data:`~flashsale.metrics.UNMATCHED_ROUTE` for None."""
        if route is None:
            return UNMATCHED_ROUTE
        entry = self._templates.get(id(route))
        if entry is None or entry[0] is not route:
            entry = self._learn(route)
        return entry[1]

    def route(self, template: str) -> object | None:
        """The route whose full template is ``template`` (None if there is none): what a
        middleware that answers for a route puts in ``scope["route"]``."""
        for route, path in self._templates.values():
            if path == template:
                return route
        self._templates = _route_templates(self._app.routes)
        for route, path in self._templates.values():
            if path == template:
                return route
        return None

    def _learn(self, route: object) -> tuple[object, str]:
        self._templates = _route_templates(self._app.routes)
        entry = self._templates.get(id(route))
        if entry is None or entry[0] is not route:
            # Not reachable from the app's routes (a custom router?): its own template.
            path = getattr(route, "path_format", None)
            entry = (route, path if isinstance(path, str) else UNMATCHED_ROUTE)
            self._templates[id(route)] = entry
        return entry


# -- middleware --------------------------------------------------------------------------


class ObservabilityMiddleware:
    """Pure ASGI middleware: request id and latency of every HTTP request.

    Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, the
    context variable is visible to the endpoint, and streamed bodies pass through.

    For each request: the id is taken from ``X-Request-ID`` or generated
    (:func:`_request_id_from`), set in :data:`REQUEST_ID`, added to the response
    headers, and the time until the last byte is sent is observed in
    ``flashsale_http_request_duration_seconds{method, route, status}``.

    An exception that escapes the app is observed with the status already sent, or
    500 when none was, and re-raised.
    Its 500 answer is written by Starlette's outermost ``ServerErrorMiddleware``,
    outside this one, so it carries no ``X-Request-ID``; the request id is left set
    so that the error's log lines still carry it (the server runs each request in
    its own task, so the value ends with the request).
    """

    def __init__(self, app: ASGIApp, routes: RouteTemplates) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id_from(scope["headers"])
        token = REQUEST_ID.set(request_id)
        id_header = (_HEADER_KEY, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: the response may reuse its own header list.
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            method = scope["method"]
            REQUEST_LATENCY.labels(
                method if method in _METHODS else "OTHER",
                self.routes.template(scope.get("route")),
                str(status),
            ).observe(time.perf_counter() - start)
        REQUEST_ID.reset(token)


# -- logging -----------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record: the current request's id, or ``-``.

    Attach it to handlers (a logger's filters skip records from child loggers). A
    ``request_id`` given explicitly (``extra={"request_id": ...}``) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


#: Text log line: ``2024-05-01T12:00:00.123Z WARNING flashsale [<request id>] message``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _JsonLogFormatter(JsonFormatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601, ms), ``level``, ``logger``,
    ``message``, ``request_id``, then any ``extra`` fields (and ``exc_info``)."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # First, so that it leads the line.
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)


def _json_formatter() -> logging.Formatter:
    return _JsonLogFormatter(
        ["levelname", "name", "message", "request_id"],
        rename_fields={"levelname": "level", "name": "logger"},
        # uvicorn adds an ANSI-coloured copy of its messages as an extra.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def _text_formatter() -> logging.Formatter:
    formatter = logging.Formatter(TEXT_FORMAT, defaults={"request_id": "-"})
    # UTC, ISO 8601 with milliseconds: 2024-05-01T12:00:00.123Z.
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    return formatter


_OWN_HANDLER = "_flashsale_handler"
# uvicorn's TRACE level, known to `logging` only once uvicorn configured itself.
_EXTRA_LEVELS = {"TRACE": 5}


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.upper()
    number = logging.getLevelNamesMapping().get(name, _EXTRA_LEVELS.get(name))
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    level: str | int = "warning", *, json: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Send all logs to one handler on the root logger, with the request id.

    Idempotent: a handler installed by an earlier call is replaced; other handlers
    (pytest's, an application's) are left alone. uvicorn's loggers (``uvicorn``,
    ``uvicorn.error``) lose their own handlers and propagate to the root, so that
    their lines get the same format. ``uvicorn.access`` is left as uvicorn set it:
    uvicorn turns its access log on when that logger reaches any handler, so
    propagating it would undo ``access_log=False``.

    Args:
        level: ``"debug"``, ``"info"``, ``"warning"``, ... (any case) or a number.
        json: JSON lines (:class:`_JsonLogFormatter`) instead of :data:`TEXT_FORMAT`.
        stream: where to write (default ``sys.stderr``).

    Returns:
        The installed handler.

    Raises:
        ValueError: unknown ``level`` name.
    """
    number = _level_number(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_json_formatter() if json else _text_formatter())
    handler.addFilter(RequestIdFilter())
    setattr(handler, _OWN_HANDLER, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWN_HANDLER, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    return handler


# -- installation ------------------------------------------------------------------------


async def _metrics() -> Response:
    """Prometheus text format of all metrics (every worker's, in multiprocess mode)."""
    # In a thread: in multiprocess mode the scrape reads one file per process.
    body, content_type = await run_in_threadpool(render_latest)
    return Response(body, media_type=content_type)


def install_observability(app: FastAPI, routes: RouteTemplates | None = None) -> None:
    """Add :class:`ObservabilityMiddleware` and ``GET /metrics`` to ``app``.

    Call it before the app starts (Starlette refuses middleware afterwards).
    Middleware added later sits outside this one and does not see the request id.
    """
    app.add_middleware(ObservabilityMiddleware, routes=routes or RouteTemplates(app))
    app.add_api_route(
        "/metrics",
        _metrics,
        methods=["GET"],
        tags=["operations"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics",
    )
