"""The sessions' SQL: refresh tokens and password hashes, and nothing else.

Functions take a synchronous :class:`~sqlalchemy.Connection`: they run in the
group-commit writer's thread (the operations of :mod:`flashsale.auth.sessions`),
except the read-only checks that take an :class:`~sqlalchemy.ext.asyncio.AsyncSession`.
A refresh token is stored only as the hex SHA-256 of its text (``token_hash``); times
are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flashsale.db.models import refresh_tokens, users

_t = refresh_tokens

_INSERT_TOKEN = insert(_t)

# The refresh's decision: of any number of requests presenting one token, on any
# instance, exactly one turns ``used_at`` from NULL (PostgreSQL's row lock makes the
# others wait, then re-check the condition and find it false).
_CLAIM = (
    update(_t)
    .where(
        _t.c.token_hash == bindparam("p_hash"),
        _t.c.used_at.is_(None),
        _t.c.revoked_at.is_(None),
        _t.c.expires_at > bindparam("p_now"),
    )
    .values(used_at=bindparam("p_now"))
    .returning(_t.c.user_id, _t.c.family_id)
)

_FIND = select(_t.c.family_id, _t.c.used_at, _t.c.revoked_at, _t.c.expires_at).where(
    _t.c.token_hash == bindparam("p_hash")
)

_REVOKE_FAMILY = (
    update(_t)
    .where(_t.c.family_id == bindparam("p_family"), _t.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("p_now"))
)

_REVOKE_USER = (
    update(_t)
    .where(_t.c.user_id == bindparam("p_user"), _t.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("p_now"))
)

_USER_ROLE = select(users.c.role).where(users.c.id == bindparam("p_user"))

_PASSWORD_HASH = select(users.c.password_hash).where(users.c.id == bindparam("p_user"))

# Conditional on the hash the current password was checked against: a password changed
# by another request in between is not silently overwritten.
_SET_PASSWORD = (
    update(users)
    .where(users.c.id == bindparam("p_user"), users.c.password_hash == bindparam("p_old"))
    .values(password_hash=bindparam("p_new"))
)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What the table says of a refresh token that was not claimed: its family, and
    when it was used and revoked (``None``: not yet) and expires (UTC)."""

    family_id: str
    used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime


def insert_token(
    conn: Connection,
    *,
    user_id: int,
    family_id: str,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Store a new refresh token (its hash) of ``family_id``.

    Raises:
        sqlalchemy.exc.IntegrityError: ``user_id`` names no user, or the hash exists.
    """
    conn.execute(
        _INSERT_TOKEN,
        {
            "user_id": user_id,
            "family_id": family_id,
            "token_hash": token_hash,
            "created_at": now,
            "expires_at": expires_at,
            "used_at": None,
            "revoked_at": None,
        },
    )


def claim_token(conn: Connection, token_hash: str, now: datetime) -> tuple[int, str] | None:
    """Mark the token used if it is unused, unrevoked and unexpired at ``now``; returns
    its ``(user_id, family_id)``, or ``None`` when the conditional write matched
    nothing (unknown, used, revoked or expired: see :func:`find_token`)."""
    row = conn.execute(_CLAIM, {"p_hash": token_hash, "p_now": now}).first()
    return None if row is None else (int(row.user_id), str(row.family_id))


def find_token(conn: Connection, token_hash: str) -> StoredToken | None:
    """The stored state of a token, or ``None`` if no such token is stored."""
    row = conn.execute(_FIND, {"p_hash": token_hash}).first()
    if row is None:
        return None
    return StoredToken(row.family_id, row.used_at, row.revoked_at, row.expires_at)


def revoke_family(conn: Connection, family_id: str, now: datetime) -> int:
    """Revoke every token of ``family_id`` not revoked yet; returns how many."""
    result = conn.execute(_REVOKE_FAMILY, {"p_family": family_id, "p_now": now})
    return int(result.rowcount or 0)


def revoke_user(conn: Connection, user_id: int, now: datetime) -> int:
    """Revoke every token of every family of ``user_id`` not revoked yet; returns how many."""
    result = conn.execute(_REVOKE_USER, {"p_user": user_id, "p_now": now})
    return int(result.rowcount or 0)


def user_role(conn: Connection, user_id: int) -> str | None:
    """The user's role, or ``None`` if the user no longer exists."""
    role = conn.execute(_USER_ROLE, {"p_user": user_id}).scalar_one_or_none()
    return None if role is None else str(role)


async def password_hash(session: AsyncSession, user_id: int) -> str | None:
    """The user's bcrypt hash, or ``None`` if the user no longer exists."""
    value = (await session.execute(_PASSWORD_HASH, {"p_user": user_id})).scalar_one_or_none()
    return None if value is None else str(value)


def set_password_hash(conn: Connection, user_id: int, old_hash: str, new_hash: str) -> bool:
    """Replace the user's hash if it is still ``old_hash``; whether it was replaced."""
    result = conn.execute(_SET_PASSWORD, {"p_user": user_id, "p_old": old_hash, "p_new": new_hash})
    return bool(result.rowcount)


async def has_expired_tokens(session: AsyncSession, now: datetime) -> bool:
    """Whether any refresh token expired before ``now`` (a cheap read, so that an idle
    instance never takes the write lock to purge nothing)."""
    stmt = select(_t.c.id).where(_t.c.expires_at < now).limit(1)
    return (await session.execute(stmt)).first() is not None


def purge_expired_tokens(conn: Connection, now: datetime) -> int:
    """Delete the refresh tokens that expired before ``now``; returns how many. An
    expired token is refused whatever its state, so nothing is lost: presented later
    it is simply unknown."""
    result = conn.execute(delete(_t).where(_t.c.expires_at < now))
    return int(result.rowcount or 0)
