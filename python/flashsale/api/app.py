"""The FastAPI application factory.

``create_app(settings)`` builds the app; its lifespan opens the database
engines, loads the C++ gates from the database, rebuilds the ranking window and
starts the background tasks (ranking follower, expiry sweeper and key purge,
outbox relay). ``create_app_from_env`` is the factory uvicorn workers call
(settings from ``FLASHSALE_*`` variables).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashsale import __version__
from flashsale.admin.router import router as admin_router
from flashsale.api.background import Maintenance, follow_order_events, run_every, stop_tasks
from flashsale.api.deps import State
from flashsale.api.edge import GateEdgeMiddleware
from flashsale.api.idempotency import IdempotentReplay
from flashsale.api.observability import RouteTemplates, configure_logging, install_observability
from flashsale.api.responses import error_body
from flashsale.api.retry import TransactionRetryMiddleware
from flashsale.api.state import AppState
from flashsale.auth.router import me_router as auth_me_router
from flashsale.auth.router import router as auth_router
from flashsale.cart.router import router as cart_router
from flashsale.catalog.cache import ReadCache
from flashsale.catalog.router import router as catalog_router
from flashsale.coupons.router import router as coupons_router
from flashsale.db.engine import Database, make_writer
from flashsale.errors import FlashsaleError
from flashsale.gates import CouponIssueGate, StockGate
from flashsale.orders.router import router as orders_router
from flashsale.outbox.relay import OutboxRelay
from flashsale.ranking.service import RankingService
from flashsale.settings import Settings
from flashsale.wallet.router import router as wallet_router

log = logging.getLogger("flashsale")

API_PREFIX = "/api/v1"


async def _flashsale_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlashsaleError)
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers
    )


async def _replay(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    return exc.response()


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(
        error_body("VALIDATION_ERROR", "Invalid input", {"errors": errors}), status_code=422
    )


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return JSONResponse(
        error_body(code, str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # SQLite answers "database is locked" only past the busy timeout: the client
    # may retry; nothing was changed (the transaction was rolled back).
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        error_body("SERVICE_BUSY", "Database busy, retry later"),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("INTERNAL_ERROR", "Internal error"), status_code=500)


async def build_state(settings: Settings) -> AppState:
    """Open the read engine and the group-commit writer (every write of the process goes
    through it: no async write engine is opened) and load the gates and the ranking
    from the database; the read cache learns every stock change and ranking record of
    this process."""
    db = Database.from_settings(settings, writes=False)
    state = AppState(
        settings=settings,
        db=db,
        stock_gate=StockGate(settings.gate_freshness_s),
        coupon_gate=CouponIssueGate(settings.gate_freshness_s),
        ranking=RankingService(
            settings.ranking_window_s, settings.ranking_bucket_s, settings.ranking_gap_timeout_s
        ),
        read_cache=ReadCache(settings.read_cache_s),
        writer=make_writer(settings),
    )
    state.writer.start()
    state.stock_gate.on_change.append(state.read_cache.invalidate_products)
    # Own sales and cancellations, and the events the follower applies.
    state.ranking.on_record.append(state.read_cache.ranking_changed)
    async with db.read_session() as session:
        await state.stock_gate.load_all(session)
        await state.coupon_gate.load_all(session)
    async with db.read_session() as session:  # its own snapshot (see rebuild)
        await state.ranking.rebuild(session)
    return state


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Flashsale web service for ``settings`` (default: from the environment)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings)
        app.state.flashsale = state
        stop = asyncio.Event()
        follower = partial(follow_order_events, state)
        tasks = [
            asyncio.create_task(
                run_every(settings.ranking_poll_s, stop, follower, "ranking follower")
            ),
            asyncio.create_task(
                run_every(
                    settings.order_expiry_sweep_s, stop, Maintenance(state).step, "maintenance"
                )
            ),
            # Delivers to FLASHSALE_DATA_PLATFORM_URL; without one it only measures the backlog.
            asyncio.create_task(
                OutboxRelay(state.db, state.writer, settings).run(stop), name="outbox relay"
            ),
        ]
        try:
            yield
        finally:
            await stop_tasks(stop, tasks, grace_s=10.0)
            await state.writer.stop()
            await state.db.dispose()

    # FastAPI's native OpenTelemetry checks for global providers on every request;
    # the service exports Prometheus metrics instead, so it is off unless asked for.
    otel = settings.opentelemetry
    app = FastAPI(
        title="Flashsale",
        version=__version__,
        lifespan=lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.add_exception_handler(FlashsaleError, _flashsale_error)
    app.add_exception_handler(IdempotentReplay, _replay)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # Inside the observability middleware (added after it = outside): a retried request
    # is timed and logged once.
    app.add_middleware(TransactionRetryMiddleware)
    # Between the two: a refusal from the gates is timed and logged, and skips the
    # retry middleware's body buffering.
    routes = RouteTemplates(app)
    app.add_middleware(GateEdgeMiddleware, routes=routes)
    install_observability(app, routes)

    # Matched in this order, one router after the other: the flash crowd's routes first.
    for router in (
        orders_router,
        coupons_router,
        catalog_router,
        cart_router,
        wallet_router,
        auth_router,
        auth_me_router,
        admin_router,
    ):
        app.include_router(router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(state: State) -> JSONResponse:
        """Readiness: the database answers."""
        try:
            async with state.db.read_session() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from ``FLASHSALE_*`` environment variables."""
    settings = Settings()
    # Each worker is a fresh (spawned) process: its logging is set up here.
    configure_logging(settings.log_level, json=settings.log_format == "json")
    return create_app(settings)
