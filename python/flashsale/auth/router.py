"""``/auth``: sign-up, tokens, refresh and logout, password reset; ``/me/password``."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from flashsale.api.deps import CurrentUser, ReadSession, State
from flashsale.api.state import AppState
from flashsale.auth import password_reset, repository, service, sessions
from flashsale.auth.schemas import (
    PasswordChange,
    PasswordResetAccepted,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    SignupRequest,
    TokenOut,
    UserOut,
)
from flashsale.auth.security import create_access_token, hash_password, verify_password
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.errors import FlashsaleError, Unauthenticated, WrongCurrentPassword

router = APIRouter(prefix="/auth", tags=["auth"])
me_router = APIRouter(prefix="/me", tags=["auth"])


@router.post("/signup", status_code=status.HTTP_201_CREATED)
async def signup(body: SignupRequest, state: State) -> UserOut:
    """Register a customer with an empty wallet (409 ``EMAIL_TAKEN``).

    The password is hashed in a worker thread, then the user and the wallet are
    inserted by the process's group-commit writer (:func:`service.create_user_op`).
    """
    password_hash = await anyio.to_thread.run_sync(
        hash_password, body.password, state.settings.password_hash_cost
    )
    op = partial(
        service.create_user_op, email=body.email, password_hash=password_hash, name=body.name
    )
    user_id = await state.writer.submit(op)
    return UserOut(user_id=user_id, email=body.email.lower(), name=body.name)


def _token_out(state: AppState, issued: sessions.Issued) -> TokenOut:
    """The access token for ``issued.principal`` and the refresh token just stored."""
    settings = state.settings
    ttl = settings.jwt_ttl_s
    access = create_access_token(issued.principal, settings.jwt_secret.get_secret_value(), ttl)
    return TokenOut(
        access_token=access,
        expires_in=ttl,
        refresh_token=issued.refresh_token,
        refresh_expires_in=settings.refresh_ttl_s,
    )


@router.post("/token")
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: ReadSession, state: State
) -> TokenOut:
    """OAuth2 password flow: ``username`` is the email (401 ``INVALID_CREDENTIALS``).

    Answers an access token (``expires_in`` = ``FLASHSALE_JWT_TTL_S``) and the first
    refresh token of a new family (``refresh_expires_in`` = ``FLASHSALE_REFRESH_TTL_S``),
    stored hashed through the writer (:func:`sessions.start_session_op`).
    """
    principal = await service.authenticate(session, form.username, form.password)
    op = partial(sessions.start_session_op, principal=principal, ttl_s=state.settings.refresh_ttl_s)
    return _token_out(state, await state.writer.submit(op))


@router.post("/refresh")
async def refresh(body: RefreshRequest, state: State) -> TokenOut:
    """Trade a refresh token for a new access token and the next refresh token of its
    family; the presented one is used up (rotation).

    Refusals, all 401 (docs/api.md, "Authentication"): ``REFRESH_TOKEN_INVALID``
    (unknown), ``REFRESH_TOKEN_EXPIRED``, ``REFRESH_TOKEN_REVOKED`` (logged out,
    password changed) and ``REFRESH_TOKEN_REUSED`` (already used: the whole family is
    revoked with this answer).
    """
    op = partial(sessions.refresh_op, token=body.refresh_token, ttl_s=state.settings.refresh_ttl_s)
    result = await state.writer.submit(op)
    if isinstance(result, FlashsaleError):
        raise result
    return _token_out(state, result)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshRequest, state: State) -> Response:
    """Revoke the family of the refresh token (any token of it): 204, also for a token
    that is unknown, expired or already revoked, so logging out twice is fine. Access
    tokens already issued stay valid until they expire (``FLASHSALE_JWT_TTL_S``)."""
    await state.writer.submit(partial(sessions.logout_op, token=body.refresh_token))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@me_router.put("/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordChange, user: CurrentUser, state: State) -> Response:
    """Change the caller's password and revoke every refresh family of the caller (every
    device logs in again; access tokens already issued live until they expire).

    Refusals: 403 ``WRONG_CURRENT_PASSWORD``, 422 ``VALIDATION_ERROR`` (the new password
    breaks the password rule of docs/rules.md), 401 ``UNAUTHENTICATED`` (no valid token,
    or the user no longer exists). Both bcrypt steps run in worker threads; the change
    is a writer operation (:func:`sessions.change_password_op`).
    """
    async with transaction(state.db.read_session) as session:  # not held during bcrypt
        old_hash = await repository.password_hash(session, user.user_id)
    if old_hash is None:
        raise Unauthenticated("User no longer exists")
    if not await anyio.to_thread.run_sync(verify_password, body.current_password, old_hash):
        raise WrongCurrentPassword()
    new_hash = await anyio.to_thread.run_sync(
        hash_password, body.new_password, state.settings.password_hash_cost
    )
    op = partial(
        sessions.change_password_op, user_id=user.user_id, old_hash=old_hash, new_hash=new_hash
    )
    await state.writer.submit(op)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password-reset", status_code=status.HTTP_202_ACCEPTED)
async def request_password_reset(body: PasswordResetRequest, state: State) -> PasswordResetAccepted:
    """Mail a single-use 6-digit reset code to ``email`` if an account has it.

    Always 202 with the same body (``expires_in`` = ``FLASHSALE_PASSWORD_RESET_TTL_S``),
    so the answer says nothing about the address; both cases go through the writer
    (:func:`password_reset.request_reset_op`), which stores the code's keyed hash and
    queues the mail in one transaction. A new request replaces the previous code. A body
    without a valid address is 422 ``VALIDATION_ERROR`` (docs/api.md, "Password reset").
    """
    settings = state.settings
    ttl_s = settings.password_reset_ttl_s
    op = partial(
        password_reset.request_reset_op,
        email=body.email,
        key=password_reset.reset_code_key(settings.jwt_secret.get_secret_value()),
        ttl_s=ttl_s,
        now=utcnow(),
    )
    await state.writer.submit(op)
    return PasswordResetAccepted(expires_in=ttl_s)


@router.post("/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
async def confirm_password_reset(body: PasswordResetConfirm, state: State) -> Response:
    """Set a new password with the code mailed by ``POST /auth/password-reset``: 204, no
    body. The code is used up and every refresh family of the user is revoked (access
    tokens already issued live until they expire).

    Refusals (docs/api.md, "Password reset"), each changing nothing but the count of
    wrong tries: 400 ``RESET_CODE_INVALID`` (wrong code, or no account has the address:
    one answer), ``RESET_CODE_EXPIRED``, ``RESET_CODE_USED``, ``RESET_CODE_VOID`` (5
    wrong codes were tried); 422 ``VALIDATION_ERROR`` (no valid address, a code that is
    not 6 digits, a new password that breaks the password rule of docs/rules.md). The
    new password is hashed in a worker thread first; the check and the change are one
    writer operation (:func:`password_reset.confirm_reset_op`).
    """
    settings = state.settings
    new_hash = await anyio.to_thread.run_sync(
        hash_password, body.new_password, settings.password_hash_cost
    )
    op = partial(
        password_reset.confirm_reset_op,
        email=body.email,
        code=body.code,
        new_hash=new_hash,
        key=password_reset.reset_code_key(settings.jwt_secret.get_secret_value()),
        now=utcnow(),
    )
    refused = await state.writer.submit(op)
    if refused is not None:
        raise refused
    return Response(status_code=status.HTTP_204_NO_CONTENT)
