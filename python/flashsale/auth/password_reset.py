"""Password reset by e-mail (docs/api.md, "Password reset"; docs/rules.md, "Accounts
and tokens").

``POST /auth/password-reset {email}`` answers 202 the same way for every address. For
an address with an account, :func:`request_reset_op` stores a new 6-digit code (valid
``FLASHSALE_PASSWORD_RESET_TTL_S``, 15 minutes by default), replacing the previous
one, and queues the mail that carries it (:func:`flashsale.mail.outbox.add_mail`, in
the same writer operation: the mail exists exactly when the code does). For any other
address it changes nothing; both go through the writer, so the two answers take
about the same time.

``POST /auth/password-reset/confirm {email, code, new_password}`` runs
:func:`confirm_reset_op`: the right, unexpired, unused code of that address sets the
new password, is used up and revokes every refresh family of the user. A wrong code
counts one wrong try against a live code; after :data:`MAX_FAILED_ATTEMPTS` the code
is void.

Each function ending in ``_op`` is a writer operation (``state.writer.submit``): it
runs in the group-commit writer's thread, in a savepoint of the batch's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from flashsale.auth import repository, reset_codes
from flashsale.auth.reset_codes import MAX_FAILED_ATTEMPTS
from flashsale.db.writer import Tx
from flashsale.errors import (
    FlashsaleError,
    ResetCodeExpired,
    ResetCodeInvalid,
    ResetCodeUsed,
    ResetCodeVoid,
)
from flashsale.mail.outbox import add_mail, check_address

__all__ = [
    "CODE_DIGITS",
    "MAX_FAILED_ATTEMPTS",
    "TEMPLATE",
    "confirm_reset_op",
    "hash_reset_code",
    "new_code",
    "request_reset_op",
    "reset_code_key",
    "reset_mail",
]

log = logging.getLogger(__name__)

#: Digits of a reset code.
CODE_DIGITS = 6
#: The ``template`` of the reset mail job (shown by logs and ``flashsale mail-sink``).
TEMPLATE = "password-reset"

_KEY_LABEL = b"flashsale/password-reset-code/v1"


def reset_code_key(jwt_secret: str) -> bytes:
    """The HMAC key of the reset codes: derived from ``FLASHSALE_JWT_SECRET`` (the
    deployment's secret, the same on every instance) under a label of its own, so it is
    never the key that signs tokens. 32 bytes.

    Changing the JWT secret voids the codes sent before (their hashes no longer match):
    the user asks for a new one.
    """
    return hmac.new(jwt_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def hash_reset_code(key: bytes, user_id: int, code: str) -> str:
    """What the database stores of ``code`` sent to ``user_id``: the hex HMAC-SHA-256
    under ``key`` (:func:`reset_code_key`) of ``"{user_id}:{code}"``, 64 characters.

    Why keyed: a 6-digit code has only a million values, so a plain hash (even salted
    with the user id) is reversed offline in a moment by anyone who reads the table (a
    dump, a backup, a replica), who could then reset the password of every account
    with a live code. With the key outside the database the stored hash tells nothing.
    The user id in the message binds the hash to its account.
    """
    message = f"{user_id}:{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_code() -> str:
    """A random code of :data:`CODE_DIGITS` digits (leading zeros kept), from
    :mod:`secrets`."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds} seconds"


def reset_mail(code: str, ttl_s: int) -> tuple[str, str]:
    """The ``(subject, text)`` of the mail carrying ``code``, valid ``ttl_s`` seconds: the
    code and its validity are in the text only (a subject shows on locked screens)."""
    valid = _duration(ttl_s)
    subject = "Your Flashsale password reset code"
    text = (
        "Hello,\n"
        "\n"
        "someone asked to reset the password of the Flashsale account of this address.\n"
        "Your code is:\n"
        "\n"
        f"    {code}\n"
        "\n"
        f"It is valid for {valid} and works once. Enter it with your new password;\n"
        "every device logged in to the account will have to log in again.\n"
        "\n"
        "If you did not ask for it, ignore this mail: your password stays as it is.\n"
    )
    return subject, text


def request_reset_op(tx: Tx, *, email: str, key: bytes, ttl_s: int, now: datetime) -> bool:
    """Send a new reset code to ``email`` if an account has that address; returns whether
    one was queued (the API answers the same either way).

    For a known address: a new code (:func:`new_code`) is stored as its keyed hash,
    valid ``ttl_s`` seconds from ``now`` (UTC), replacing the previous code, its wrong
    tries and its use; and its mail (template ``"password-reset"``) is queued in the
    outbox in the same transaction. For an unknown address nothing is written. An
    account whose stored address cannot be mailed (one not made by sign-up) is treated
    as unknown, with a warning in the log.
    """
    found = reset_codes.user_by_email(tx.conn, email)
    if found is None:
        return False
    user_id, address = found
    try:
        check_address(address)
    except ValueError:
        log.warning("password reset: user %d has no address mail can go to", user_id)
        return False
    code = new_code()
    reset_codes.replace_code(
        tx.conn,
        user_id=user_id,
        code_hash=hash_reset_code(key, user_id, code),
        now=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    subject, text = reset_mail(code, ttl_s)
    add_mail(tx.conn, to=address, subject=subject, text=text, now=now, template=TEMPLATE)
    return True


def confirm_reset_op(
    tx: Tx, *, email: str, code: str, new_hash: str, key: bytes, now: datetime
) -> FlashsaleError | None:
    """Set the password of the account of ``email`` to ``new_hash`` (bcrypt, made before:
    never inside the writer) if ``code`` is its live reset code at ``now``; the code is
    used up and every refresh family of the user is revoked (access tokens already
    issued live until they expire). Returns ``None`` on success.

    The refusal is *returned*, not raised: a wrong code counts a try, and that write
    must commit (a raised error would roll back the operation's savepoint). The caller
    raises it once the batch has committed. Every refusal is a 400 and changes nothing
    but that count:

    - ``RESET_CODE_INVALID``: not the code last sent to this address, or no account has
      the address (the same answer: nothing tells which). Counts one wrong try if the
      code is live;
    - ``RESET_CODE_USED``: the right code, already used;
    - ``RESET_CODE_VOID``: the right code, after :data:`MAX_FAILED_ATTEMPTS` wrong ones;
    - ``RESET_CODE_EXPIRED``: the right code, unused, past its ``expires_at``.

    Only the right code learns the state of the code, so an address cannot be probed
    with guesses. Of confirms with one code at once, in one batch or in batches of other
    writers or instances, the conditional write (:func:`reset_codes.claim_code`) lets
    exactly one win; the others get ``RESET_CODE_USED``.
    """
    found = reset_codes.user_by_email(tx.conn, email)
    if found is None:
        return ResetCodeInvalid()
    user_id, _ = found
    code_hash = hash_reset_code(key, user_id, code)
    if reset_codes.claim_code(tx.conn, user_id, code_hash, now):
        reset_codes.set_password_hash(tx.conn, user_id, new_hash)
        repository.revoke_user(tx.conn, user_id, now)
        return None
    if reset_codes.count_wrong_try(tx.conn, user_id, code_hash, now):
        return ResetCodeInvalid()
    stored = reset_codes.find_code(tx.conn, user_id)
    if stored is None or not hmac.compare_digest(stored.code_hash, code_hash):
        return ResetCodeInvalid()
    if stored.used_at is not None:
        return ResetCodeUsed()
    if stored.failed_attempts >= MAX_FAILED_ATTEMPTS:
        return ResetCodeVoid()
    return ResetCodeExpired()
