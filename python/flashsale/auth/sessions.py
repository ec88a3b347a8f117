"""Sessions: refresh tokens (issue, rotation with reuse detection, logout) and the
password change that ends them (docs/api.md, "Authentication"; docs/rules.md,
"Accounts and tokens").

A login starts a *family* of refresh tokens. A refresh token is opaque
(``secrets.token_urlsafe(32)``: 256 random bits) and stored only as its SHA-256.
Every refresh rotates it: the presented token is marked used by a conditional
write and the next token of the family is issued with a new access token. A used
token presented again means that two parties hold it (the OAuth 2.0 Security BCP's
refresh-token rotation): the whole family is revoked, the newest token included.

Each function ending in ``_op`` is a writer operation (``state.writer.submit``):
it runs in the group-commit writer's thread, in a savepoint of the batch's
transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from flashsale.auth import repository
from flashsale.auth.security import Principal
from flashsale.db.types import utcnow
from flashsale.db.writer import Tx
from flashsale.errors import (
    FlashsaleError,
    InvalidCredentials,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    RefreshTokenRevoked,
    WrongCurrentPassword,
)

#: Random bytes of a refresh token (``secrets.token_urlsafe``: 43 characters).
REFRESH_TOKEN_BYTES = 32


def hash_refresh_token(token: str) -> str:
    """The hex SHA-256 of a refresh token's text: what the database stores and looks
    up (a fast hash is enough: the token has 256 random bits, nothing to guess)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    """A refresh token just stored: the principal to mint the access token for, the
    token's text (given to the client once, never stored) and its expiry (UTC)."""

    principal: Principal
    refresh_token: str
    refresh_expires_at: datetime


def _issue(tx: Tx, principal: Principal, family_id: str, now: datetime, ttl_s: int) -> Issued:
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    expires_at = now + timedelta(seconds=ttl_s)
    repository.insert_token(
        tx.conn,
        user_id=principal.user_id,
        family_id=family_id,
        token_hash=hash_refresh_token(token),
        now=now,
        expires_at=expires_at,
    )
    return Issued(principal, token, expires_at)


def start_session_op(tx: Tx, *, principal: Principal, ttl_s: int) -> Issued:
    """Start a new family for a user who just logged in (``POST /auth/token``) with its
    first refresh token, valid ``ttl_s`` seconds.

    Raises:
        InvalidCredentials: the user was deleted since the password check (401).
    """
    try:
        return _issue(tx, principal, uuid.uuid4().hex, utcnow(), ttl_s)
    except IntegrityError as exc:  # the user's row is gone (foreign key)
        raise InvalidCredentials() from exc


def refresh_op(tx: Tx, *, token: str, ttl_s: int) -> Issued | FlashsaleError:
    """Rotate ``token``: mark it used and issue the next token of its family, valid
    ``ttl_s`` seconds, for the user's current role.

    The refusal is *returned*, not raised: a reuse revokes the family, and that write
    must commit (a raised error would roll back the operation's savepoint). The caller
    raises it once the batch has committed. Every refusal is a 401:

    - ``REFRESH_TOKEN_INVALID``: no such token (or its user is gone: the family is
      revoked);
    - ``REFRESH_TOKEN_REVOKED``: its family was revoked (logout, password change,
      an earlier reuse);
    - ``REFRESH_TOKEN_REUSED``: it was already used; the family is revoked now;
    - ``REFRESH_TOKEN_EXPIRED``: unused but past ``expires_at``.

    Of several refreshes with one token, in one batch or in batches of other writers,
    processes or instances, the conditional write (:func:`repository.claim_token`) lets
    exactly one win; the others find it used and revoke the family.
    """
    token_hash = hash_refresh_token(token)
    now = utcnow()
    claimed = repository.claim_token(tx.conn, token_hash, now)
    if claimed is None:
        stored = repository.find_token(tx.conn, token_hash)
        if stored is None:
            return RefreshTokenInvalid()
        if stored.revoked_at is not None:
            return RefreshTokenRevoked()
        if stored.used_at is not None:
            repository.revoke_family(tx.conn, stored.family_id, now)
            return RefreshTokenReused()
        return RefreshTokenExpired()
    user_id, family_id = claimed
    role = repository.user_role(tx.conn, user_id)
    if role is None:  # only without foreign keys: the tokens are deleted with their user
        repository.revoke_family(tx.conn, family_id, now)
        return RefreshTokenInvalid()
    return _issue(tx, Principal(user_id=user_id, role=role), family_id, now, ttl_s)


def logout_op(tx: Tx, *, token: str) -> int:
    """Revoke the family of ``token`` (any token of it: the newest, a used or expired
    one); returns how many tokens were revoked. An unknown token revokes nothing and
    is no error (``POST /auth/logout`` answers 204 either way)."""
    stored = repository.find_token(tx.conn, hash_refresh_token(token))
    if stored is None:
        return 0
    return repository.revoke_family(tx.conn, stored.family_id, utcnow())


def change_password_op(tx: Tx, *, user_id: int, old_hash: str, new_hash: str) -> int:
    """Replace the user's password hash ``old_hash`` (the one the current password was
    checked against) by ``new_hash`` and revoke every refresh family of the user;
    returns how many tokens were revoked. Access tokens already issued stay valid
    until they expire (docs/api.md).

    Raises:
        WrongCurrentPassword: the hash is no longer ``old_hash`` (another request
            changed the password meanwhile; 403). Nothing is changed.
    """
    if not repository.set_password_hash(tx.conn, user_id, old_hash, new_hash):
        raise WrongCurrentPassword()
    return repository.revoke_user(tx.conn, user_id, utcnow())


def purge_expired_op(tx: Tx, *, now: datetime) -> int:
    """Delete the refresh tokens that expired before ``now`` (the maintenance loop);
    returns how many."""
    return repository.purge_expired_tokens(tx.conn, now)
