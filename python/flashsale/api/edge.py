"""The flash crowd, answered at the edge of the app.

In a rush nearly every request is hopeless: the coupon is gone, the limited item
sold out. :class:`GateEdgeMiddleware` answers those from this process's C++
gates before FastAPI routes the request, solves dependencies or opens a database
session, so a refusal costs about what a health check costs. It looks at two
routes only:

- ``POST /api/v1/coupons/{coupon_id}/issue`` → the coupon gate
  (:func:`flashsale.coupons.service.refuse_early`: issue window, already issued,
  sold out);
- ``POST /api/v1/orders`` → the stock gate
  (:func:`flashsale.orders.service.refuse_early`: a fresh shortfall).

The winners are answered here too: an admitted order or coupon issue is submitted to
the group-commit writer with the same operation the route submits
(:func:`flashsale.orders.router.order_write`, :func:`flashsale.coupons.router.issue_write`)
and its answer (``201`` with the order or the issue, or the operation's refusal) is
sent from here. Routing, dependency solving, the second parse of the body and the
response model's validation cost more than the order's own Python; the answer's
bytes are the route's (``model_dump_json`` is what FastAPI sends for a response
model). Should the writer fail for any other reason (its batch rolled back: nothing
of it was written), the request goes on to the route, which submits it again and
answers as it would.

The same holds for the pages everyone refreshes during a sale: a fresh entry of the
catalog read cache (:class:`flashsale.catalog.cache.ReadCache`) for
``GET /api/v1/products/{id}``, ``GET /api/v1/products`` and
``GET /api/v1/products/popular`` without a query string is served here, with its
``Cache-Control`` and ``Age``; a miss, or any query string, goes to the route (which
reads the database and fills the cache).

It answers only what the full route would answer the same way: a request with an
``Idempotency-Key`` (a retry must replay the first answer, which is in the
database), a missing or invalid token, a body that does not validate, or anything
the gate cannot tell goes on to the route unchanged, body included. The answer is
the route's: the same status, error body and route label in the metrics.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsale.api.observability import RouteTemplates
from flashsale.api.responses import error_body
from flashsale.api.state import AppState
from flashsale.auth.security import decode_access_token
from flashsale.catalog.cache import list_key, popular_key, product_key
from flashsale.catalog.router import PAGE_LIMIT, POPULAR_DEFAULTS
from flashsale.coupons.router import issue_write
from flashsale.coupons.service import refuse_early as refuse_coupon
from flashsale.db.types import MAX_ID, utcnow
from flashsale.db.writer import Locks, Op
from flashsale.errors import FlashsaleError
from flashsale.orders.router import order_write
from flashsale.orders.schemas import OrderIn
from flashsale.orders.service import refuse_early as refuse_order

__all__ = ["GateEdgeMiddleware"]

log = logging.getLogger(__name__)

_COUPON_ISSUE = re.compile(r"/api/v1/coupons/([1-9][0-9]{0,18})/issue")
_ORDERS = "/api/v1/orders"
_COUPON_TEMPLATE = "/api/v1/coupons/{coupon_id}/issue"
_PRODUCTS = "/api/v1/products"
_POPULAR = "/api/v1/products/popular"
_PRODUCT = "/api/v1/products/{product_id}"
_PRODUCT_ID = re.compile(r"/[1-9][0-9]{0,18}")
#: Larger bodies go to the route, which applies its own limits.
_MAX_BODY = 64 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]


class GateEdgeMiddleware:
    """Pure ASGI middleware: refuse hopeless coupon issues and orders from the gates.

    Args:
        app: the wrapped ASGI app (the routes that answer everything else).
        routes: the app's route templates, so that a refusal is labelled in the
            metrics with the route that would have answered it.
    """

    def __init__(self, app: ASGIApp, routes: RouteTemplates) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET":
            if not await self._cached_page(scope, send):
                await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        coupon = _COUPON_ISSUE.fullmatch(path)
        if coupon is None and path != _ORDERS:
            await self.app(scope, receive, send)
            return
        user_id = _caller(scope)
        if user_id is None:
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.flashsale
        write: tuple[Op[Any], Locks] | None = None
        try:
            if coupon is not None:
                template = _COUPON_TEMPLATE
                coupon_id = int(coupon.group(1))
                if coupon_id <= MAX_ID:
                    await refuse_coupon(
                        state.coupon_gate, state.db.read_session, coupon_id, user_id, utcnow()
                    )
                    write = issue_write(state, user_id, coupon_id)
            else:
                template = _ORDERS
                body, complete = await _read_body(receive)
                receive = _replay(body, complete, receive)
                order = _order_in(body) if complete else None
                if order is not None:
                    await refuse_order(state.stock_gate, state.db.read_session, order)
                    write = order_write(state, user_id, order)
            if write is not None:
                result = await state.writer.submit(*write)
        except FlashsaleError as error:
            scope["route"] = self.routes.route(template)
            await _answer(send, error)
            return
        except Exception:  # a failed gate re-read or batch: the route decides, and reports it
            log.debug("edge could not answer; passing %s on to the route", path, exc_info=True)
            write = None
        if write is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes.route(template)
        await _send_json(send, 201, result.model_dump_json().encode())

    async def _cached_page(self, scope: Scope, send: Send) -> bool:
        """Serve a fresh read-cache entry of a catalog page; False when the route must."""
        path: str = scope["path"]
        if not path.startswith(_PRODUCTS) or scope["query_string"]:
            return False
        rest = path[len(_PRODUCTS) :]
        if rest == "":
            key, template = list_key(PAGE_LIMIT, None), _PRODUCTS
        elif rest == "/popular":
            key, template = popular_key(*POPULAR_DEFAULTS), _POPULAR
        elif _PRODUCT_ID.fullmatch(rest) and int(rest[1:]) <= MAX_ID:
            key, template = product_key(int(rest[1:])), _PRODUCT
        else:
            return False
        state: AppState = scope["app"].state.flashsale
        cache = state.read_cache
        entry = cache.peek(key)
        if entry is None:
            return False
        scope["route"] = self.routes.route(template)
        headers = [
            *_JSON_HEADERS,
            (b"content-length", str(len(entry.body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in cache.headers(entry).items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": entry.body})
        return True


def _caller(scope: Scope) -> int | None:
    """The user id of a valid bearer token, or None when the route must decide: no
    token, a bad one, or an ``Idempotency-Key`` (its answer may be stored)."""
    token = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
        elif name == b"idempotency-key":
            return None
    if not token:
        return None
    state: AppState = scope["app"].state.flashsale
    try:
        return decode_access_token(token, state.settings.jwt_secret.get_secret_value()).user_id
    except FlashsaleError:
        return None


def _order_in(body: bytes) -> OrderIn | None:
    """The order in ``body``, or None when it does not validate (the route answers
    422 with its own error details)."""
    try:
        return OrderIn.model_validate_json(body)
    except ValidationError:
        return None


async def _answer(send: Send, error: FlashsaleError) -> None:
    payload = json.dumps(
        error_body(error.code, error.message, error.details), separators=(",", ":")
    ).encode()
    await _send_json(send, error.status, payload)


async def _send_json(send: Send, status: int, payload: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body and whether it is complete (at most ``_MAX_BODY`` bytes read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > _MAX_BODY:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands out what was read of the body, then (``complete``
    false) the rest from the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {
                "type": "http.request",
                "body": body,
                "more_body": not complete,
            }
            return message
        return await receive()

    return replayed
