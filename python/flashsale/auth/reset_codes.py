"""The password reset's SQL: the ``password_reset_codes`` table and the password it
sets, and nothing else.

Functions take a synchronous :class:`~sqlalchemy.Connection`: they run in the
group-commit writer's thread (the operations of :mod:`flashsale.auth.password_reset`).
A code is stored only as its keyed hash (``code_hash``, hex HMAC-SHA-256: see
:func:`flashsale.auth.password_reset.hash_reset_code`); times are UTC. A user has at
most one row (the primary key is ``user_id``): a new code replaces the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from flashsale.db.dialect import upsert
from flashsale.db.models import password_reset_codes, users

_c = password_reset_codes

#: Wrong codes after which a code is void (docs/rules.md, "Accounts and tokens").
MAX_FAILED_ATTEMPTS = 5

_USER_BY_EMAIL = select(users.c.id, users.c.email).where(users.c.email == bindparam("p_email"))

# A live code: unused, unexpired, not void. Of confirms with the same code, on any
# writer or instance, exactly one turns ``used_at`` from NULL (PostgreSQL's row lock
# makes the others wait, then re-check the condition and find it false).
_LIVE = (
    _c.c.used_at.is_(None),
    _c.c.expires_at > bindparam("p_now"),
    _c.c.failed_attempts < MAX_FAILED_ATTEMPTS,
)

_CLAIM = (
    update(_c)
    .where(_c.c.user_id == bindparam("p_user"), _c.c.code_hash == bindparam("p_hash"), *_LIVE)
    .values(used_at=bindparam("p_now"))
)

_COUNT_WRONG_TRY = (
    update(_c)
    .where(_c.c.user_id == bindparam("p_user"), _c.c.code_hash != bindparam("p_hash"), *_LIVE)
    .values(failed_attempts=_c.c.failed_attempts + 1)
)

_FIND = select(_c.c.code_hash, _c.c.expires_at, _c.c.failed_attempts, _c.c.used_at).where(
    _c.c.user_id == bindparam("p_user")
)

_SET_PASSWORD = (
    update(users).where(users.c.id == bindparam("p_user")).values(password_hash=bindparam("p_new"))
)


@dataclass(frozen=True, slots=True)
class StoredCode:
    """The stored state of a user's reset code: its hash, expiry (UTC), the wrong tries
    counted against it and when it was used (``None``: not yet)."""

    code_hash: str
    expires_at: datetime
    failed_attempts: int
    used_at: datetime | None


def user_by_email(conn: Connection, email: str) -> tuple[int, str] | None:
    """``(user_id, stored email)`` of the account registered under ``email`` (compared
    lower-cased, as sign-up stores it), or ``None``."""
    row = conn.execute(_USER_BY_EMAIL, {"p_email": email.lower()}).first()
    return None if row is None else (int(row.id), str(row.email))


def replace_code(
    conn: Connection, *, user_id: int, code_hash: str, now: datetime, expires_at: datetime
) -> None:
    """Store ``code_hash`` as the user's code, valid until ``expires_at``, replacing any
    previous code with its count of wrong tries and its use (one upsert: two requests
    at once leave one of the two codes, never an error).

    Raises:
        sqlalchemy.exc.IntegrityError: ``user_id`` names no user.
    """
    stmt = upsert(
        conn,
        _c,
        ["user_id"],
        ["code_hash", "created_at", "expires_at", "failed_attempts", "used_at"],
    )
    conn.execute(
        stmt,
        {
            "user_id": user_id,
            "code_hash": code_hash,
            "created_at": now,
            "expires_at": expires_at,
            "failed_attempts": 0,
            "used_at": None,
        },
    )


def claim_code(conn: Connection, user_id: int, code_hash: str, now: datetime) -> bool:
    """Mark the user's code used if it is ``code_hash`` and live at ``now`` (unused,
    unexpired, fewer than :data:`MAX_FAILED_ATTEMPTS` wrong tries); whether it was
    (the conditional write: exactly one of concurrent claims wins)."""
    result = conn.execute(_CLAIM, {"p_user": user_id, "p_hash": code_hash, "p_now": now})
    return bool(result.rowcount)


def count_wrong_try(conn: Connection, user_id: int, code_hash: str, now: datetime) -> bool:
    """Add one wrong try to the user's code if it is live at ``now`` and not
    ``code_hash``; whether one was counted (an atomic increment: concurrent wrong tries
    all count, and the code is void at :data:`MAX_FAILED_ATTEMPTS`)."""
    result = conn.execute(_COUNT_WRONG_TRY, {"p_user": user_id, "p_hash": code_hash, "p_now": now})
    return bool(result.rowcount)


def find_code(conn: Connection, user_id: int) -> StoredCode | None:
    """The stored state of the user's code, or ``None`` if none was ever sent."""
    row = conn.execute(_FIND, {"p_user": user_id}).first()
    if row is None:
        return None
    return StoredCode(row.code_hash, row.expires_at, int(row.failed_attempts), row.used_at)


def set_password_hash(conn: Connection, user_id: int, new_hash: str) -> bool:
    """Replace the user's bcrypt hash by ``new_hash``; whether the user exists."""
    result = conn.execute(_SET_PASSWORD, {"p_user": user_id, "p_new": new_hash})
    return bool(result.rowcount)
