"""Users: sign-up, credential checks and the admin bootstrap."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.auth.security import Principal, hash_password, verify_password
from flashsale.db.models import users, wallets
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx, run_in_session
from flashsale.errors import EmailTaken, InvalidCredentials

_INSERT_USER = insert(users).returning(users.c.id)


def create_user_op(
    tx: Tx, *, email: str, password_hash: str, name: str, role: str = "customer"
) -> int:
    """Insert a user and an empty wallet (balance 0 KRW); returns the user id (a writer
    operation: it runs in the group-commit writer's thread, or in a session through
    :func:`flashsale.db.writer.run_in_session`).

    ``email`` is stored lower-cased; ``password_hash`` is already hashed
    (:func:`hash_password`, which is slow: never inside the writer).

    Raises:
        EmailTaken: the (lower-cased) email is registered (409). In a writer batch only
            this operation's savepoint is rolled back.
    """
    email = email.lower()
    now = utcnow()
    try:
        user_id: int = tx.conn.execute(
            _INSERT_USER,
            {
                "email": email,
                "name": name,
                "password_hash": password_hash,
                "role": role,
                "created_at": now,
            },
        ).scalar_one()
    except IntegrityError as exc:
        raise EmailTaken(email=email) from exc
    tx.conn.execute(insert(wallets), {"user_id": user_id, "balance": 0, "updated_at": now})
    return user_id


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    hash_cost: int,
    role: str = "customer",
) -> int:
    """:func:`create_user_op` in ``session``'s transaction (``flashsale seed``, the CLI),
    the password hashed first in a worker thread so it never blocks the event loop.

    The password must already satisfy the sign-up rule.

    Raises:
        EmailTaken: the (lower-cased) email is registered (409).
    """
    password_hash = await anyio.to_thread.run_sync(hash_password, password, hash_cost)
    op = partial(create_user_op, email=email, password_hash=password_hash, name=name, role=role)
    return await run_in_session(session, op)


async def authenticate(session: AsyncSession, email: str, password: str) -> Principal:
    """The principal for valid credentials.

    Raises:
        InvalidCredentials: unknown email or wrong password (401; the same answer
            for both, so accounts cannot be probed).
    """
    row = (
        await session.execute(
            select(users.c.id, users.c.role, users.c.password_hash).where(
                users.c.email == email.lower()
            )
        )
    ).first()
    if row is None:
        raise InvalidCredentials()
    if not await anyio.to_thread.run_sync(verify_password, password, row.password_hash):
        raise InvalidCredentials()
    return Principal(user_id=row.id, role=row.role)


_USER_BY_EMAIL = select(users.c.id).where(users.c.email == bindparam("p_email"))


def ensure_admin_op(tx: Tx, *, email: str, password_hash: str) -> tuple[int, bool]:
    """Create the admin ``email`` with ``password_hash`` unless that user exists (a
    writer operation); returns ``(user_id, created)``."""
    existing = tx.conn.execute(_USER_BY_EMAIL, {"p_email": email.lower()}).first()
    if existing is not None:
        return int(existing[0]), False
    user_id = create_user_op(
        tx, email=email, password_hash=password_hash, name="Administrator", role="admin"
    )
    return user_id, True


async def ensure_admin(
    session: AsyncSession, *, email: str, password: str, hash_cost: int
) -> tuple[int, bool]:
    """Create the admin ``email`` unless that user exists; returns ``(user_id, created)``
    (:func:`ensure_admin_op` in ``session``'s transaction; the password is hashed only
    when the user is missing).

    Called by ``flashsale users create-admin``, and by ``flashsale serve`` at start-up
    when ``FLASHSALE_ADMIN_EMAIL`` and ``FLASHSALE_ADMIN_PASSWORD`` are set (docs/cli.md).
    """
    existing = (await session.execute(_USER_BY_EMAIL, {"p_email": email.lower()})).first()
    if existing is not None:
        return int(existing[0]), False
    password_hash = await anyio.to_thread.run_sync(hash_password, password, hash_cost)
    op = partial(ensure_admin_op, email=email, password_hash=password_hash)
    return await run_in_session(session, op)
