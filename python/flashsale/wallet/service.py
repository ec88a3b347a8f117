"""Wallet rules (docs/rules.md) and ledger writes.

Every balance change is one conditional ``UPDATE`` plus one ``wallet_transactions``
row with the signed amount and the balance after it, in the same transaction,
so balance = Σ ledger always holds (docs/invariants.md#money).

The functions take a synchronous :class:`~sqlalchemy.Connection`: they run in the
group-commit writer's thread or, through :func:`flashsale.db.writer.run_in_session`,
in a request's own transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from flashsale.db.models import wallet_transactions, wallets
from flashsale.db.prepared import Prepared
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx
from flashsale.errors import (
    BalanceLimitExceeded,
    ChargeAmountOutOfRange,
    InsufficientBalance,
    Unauthenticated,
)

MIN_CHARGE = 1_000
MAX_CHARGE = 1_000_000
MAX_BALANCE = 100_000_000

# Hot-path statements, compiled once and run on the driver's cursor
# (:class:`~flashsale.db.prepared.Prepared`).
_CREDIT = Prepared(
    update(wallets)
    .where(
        wallets.c.user_id == bindparam("p_user"),
        wallets.c.balance + bindparam("p_amount") <= MAX_BALANCE,
    )
    .values(balance=wallets.c.balance + bindparam("p_amount"), updated_at=bindparam("p_now"))
    .returning(wallets.c.balance)
)
_DEBIT = Prepared(
    update(wallets)
    .where(wallets.c.user_id == bindparam("p_user"), wallets.c.balance >= bindparam("p_amount"))
    .values(balance=wallets.c.balance - bindparam("p_amount"), updated_at=bindparam("p_now"))
    .returning(wallets.c.balance)
)
# A refund returns money already taken: the charge cap does not apply to it.
_REFUND = Prepared(
    update(wallets)
    .where(wallets.c.user_id == bindparam("p_user"))
    .values(balance=wallets.c.balance + bindparam("p_amount"), updated_at=bindparam("p_now"))
    .returning(wallets.c.balance)
)
_BALANCE = Prepared(select(wallets.c.balance).where(wallets.c.user_id == bindparam("p_user")))
_APPEND_LEDGER = Prepared(
    insert(wallet_transactions).returning(wallet_transactions.c.id),
    columns=["user_id", "type", "amount", "balance_after", "order_id", "created_at"],
)


def check_charge_amount(amount: int) -> None:
    """The charge range (docs/rules.md): 1,000 ≤ amount ≤ 1,000,000 KRW per charge.

    Raises:
        ChargeAmountOutOfRange: outside the range (422).
    """
    if not MIN_CHARGE <= amount <= MAX_CHARGE:
        raise ChargeAmountOutOfRange(amount=amount, min=MIN_CHARGE, max=MAX_CHARGE)


def charge(
    conn: Connection, user_id: int, amount: int, *, now: datetime | None = None
) -> tuple[int, int, datetime]:
    """Add ``amount`` KRW to the wallet; returns ``(transaction_id, balance, created_at)``.

    ``now`` (UTC) defaults to the current time; ``flashsale seed`` passes past times.

    Raises:
        ChargeAmountOutOfRange: amount outside 1,000..1,000,000 (422).
        Unauthenticated: the user no longer exists (401).
        BalanceLimitExceeded: the balance would pass 100,000,000 (409).
    """
    check_charge_amount(amount)
    now = utcnow() if now is None else now
    params = {"p_user": user_id, "p_amount": amount, "p_now": now}
    balance = _CREDIT.scalar(conn, params)
    if balance is None:
        if _BALANCE.first(conn, {"p_user": user_id}) is None:
            raise Unauthenticated("User no longer exists")
        raise BalanceLimitExceeded(amount=amount, max_balance=MAX_BALANCE)
    tx_id = append_ledger(conn, user_id, "CHARGE", amount, balance, None, now)
    return tx_id, balance, now


def charge_op(
    tx: Tx, *, user_id: int, amount: int, now: datetime | None = None
) -> tuple[int, int, datetime]:
    """:func:`charge` as a writer operation (``POST /me/wallet/charges``, ``flashsale seed``)."""
    return charge(tx.conn, user_id, amount, now=now)


def debit(conn: Connection, user_id: int, amount: int, order_id: int, now: datetime) -> int:
    """Take ``amount`` KRW (≥ 0) for an order's PAYMENT; returns the new balance.

    Raises:
        InsufficientBalance: the balance is lower than ``amount`` (409).
    """
    params = {"p_user": user_id, "p_amount": amount, "p_now": now}
    balance = _DEBIT.scalar(conn, params)
    if balance is None:
        current = get_balance(conn, user_id)
        raise InsufficientBalance(required=amount, balance=current)
    append_ledger(conn, user_id, "PAYMENT", -amount, balance, order_id, now)
    return int(balance)


def refund(conn: Connection, user_id: int, amount: int, order_id: int, now: datetime) -> int:
    """Give back ``amount`` KRW (≥ 0) of a cancelled order as a REFUND; returns the new balance.

    The balance cap of charges (100,000,000 KRW) does not apply: the money was the user's.
    """
    params = {"p_user": user_id, "p_amount": amount, "p_now": now}
    balance = int(_REFUND.scalar_one(conn, params))
    append_ledger(conn, user_id, "REFUND", amount, balance, order_id, now)
    return balance


def append_ledger(
    conn: Connection,
    user_id: int,
    type_: str,
    amount: int,
    balance_after: int,
    order_id: int | None,
    now: datetime,
) -> int:
    """Append one ledger row (signed ``amount``); returns its id."""
    row = {
        "user_id": user_id,
        "type": type_,
        "amount": amount,
        "balance_after": balance_after,
        "order_id": order_id,
        "created_at": now,
    }
    tx_id: int = _APPEND_LEDGER.scalar_one(conn, row)
    return tx_id


def get_balance(conn: Connection, user_id: int) -> int:
    """The wallet balance in KRW (0 for a user without a wallet row)."""
    value = _BALANCE.scalar(conn, {"p_user": user_id})
    return int(value or 0)
