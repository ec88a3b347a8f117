"""One error hierarchy with stable machine-readable codes (docs/api.md, "Errors").

Every domain error is a :class:`FlashsaleError`; one handler in
:mod:`flashsale.api.app` turns it into ``{"code", "message", "details"}`` with
the error's HTTP status. A refused request changes nothing: services raise
before commit, and the request's transaction is rolled back.

Each class's docstring says when the API answers with it; docs/reference/errors.md
is generated from these docstrings (``python -m flashsale.reference --write``), together
with the codes the handlers of :mod:`flashsale.api.app` produce without a class
(unknown route, wrong method, request validation, database busy).

The codes, statuses and ``details`` keys are part of the ``/api/v1`` contract
(docs/compatibility.md): clients branch on them, so they never change.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlashsaleError(Exception):
    """An unexpected failure (500): an exception that is no refusal (a bug), logged with
    its traceback and answered without details.

    Base of all domain errors. Subclasses set ``code``, ``status`` and
    ``default_message``; ``details`` is JSON-serialisable context (ids, requested and
    available amounts) given as keyword arguments where the error is raised.

    Attributes:
        code: stable machine-readable code, e.g. ``OUT_OF_STOCK``.
        status: HTTP status the API answers with.
        message: human-readable text (``default_message`` unless the raiser gave one).
        details: JSON-serialisable context.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details
        super().__init__(self.message)


# --- 400 --------------------------------------------------------------------------------


class CodeRefused(FlashsaleError):
    """Base of the 400 refusals of a one-time code sent by mail (the password reset of
    docs/api.md, "Password reset"): the request is well-formed but the code does not
    (or no longer) work. Never raised itself."""

    status = 400


class ResetCodeInvalid(CodeRefused):
    """``POST /auth/password-reset/confirm`` with a code that is not the one last sent to
    that address, or an address without an account (the same answer, so accounts
    cannot be probed). The wrong try is counted against a live code: after 5 the code
    is void.
    """

    code = "RESET_CODE_INVALID"
    default_message = "Wrong email or reset code"


class ResetCodeExpired(CodeRefused):
    """``POST /auth/password-reset/confirm`` with the right code, unused, but past its
    validity (``FLASHSALE_PASSWORD_RESET_TTL_S``, 15 minutes by default): ask for a
    new code.
    """

    code = "RESET_CODE_EXPIRED"
    default_message = "The reset code has expired: ask for a new one"


class ResetCodeUsed(CodeRefused):
    """``POST /auth/password-reset/confirm`` with the right code after it already set a
    password (a code works once; of two confirms with it at the same time, one wins and
    the other gets this).
    """

    code = "RESET_CODE_USED"
    default_message = "The reset code was already used"


class ResetCodeVoid(CodeRefused):
    """``POST /auth/password-reset/confirm`` with the right code after 5 wrong codes were
    tried against it: the code is void; ask for a new one.
    """

    code = "RESET_CODE_VOID"
    default_message = "Too many wrong codes: the reset code is void, ask for a new one"


# --- 401 / 403 --------------------------------------------------------------------------


class Unauthenticated(FlashsaleError):
    """A route that needs a token got none, a malformed ``Authorization`` header (not
    ``Bearer <JWT>``), a token with a bad signature or past its expiry (message
    "Invalid or expired token"), or the token of a user that no longer exists.
    """

    code = "UNAUTHENTICATED"
    status = 401
    default_message = "Authentication required"


class InvalidCredentials(FlashsaleError):
    """``POST /auth/token`` with an unknown email or a wrong password: one answer for
    both, so that accounts cannot be probed.
    """

    code = "INVALID_CREDENTIALS"
    status = 401
    default_message = "Wrong email or password"


class RefreshTokenInvalid(FlashsaleError):
    """``POST /auth/refresh`` with a refresh token this service never issued (or one
    already purged after its expiry), or one whose user no longer exists.
    """

    code = "REFRESH_TOKEN_INVALID"
    status = 401
    default_message = "Unknown refresh token"


