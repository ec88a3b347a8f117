"""``/auth``: sign-up and tokens."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from flashsale.api.deps import ReadSession, State
from flashsale.auth import service
from flashsale.auth.schemas import SignupRequest, TokenOut, UserOut
from flashsale.auth.security import create_access_token, hash_password

router = APIRouter(prefix="/auth", tags=["auth"])


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


@router.post("/token")
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: ReadSession, state: State
) -> TokenOut:
    """OAuth2 password flow: ``username`` is the email (401 ``INVALID_CREDENTIALS``)."""
    principal = await service.authenticate(session, form.username, form.password)
    ttl = state.settings.jwt_ttl_s
    access = create_access_token(principal, state.settings.jwt_secret.get_secret_value(), ttl)
    return TokenOut(access_token=access, expires_in=ttl)
