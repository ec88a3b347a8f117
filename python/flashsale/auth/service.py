"""Users: sign-up, credential checks and the admin bootstrap."""

from __future__ import annotations

import anyio.to_thread
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.auth.security import Principal, hash_password, verify_password
from flashsale.db.models import users, wallets
from flashsale.db.types import utcnow
from flashsale.errors import EmailTaken, InvalidCredentials


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    hash_cost: int,
    role: str = "customer",
) -> int:
    """Insert a user and an empty wallet (balance 0 KRW); returns the user id.

    The password must already satisfy the sign-up rule. Hashing runs in a
    worker thread so it never blocks the event loop.

    Raises:
        EmailTaken: the (lower-cased) email is registered (409).
    """
    email = email.lower()
    password_hash = await anyio.to_thread.run_sync(hash_password, password, hash_cost)
    now = utcnow()
    try:
        user_id: int = (
            await session.execute(
                insert(users)
                .values(
                    email=email,
                    name=name,
                    password_hash=password_hash,
                    role=role,
                    created_at=now,
                )
                .returning(users.c.id)
            )
        ).scalar_one()
    except IntegrityError as exc:
        raise EmailTaken(email=email) from exc
    await session.execute(insert(wallets).values(user_id=user_id, balance=0, updated_at=now))
    return user_id


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


async def ensure_admin(
    session: AsyncSession, *, email: str, password: str, hash_cost: int
) -> tuple[int, bool]:
    """Create the admin ``email`` unless that user exists; returns ``(user_id, created)``.

    DESIGN §7: done by ``flashsale users create-admin`` and at start-up when
    ``FLASHSALE_ADMIN_EMAIL`` and ``FLASHSALE_ADMIN_PASSWORD`` are set.
    """
    existing = (
        await session.execute(select(users.c.id).where(users.c.email == email.lower()))
    ).first()
    if existing is not None:
        return int(existing[0]), False
    user_id = await create_user(
        session,
        email=email,
        password=password,
        name="Administrator",
        hash_cost=hash_cost,
        role="admin",
    )
    return user_id, True
