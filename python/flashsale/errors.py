"""One error hierarchy with stable machine-readable codes (DESIGN §5 "Errors").

Every domain error is a :class:`FlashsaleError`; one handler in
:mod:`flashsale.api.app` turns it into ``{"code", "message", "details"}`` with
the error's HTTP status. A refused request changes nothing: services raise
before commit, and the request's transaction is rolled back.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlashsaleError(Exception):
    """Base of all domain errors.

    Attributes:
        code: stable machine-readable code, e.g. ``OUT_OF_STOCK``.
        status: HTTP status the API answers with.
        details: JSON-serialisable context (ids, requested and available amounts).
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details
        super().__init__(self.message)


def _error(name: str, code: str, status: int, message: str) -> type[FlashsaleError]:
    return type(
        name,
        (FlashsaleError,),
        {"code": code, "status": status, "default_message": message, "__doc__": message},
    )


# 401 / 403
Unauthenticated = _error("Unauthenticated", "UNAUTHENTICATED", 401, "Authentication required")
InvalidCredentials = _error(
    "InvalidCredentials", "INVALID_CREDENTIALS", 401, "Wrong email or password"
)
Forbidden = _error("Forbidden", "FORBIDDEN", 403, "Not allowed")
# 404
ProductNotFound = _error("ProductNotFound", "PRODUCT_NOT_FOUND", 404, "Product not found")
VariantNotFound = _error("VariantNotFound", "VARIANT_NOT_FOUND", 404, "Variant not found")
CouponNotFound = _error("CouponNotFound", "COUPON_NOT_FOUND", 404, "Coupon not found")
OrderNotFound = _error("OrderNotFound", "ORDER_NOT_FOUND", 404, "Order not found")
# 409
EmailTaken = _error("EmailTaken", "EMAIL_TAKEN", 409, "Email already registered")
BalanceLimitExceeded = _error(
    "BalanceLimitExceeded", "BALANCE_LIMIT_EXCEEDED", 409, "Balance would exceed 100,000,000 KRW"
)
OutOfStock = _error("OutOfStock", "OUT_OF_STOCK", 409, "Not enough stock")
InsufficientBalance = _error(
    "InsufficientBalance", "INSUFFICIENT_BALANCE", 409, "Wallet balance too low"
)
CouponNotUsable = _error("CouponNotUsable", "COUPON_NOT_USABLE", 409, "Coupon cannot be used")
CouponMinOrderNotMet = _error(
    "CouponMinOrderNotMet", "COUPON_MIN_ORDER_NOT_MET", 409, "Order total below coupon minimum"
)
SaleNotOpen = _error("SaleNotOpen", "SALE_NOT_OPEN", 409, "Product is not on sale now")
PurchaseLimitExceeded = _error(
    "PurchaseLimitExceeded", "PURCHASE_LIMIT_EXCEEDED", 409, "Per-user purchase limit exceeded"
)
CouponSoldOut = _error("CouponSoldOut", "COUPON_SOLD_OUT", 409, "Coupon sold out")
CouponAlreadyIssued = _error(
    "CouponAlreadyIssued", "COUPON_ALREADY_ISSUED", 409, "Coupon already issued to this user"
)
CouponNotIssuable = _error(
    "CouponNotIssuable", "COUPON_NOT_ISSUABLE", 409, "Coupon is outside its issue window"
)
OrderNotPayable = _error(
    "OrderNotPayable", "ORDER_NOT_PAYABLE", 409, "Order cannot be paid (not pending or expired)"
)
OrderNotCancellable = _error(
    "OrderNotCancellable", "ORDER_NOT_CANCELLABLE", 409, "Order cannot be cancelled"
)
IdempotencyKeyInUse = _error(
    "IdempotencyKeyInUse",
    "IDEMPOTENCY_KEY_IN_USE",
    409,
    "A request with this Idempotency-Key is still running",
)
CartEmpty = _error("CartEmpty", "CART_EMPTY", 409, "The cart is empty")
CartFull = _error("CartFull", "CART_FULL", 409, "The cart holds at most 50 variants")
# 422
IdempotencyKeyReused = _error(
    "IdempotencyKeyReused",
    "IDEMPOTENCY_KEY_REUSED",
    422,
    "Idempotency-Key was already used with a different request",
)
ValidationFailed = _error("ValidationFailed", "VALIDATION_ERROR", 422, "Invalid input")
ChargeAmountOutOfRange = _error(
    "ChargeAmountOutOfRange",
    "CHARGE_AMOUNT_OUT_OF_RANGE",
    422,
    "Charge amount must be between 1,000 and 1,000,000 KRW",
)
VariantRequired = _error(
    "VariantRequired", "VARIANT_REQUIRED", 422, "Product has several variants: give variant_id"
)
InvalidCursor = _error("InvalidCursor", "INVALID_CURSOR", 422, "Malformed pagination cursor")
# 503
ServiceBusy = _error("ServiceBusy", "SERVICE_BUSY", 503, "Database busy, retry later")
