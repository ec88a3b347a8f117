"""The baseline service of ``flashsale bench http``: the reference shops' design in the
same FastAPI + SQLAlchemy stack, on the same schema, engines and JSON shapes.

What differs from Flashsale is only how a grant is decided: lock, check, write.

- Coupon issue (``POST /api/v1/coupons/{id}/issue``): ``SELECT … FOR UPDATE`` on the
  coupon row, check the window, whether the user holds one and whether any is left,
  insert the user coupon and raise ``issued_count`` through the ORM.
- Order (``POST /api/v1/orders``, pay now): ``SELECT … FOR UPDATE`` on the variant rows
  (by id) and then on the wallet, check stock and balance, then per-row ORM updates
  (``variant.stock -= q``, ``wallet.balance -= paid``) and inserts (order, items,
  RESERVE movements, PAYMENT ledger row, payment), one commit. No outbox event, no
  C++ gate, no ranking: every request, hopeless or not, takes the row locks.
- Product page (``GET /api/v1/products/{id}``): the product and its variants as ORM
  objects.

Also ``GET /healthz``. Access tokens are Flashsale's (HS256 with
``FLASHSALE_JWT_SECRET``), decoded on every request. Errors have Flashsale's status
codes and body (201 on success, 409 ``COUPON_SOLD_OUT`` / ``COUPON_ALREADY_ISSUED`` /
``OUT_OF_STOCK`` / ``INSUFFICIENT_BALANCE``, 404, 401, 422). Orders with a coupon or
``pay: false`` are outside the bench's scenarios and answered 422.

The engines are Flashsale's (:class:`flashsale.db.engine.Database`: the same pool
sizes; on SQLite ``BEGIN IMMEDIATE`` write transactions on one write connection per
process, so the SQLite baseline serialises its writers as Flashsale does and never
fails on a lock upgrade; SQLAlchemy leaves ``FOR UPDATE`` out on SQLite).

Every worker counts the transactions its engines end (commits and rollbacks) and
writes them to ``FLASHSALE_BENCH_STATS_DIR/<pid>.json`` every
:data:`STATS_INTERVAL_S` and at shutdown; the bench adds the files up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flashsale.api.responses import error_body
from flashsale.catalog.schemas import ProductDetail, VariantOut
from flashsale.catalog.service import product_status, window_is_open
from flashsale.coupons.schemas import IssueOut
from flashsale.db.engine import Database
from flashsale.db.models import (
    Coupon,
    InventoryMovement,
    Order,
    OrderItem,
    Payment,
    Product,
    UserCoupon,
    Variant,
    Wallet,
    WalletTransaction,
)
from flashsale.db.types import utcnow
from flashsale.orders.schemas import OrderIn, OrderItemOut, OrderOut, PaymentOut
from flashsale.settings import Settings

log = logging.getLogger("flashsale.bench.baseline")

#: Folder of the per-process transaction counts (set by the bench).
STATS_DIR_ENV = "FLASHSALE_BENCH_STATS_DIR"
#: Seconds between two writes of a worker's counts.
STATS_INTERVAL_S = 0.25


class BaselineError(Exception):
    """A refusal: HTTP ``status`` with Flashsale's error ``code``."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class TransactionCounter:
    """Commits and rollbacks ended by the engines it is attached to (this process)."""

    def __init__(self) -> None:
        self.commits = 0
        self.rollbacks = 0

    def attach(self, engine: Engine) -> None:
        """Count ``engine``'s transaction ends."""

        @event.listens_for(engine, "commit")
        def _on_commit(_conn: Any) -> None:
            self.commits += 1

        @event.listens_for(engine, "rollback")
        def _on_rollback(_conn: Any) -> None:
            self.rollbacks += 1

    def write(self, folder: Path) -> None:
        """Write ``{"pid", "commits", "rollbacks"}`` to ``folder/<pid>.json`` (atomically)."""
        pid = os.getpid()
        tmp = folder / f".{pid}.json.tmp"
        tmp.write_text(
            json.dumps({"pid": pid, "commits": self.commits, "rollbacks": self.rollbacks}),
            encoding="utf-8",
        )
        tmp.replace(folder / f"{pid}.json")


def read_transaction_counts(folder: Path) -> tuple[int, int]:
    """``(commits, rollbacks)`` summed over the worker files in ``folder``."""
    commits = rollbacks = 0
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        commits += int(data.get("commits", 0))
        rollbacks += int(data.get("rollbacks", 0))
    return commits, rollbacks


class _Baseline:
    def __init__(self, settings: Settings, db: Database, counter: TransactionCounter) -> None:
        self.secret = settings.jwt_secret.get_secret_value()
        self.db = db
        self.counter = counter

    @property
    def write_session(self) -> async_sessionmaker[AsyncSession]:
        return self.db.write_session

    @property
    def read_session(self) -> async_sessionmaker[AsyncSession]:
        return self.db.read_session


def _state(request: Request) -> _Baseline:
    state: _Baseline = request.app.state.baseline
    return state


BaselineState = Annotated[_Baseline, Depends(_state)]


