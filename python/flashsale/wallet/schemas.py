"""Bodies of ``/me/wallet``. Money is integer KRW, times UTC."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ChargeRequest(BaseModel):
    # Range rule checked by the service (CHARGE_AMOUNT_OUT_OF_RANGE); the bound
    # here only keeps absurd numbers out of the database.
    amount: int = Field(strict=True, ge=-(2**53), le=2**53)


class ChargeOut(BaseModel):
    transaction_id: int
    amount: int
    balance: int
    created_at: datetime


class WalletOut(BaseModel):
    user_id: int
    balance: int
    updated_at: datetime


class TransactionOut(BaseModel):
    id: int
    type: str
    amount: int
    balance_after: int
    order_id: int | None
    created_at: datetime


class TransactionPage(BaseModel):
    items: list[TransactionOut]
    next_cursor: str | None
