"""``/me/wallet``: balance, charges and the ledger."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select

from flashsale.api.deps import (
    CurrentUser,
    Cursor,
    Limit,
    ReadSession,
    app_state,
    decode_cursor,
    encode_cursor,
)
from flashsale.api.idempotency import IdempotencyKey, submit_write
from flashsale.db.models import wallet_transactions, wallets
from flashsale.db.writer import Locks, Tx
from flashsale.errors import Unauthenticated
from flashsale.wallet import service
from flashsale.wallet.schemas import (
    ChargeOut,
    ChargeRequest,
    TransactionOut,
    TransactionPage,
    WalletOut,
)

router = APIRouter(prefix="/me/wallet", tags=["wallet"])


@router.get("")
async def get_wallet(user: CurrentUser, session: ReadSession) -> WalletOut:
    """The caller's balance (KRW)."""
    row = (
        await session.execute(
            select(wallets.c.balance, wallets.c.updated_at).where(wallets.c.user_id == user.user_id)
        )
    ).first()
    if row is None:
        raise Unauthenticated("User no longer exists")
    return WalletOut(user_id=user.user_id, balance=row.balance, updated_at=row.updated_at)


@router.post("/charges", status_code=status.HTTP_201_CREATED)
async def create_charge(
    body: ChargeRequest, user: CurrentUser, request: Request, idempotency_key: IdempotencyKey = None
) -> ChargeOut:
    """Charge points (422 ``CHARGE_AMOUNT_OUT_OF_RANGE``, 409 ``BALANCE_LIMIT_EXCEEDED``)."""

    def charge(tx: Tx) -> ChargeOut:
        tx_id, balance, created_at = service.charge_op(tx, user_id=user.user_id, amount=body.amount)
        return ChargeOut(
            transaction_id=tx_id, amount=body.amount, balance=balance, created_at=created_at
        )

    state = app_state(request)
    locks = Locks(wallets=frozenset((user.user_id,)))
    return await submit_write(
        request, state, user.user_id, idempotency_key, charge, status.HTTP_201_CREATED, locks
    )


@router.get("/transactions")
async def list_transactions(
    user: CurrentUser, session: ReadSession, limit: Limit = 20, cursor: Cursor = None
) -> TransactionPage:
    """The ledger, newest first, keyset-paginated."""
    before = decode_cursor(cursor)
    t = wallet_transactions
    stmt = select(t).where(t.c.user_id == user.user_id).order_by(t.c.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(t.c.id < before)
    rows = (await session.execute(stmt)).mappings().all()
    items = [TransactionOut.model_validate(dict(r)) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return TransactionPage(items=items, next_cursor=next_cursor)