async def _user_id(
    state: BaselineState, authorization: Annotated[str | None, Header()] = None
) -> int:
    """The caller's user id from ``Authorization: Bearer <jwt>`` (401 otherwise)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise BaselineError(401, "UNAUTHENTICATED", "Authentication required")
    try:
        claims = jwt.decode(token, state.secret, algorithms=["HS256"], options={"require": ["exp"]})
        return int(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise BaselineError(401, "UNAUTHENTICATED", "Invalid or expired token") from exc


UserId = Annotated[int, Depends(_user_id)]


async def _issue_coupon(state: _Baseline, coupon_id: int, user_id: int) -> IssueOut:
    async with state.write_session() as session, session.begin():
        coupon = (
            await session.execute(select(Coupon).where(Coupon.id == coupon_id).with_for_update())
        ).scalar_one_or_none()
        if coupon is None:
            raise BaselineError(404, "COUPON_NOT_FOUND", "Coupon not found", coupon_id=coupon_id)
        now = utcnow()
        starts, ends = coupon.issue_starts_at, coupon.issue_ends_at
        if (starts is not None and now < starts) or (ends is not None and now >= ends):
            raise BaselineError(409, "COUPON_NOT_ISSUABLE", "Coupon is outside its issue window")
        held = (
            await session.execute(
                select(UserCoupon.id).where(
                    UserCoupon.coupon_id == coupon_id, UserCoupon.user_id == user_id
                )
            )
        ).first()
        if held is not None:
            raise BaselineError(409, "COUPON_ALREADY_ISSUED", "Coupon already issued to this user")
        if coupon.issued_count >= coupon.total_quantity:
            raise BaselineError(409, "COUPON_SOLD_OUT", "Coupon sold out", coupon_id=coupon_id)
        issued = UserCoupon(
            coupon_id=coupon_id,
            user_id=user_id,
            status="ISSUED",
            issued_at=now,
            expires_at=now + timedelta(days=coupon.valid_days),
        )
        session.add(issued)
        coupon.issued_count += 1
        await session.flush()
        return IssueOut(
            user_coupon_id=issued.id,
            coupon_id=coupon_id,
            status="ISSUED",
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
        )


async def _place_order(state: _Baseline, user_id: int, body: OrderIn) -> OrderOut:
    if body.user_coupon_id is not None or not body.pay:
        raise BaselineError(
            422, "VALIDATION_ERROR", "The baseline takes only paid orders without a coupon"
        )
    if any(line.variant_id is None for line in body.items):
        raise BaselineError(422, "VALIDATION_ERROR", "Give variant_id on every line")
    wanted: dict[int, int] = {}
    for line in body.items:
        assert line.variant_id is not None
        if line.variant_id in wanted:
            raise BaselineError(422, "VALIDATION_ERROR", "A variant may appear at most once")
        wanted[line.variant_id] = line.quantity
    ids = sorted(wanted)
    async with state.write_session() as session, session.begin():
        rows = (
            await session.execute(
                select(Variant, Product)
                .join(Product, Product.id == Variant.product_id)
                .where(Variant.id.in_(ids))
                .order_by(Variant.id)
                .with_for_update(of=Variant)
            )
        ).all()
        found = {variant.id: (variant, product) for variant, product in rows}
        now = utcnow()
        for variant_id in ids:
            if variant_id not in found:
                raise BaselineError(
                    404, "VARIANT_NOT_FOUND", "Variant not found", variant_id=variant_id
                )
            variant, product = found[variant_id]
            if not window_is_open(product.sale_starts_at, product.sale_ends_at, now):
                raise BaselineError(409, "SALE_NOT_OPEN", "Product is not on sale now")
            if variant.stock < wanted[variant_id]:
                raise BaselineError(
                    409,
                    "OUT_OF_STOCK",
                    "Not enough stock",
                    variant_id=variant_id,
                    requested=wanted[variant_id],
                    available=variant.stock,
                )
        total = sum(found[v][0].price * wanted[v] for v in ids)
        wallet = (
            await session.execute(select(Wallet).where(Wallet.user_id == user_id).with_for_update())
        ).scalar_one_or_none()
        if wallet is None or wallet.balance < total:
            balance = 0 if wallet is None else wallet.balance
            raise BaselineError(
                409,
                "INSUFFICIENT_BALANCE",
                "Wallet balance too low",
                required=total,
                balance=balance,
            )
        order = Order(
            user_id=user_id,
            status="PAID",
            total_amount=total,
            discount_amount=0,
            paid_amount=total,
            user_coupon_id=None,
            created_at=now,
            paid_at=now,
            expires_at=None,
        )
        session.add(order)
        await session.flush()
        items = []
        for variant_id in ids:
            variant, product = found[variant_id]
            quantity = wanted[variant_id]
            variant.stock -= quantity
            item = OrderItem(
                order_id=order.id,
                product_id=product.id,
                variant_id=variant_id,
                product_name=product.name,
                variant_name=variant.name,
                unit_price=variant.price,
                quantity=quantity,
                amount=variant.price * quantity,
            )
            items.append(item)
            session.add(item)
            session.add(
                InventoryMovement(
                    variant_id=variant_id,
                    kind="RESERVE",
                    quantity=-quantity,
                    order_id=order.id,
                    created_at=now,
                )
            )
        wallet.balance -= total
        wallet.updated_at = now
        session.add(
            WalletTransaction(
                user_id=user_id,
                type="PAYMENT",
                amount=-total,
                balance_after=wallet.balance,
                order_id=order.id,
                created_at=now,
            )
        )
        payment = Payment(
            order_id=order.id, user_id=user_id, kind="PAYMENT", amount=total, created_at=now
        )
        session.add(payment)
        await session.flush()
        return OrderOut(
            order_id=order.id,
            status="PAID",
            items=[
                OrderItemOut(
                    product_id=i.product_id,
                    variant_id=i.variant_id,
                    product_name=i.product_name,
                    variant_name=i.variant_name,
                    unit_price=i.unit_price,
                    quantity=i.quantity,
                    amount=i.amount,
                )
                for i in items
            ],
            total_amount=total,
            discount_amount=0,
            paid_amount=total,
            user_coupon_id=None,
            created_at=now,
            paid_at=now,
            expires_at=None,
            payments=[PaymentOut(id=payment.id, kind="PAYMENT", amount=total, created_at=now)],
        )


async def _product_page(state: _Baseline, product_id: int) -> ProductDetail:
    async with state.read_session() as session, session.begin():
        product = await session.get(Product, product_id)
        if product is None:
            raise BaselineError(
                404, "PRODUCT_NOT_FOUND", "Product not found", product_id=product_id
            )
        found = (
            (
                await session.execute(
                    select(Variant).where(Variant.product_id == product_id).order_by(Variant.id)
                )
            )
            .scalars()
            .all()
        )
        vs = [
            VariantOut(id=v.id, sku=v.sku, name=v.name, price=v.price, stock=v.stock) for v in found
        ]
        stock = sum(v.stock for v in vs)
        return ProductDetail(
            id=product.id,
            name=product.name,
            price=min((v.price for v in vs), default=0),
            stock=stock,
            status=product_status(product.sale_starts_at, product.sale_ends_at, stock, utcnow()),
            sale_starts_at=product.sale_starts_at,
            sale_ends_at=product.sale_ends_at,
            description=product.description,
            per_user_limit=product.per_user_limit,
            variants=vs,
        )


async def _baseline_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BaselineError)
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(error_body("VALIDATION_ERROR", "Invalid input"), status_code=422)


async def _write_stats_every(
    counter: TransactionCounter, folder: Path, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)
        try:
            counter.write(folder)
        except OSError as exc:  # the figures are the bench's, never the service's concern
            log.warning("cannot write transaction counts: %s", exc)


def create_app(settings: Settings, stats_dir: Path | None = None) -> FastAPI:
    """The baseline app for ``settings`` (database URL, JWT secret, pool size).

    ``stats_dir``: where each process writes its transaction counts (None: nowhere).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        counter = TransactionCounter()
        for engine in db.engines:
            counter.attach(engine.sync_engine)
        app.state.baseline = _Baseline(settings, db, counter)
        stop = asyncio.Event()
        writer = None
        if stats_dir is not None:
            writer = asyncio.create_task(_write_stats_every(counter, stats_dir, stop))
        try:
            yield
        finally:
            stop.set()
            if writer is not None:
                await writer
            await db.dispose()

    app = FastAPI(title="Flashsale bench baseline", lifespan=lifespan)
    app.add_exception_handler(BaselineError, _baseline_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/stats")
    async def stats(state: BaselineState) -> dict[str, int]:
        """This worker's transaction counts (each worker answers for itself)."""
        return {
            "pid": os.getpid(),
            "commits": state.counter.commits,
            "rollbacks": state.counter.rollbacks,
        }

    @app.post("/api/v1/coupons/{coupon_id}/issue", status_code=201)
    async def issue_coupon(coupon_id: int, user_id: UserId, state: BaselineState) -> IssueOut:
        """Claim one coupon: lock the coupon row, check, insert, count."""
        return await _issue_coupon(state, coupon_id, user_id)

    @app.post("/api/v1/orders", status_code=201)
    async def create_order(body: OrderIn, user_id: UserId, state: BaselineState) -> OrderOut:
        """Order and pay: lock the variant rows and the wallet, check, update, insert."""
        return await _place_order(state, user_id, body)

    @app.get("/api/v1/products/{product_id}")
    async def get_product(product_id: int, state: BaselineState) -> ProductDetail:
        """One product with its variants."""
        return await _product_page(state, product_id)

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from ``FLASHSALE_*``, the stats folder from
    :data:`STATS_DIR_ENV`."""
    folder = os.environ.get(STATS_DIR_ENV)
    return create_app(Settings(), Path(folder) if folder else None)


def serve(host: str, port: int, workers: int) -> int:
    """Run the baseline with uvicorn (``workers`` processes) until stopped; the database
    must be migrated and seeded already."""
    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        "flashsale.bench.http.baseline:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