class RefreshTokenExpired(FlashsaleError):
    """``POST /auth/refresh`` with an unused refresh token past its ``expires_at``
    (``FLASHSALE_REFRESH_TTL_S`` after it was issued): log in again.
    """

    code = "REFRESH_TOKEN_EXPIRED"
    status = 401
    default_message = "Refresh token expired"


class RefreshTokenRevoked(FlashsaleError):
    """``POST /auth/refresh`` with a refresh token of a revoked family: logged out,
    the password changed, or a reuse detected earlier. Log in again.
    """

    code = "REFRESH_TOKEN_REVOKED"
    status = 401
    default_message = "Refresh token revoked"


class RefreshTokenReused(FlashsaleError):
    """``POST /auth/refresh`` with a refresh token that was already used (rotated) once:
    a sign that it was copied (theft detection, OAuth 2.0 Security BCP). Its whole
    family is revoked with this answer, the newest token included; log in again. Of
    two refreshes with one token at the same time, one wins and the other gets this.
    """

    code = "REFRESH_TOKEN_REUSED"
    status = 401
    default_message = "Refresh token already used: every session of this login is revoked"


class WrongCurrentPassword(FlashsaleError):
    """``PUT /me/password`` whose ``current_password`` is not the caller's password
    (also when the password was changed by another request meanwhile).
    """

    code = "WRONG_CURRENT_PASSWORD"
    status = 403
    default_message = "The current password is wrong"


class Forbidden(FlashsaleError):
    """A route under ``/admin`` called with a valid token of a user without the admin
    role (message "Admin role required").
    """

    code = "FORBIDDEN"
    status = 403
    default_message = "Not allowed"


# --- 404 --------------------------------------------------------------------------------


class NotFound(FlashsaleError):
    """Base of the 404 refusals: the id in the path or the body names nothing the
    caller may see. Never raised itself."""

    status = 404


class ProductNotFound(NotFound):
    """``GET /products/{product_id}`` for an unknown product, or an order line that
    gives only a ``product_id`` that names no product.

    Details: ``product_id``.
    """

    code = "PRODUCT_NOT_FOUND"
    default_message = "Product not found"


class VariantNotFound(NotFound):
    """An order or checkout line, a cart item (``PUT /me/cart/items/{variant_id}``) or an
    admin restock names a variant that does not exist.

    Details: ``variant_id``.
    """

    code = "VARIANT_NOT_FOUND"
    default_message = "Variant not found"


class CouponNotFound(NotFound):
    """``GET /coupons/{coupon_id}`` or ``POST /coupons/{coupon_id}/issue`` for a coupon
    that does not exist.

    Details: ``coupon_id``.
    """

    code = "COUPON_NOT_FOUND"
    default_message = "Coupon not found"


class OrderNotFound(NotFound):
    """``GET``, ``/payment`` or ``/cancel`` of ``/orders/{order_id}`` for an order that
    does not exist or is another user's (the same answer for both).

    Details: ``order_id``.
    """

    code = "ORDER_NOT_FOUND"
    default_message = "Order not found"


# --- 409 --------------------------------------------------------------------------------


class Conflict(FlashsaleError):
    """Base of the 409 refusals: the request is well-formed but the state of the sale,
    the stock, the wallet or the coupon forbids it (a business rule of docs/rules.md).
    Never raised itself."""

    status = 409


class EmailTaken(Conflict):
    """``POST /auth/signup`` with an email (compared lower-cased) that is already
    registered.

    Details: ``email``.
    """

    code = "EMAIL_TAKEN"
    default_message = "Email already registered"


class BalanceLimitExceeded(Conflict):
    """``POST /me/wallet/charges`` would take the balance above the wallet's maximum
    (``MAX_BALANCE`` of :mod:`flashsale.wallet.service`).

    Details: ``amount``, ``max_balance``.
    """

    code = "BALANCE_LIMIT_EXCEEDED"
    default_message = "Balance would exceed the wallet's maximum"

    def __init__(self, message: str | None = None, *, amount: int, max_balance: int) -> None:
        super().__init__(
            message or f"Balance would exceed {max_balance:,} KRW",
            amount=amount,
            max_balance=max_balance,
        )


