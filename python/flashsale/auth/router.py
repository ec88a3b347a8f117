"""``/auth``: sign-up and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from flashsale.api.deps import ReadSession, State, WriteSession
from flashsale.auth import service
from flashsale.auth.schemas import SignupRequest, TokenOut, UserOut
from flashsale.auth.security import create_access_token

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/signup", status_code=status.HTTP_201_CREATED)
async def signup(body: SignupRequest, session: WriteSession, state: State) -> UserOut:
    """Register a customer with an empty wallet (409 ``EMAIL_TAKEN``)."""
    user_id = await service.create_user(
        session,
        email=body.email,
        password=body.password,
        name=body.name,
        hash_cost=state.settings.password_hash_cost,
    )
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
