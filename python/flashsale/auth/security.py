"""Password hashing (bcrypt) and access tokens (JWT, HS256)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import bcrypt
import jwt

from flashsale.errors import Unauthenticated

_ALGORITHM = "HS256"


def hash_password(password: str, cost: int) -> str:
    """bcrypt hash of ``password`` with ``2**cost`` rounds (CPU-bound: call off the event loop)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (CPU-bound).

    A password longer than 72 bytes never matches: no stored password is that long
    (the password rule of docs/rules.md), and bcrypt refuses to read it.
    """
    encoded = password.encode()
    if len(encoded) > 72:
        return False
    return bcrypt.checkpw(encoded, password_hash.encode())


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: user id and role (``customer`` or ``admin``)."""

    user_id: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create_access_token(principal: Principal, secret: str, ttl_s: int) -> str:
    """A signed JWT carrying the user id (``sub``) and role, valid ``ttl_s`` seconds."""
    now = int(time.time())
    claims = {"sub": str(principal.user_id), "role": principal.role, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


@functools.lru_cache(maxsize=16_384)
def _verify(token: str, secret: str) -> tuple[Principal, int]:
    # Signature checks are a tenth of a request's CPU in a rush where the same
    # clients retry; a token's claims never change, so verified ones are cached.
    # Expiry is still checked on every call by the caller.
    claims = jwt.decode(token, secret, algorithms=[_ALGORITHM], options={"require": ["exp"]})
    return Principal(user_id=int(claims["sub"]), role=str(claims["role"])), int(claims["exp"])


def decode_access_token(token: str, secret: str) -> Principal:
    """The principal of a valid token.

    Raises:
        Unauthenticated: bad signature, expired, or malformed claims.
    """
    try:
        principal, expires = _verify(token, secret)
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthenticated("Invalid or expired token") from exc
    if expires <= time.time():
        raise Unauthenticated("Invalid or expired token")
    return principal