class OutOfStock(Conflict):
    """An order (``POST /orders``) or a checkout (``POST /me/cart/checkout``) asks for
    more units of a variant than are left: refused by this process's stock gate, or by
    the database's conditional stock update.

    Details: ``variant_id``, ``requested``, ``available``.
    """

    code = "OUT_OF_STOCK"
    default_message = "Not enough stock"


class InsufficientBalance(Conflict):
    """An order or checkout paid at once (``pay`` true), or ``POST
    /orders/{order_id}/payment``, costs more than the wallet holds; a PENDING order
    stays PENDING.

    Details: ``required``, ``balance``.
    """

    code = "INSUFFICIENT_BALANCE"
    default_message = "Wallet balance too low"


class CouponNotUsable(Conflict):
    """An order's ``user_coupon_id`` is not the caller's, is not ISSUED (already USED;
    ``details.status``), has expired (``details.expires_at``), or was used by another
    order at the same moment.

    Details: ``status`` or ``expires_at`` when they explain the refusal.
    """

    code = "COUPON_NOT_USABLE"
    default_message = "Coupon cannot be used"


class CouponMinOrderNotMet(Conflict):
    """An order's total (before the discount) is below its coupon's
    ``min_order_amount``.

    Details: ``min_order_amount``, ``total_amount``.
    """

    code = "COUPON_MIN_ORDER_NOT_MET"
    default_message = "Order total below coupon minimum"


class SaleNotOpen(Conflict):
    """An order or checkout names a product outside its sale window
    (``sale_starts_at ≤ now < sale_ends_at``).

    Details: ``product_id``, ``sale_starts_at``, ``sale_ends_at``.
    """

    code = "SALE_NOT_OPEN"
    default_message = "Product is not on sale now"


class PurchaseLimitExceeded(Conflict):
    """The units of a product the buyer already holds (PAID or PENDING orders) plus
    this order's would pass the product's ``per_user_limit``.

    Details: ``product_id``, ``limit``, ``already``, ``requested``.
    """

    code = "PURCHASE_LIMIT_EXCEEDED"
    default_message = "Per-user purchase limit exceeded"


class CouponSoldOut(Conflict):
    """``POST /coupons/{coupon_id}/issue`` after the coupon's ``total_quantity`` has
    been issued (final: refused at the edge by the coupon gate once it knows).

    Details: ``coupon_id``.
    """

    code = "COUPON_SOLD_OUT"
    default_message = "Coupon sold out"


class CouponAlreadyIssued(Conflict):
    """``POST /coupons/{coupon_id}/issue`` by a user who holds that coupon already (one
    per user, whether sold out or not).

    Details: ``coupon_id``.
    """

    code = "COUPON_ALREADY_ISSUED"
    default_message = "Coupon already issued to this user"


class CouponNotIssuable(Conflict):
    """``POST /coupons/{coupon_id}/issue`` before ``issue_starts_at`` or from
    ``issue_ends_at`` on.

    Details: ``coupon_id``, ``issue_starts_at``, ``issue_ends_at``.
    """

    code = "COUPON_NOT_ISSUABLE"
    default_message = "Coupon is outside its issue window"


class OrderNotPayable(Conflict):
    """``POST /orders/{order_id}/payment`` for an order that is not PENDING (paid,
    cancelled, expired) or whose payment deadline ``expires_at`` has passed
    (``details.status`` is then ``EXPIRED``).

    Details: ``order_id``, ``status``.
    """

    code = "ORDER_NOT_PAYABLE"
    default_message = "Order cannot be paid (not pending or expired)"


class OrderNotCancellable(Conflict):
    """``POST /orders/{order_id}/cancel`` for an order already CANCELLED or EXPIRED, or
    one whose status changed while it was being cancelled (``details.status`` is then
    ``CHANGED``).

    Details: ``order_id``, ``status``.
    """

    code = "ORDER_NOT_CANCELLABLE"
    default_message = "Order cannot be cancelled"


class IdempotencyKeyInUse(Conflict):
    """A POST with an ``Idempotency-Key`` whose first request is still running (retry
    later: the key is taken over once its lock, ``FLASHSALE_IDEMPOTENCY_LOCK_S``, has
    passed).

    Details: ``idempotency_key``.
    """

    code = "IDEMPOTENCY_KEY_IN_USE"
    default_message = "A request with this Idempotency-Key is still running"


class CartEmpty(Conflict):
    """``POST /me/cart/checkout`` with an empty cart."""

    code = "CART_EMPTY"
    default_message = "The cart is empty"


class CartFull(Conflict):
    """``PUT /me/cart/items/{variant_id}`` adds a new variant to a cart that holds the
    most variants an order may have (``MAX_CART_ITEMS`` of :mod:`flashsale.cart.service`).

    Details: ``max_items``.
    """

    code = "CART_FULL"
    default_message = "The cart is full"

    def __init__(self, message: str | None = None, *, max_items: int) -> None:
        super().__init__(
            message or f"The cart holds at most {max_items} variants", max_items=max_items
        )


# --- 422 --------------------------------------------------------------------------------


class InvalidRequest(FlashsaleError):
    """Base of the 422 refusals the services raise (request validation by FastAPI
    answers ``VALIDATION_ERROR`` too). Never raised itself."""

    status = 422


class IdempotencyKeyReused(InvalidRequest):
    """An ``Idempotency-Key`` already used by the caller for a different request
    (another method, path or body).

    Details: ``idempotency_key``.
    """

    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "Idempotency-Key was already used with a different request"


class ValidationFailed(InvalidRequest):
    """Also a rule the request schema cannot check: an admin product whose SKU is already
    used, an order naming a variant twice, or a line whose ``variant_id`` is not a
    variant of its ``product_id``.

    Details: ``field`` and the values concerned (``sku``, ``variant_id``, ``product_id``).
    """

    code = "VALIDATION_ERROR"
    default_message = "Invalid input"


class ChargeAmountOutOfRange(InvalidRequest):
    """``POST /me/wallet/charges`` with an amount outside the allowed range
    (``MIN_CHARGE`` to ``MAX_CHARGE`` of :mod:`flashsale.wallet.service`, inclusive).

    Details: ``amount``, ``min``, ``max``.
    """

    code = "CHARGE_AMOUNT_OUT_OF_RANGE"
    default_message = "Charge amount out of range"

    def __init__(self, message: str | None = None, *, amount: int, min: int, max: int) -> None:
        super().__init__(
            message or f"Charge amount must be between {min:,} and {max:,} KRW",
            amount=amount,
            min=min,
            max=max,
        )


class VariantRequired(InvalidRequest):
    """An order line gives only a ``product_id`` for a product that has several
    variants: it must give ``variant_id``.

    Details: ``product_id``.
    """

    code = "VARIANT_REQUIRED"
    default_message = "Product has several variants: give variant_id"


class InvalidCursor(InvalidRequest):
    """A paged list (``GET /products``, ``/me/orders``, ``/me/wallet/transactions``)
    got a ``cursor`` this service did not make.

    Details: ``cursor``.
    """

    code = "INVALID_CURSOR"
    default_message = "Malformed pagination cursor"


# --- 503 --------------------------------------------------------------------------------


class ServiceBusy(FlashsaleError):
    """The database did not answer in time: SQLite's lock still held past
    ``FLASHSALE_DB_BUSY_TIMEOUT_MS``, or PostgreSQL unreachable (any database operational
    error is answered so). Nothing was changed; the answer carries ``Retry-After: 1``.
    """

    code = "SERVICE_BUSY"
    status = 503
    default_message = "Database busy, retry later"
