"""Request and response bodies of ``/auth``."""

from __future__ import annotations

from pydantic import BaseModel, EmailStr, Field, field_validator


def check_password_rule(password: str) -> str:
    """The password rule (docs/rules.md): at least 8 characters with a letter, a digit and
    a symbol.

    bcrypt reads at most 72 bytes, so longer passwords are refused rather than
    silently truncated.

    Raises:
        ValueError: the password breaks the rule.
    """
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    if len(password.encode()) > 72:
        raise ValueError("password must be at most 72 bytes")
    has_letter = any(c.isalpha() for c in password)  # any script, e.g. Hangul
    has_digit = any(c.isdigit() for c in password)
    has_symbol = any(not c.isalnum() and not c.isspace() for c in password)
    if not (has_letter and has_digit and has_symbol):
        raise ValueError("password needs a letter, a digit and a symbol")
    return password


class SignupRequest(BaseModel):
    email: EmailStr = Field(max_length=320)
    password: str
    name: str = Field(min_length=1, max_length=100)

    @field_validator("password")
    @classmethod
    def _password_rule(cls, value: str) -> str:
        return check_password_rule(value)


class UserOut(BaseModel):
    user_id: int
    email: str
    name: str


#: Longest refresh token accepted in a body (the service makes 43-character ones).
MAX_REFRESH_TOKEN_LENGTH = 256


class TokenOut(BaseModel):
    """An access token (a JWT valid ``expires_in`` seconds) and a refresh token (opaque,
    single-use, valid ``refresh_expires_in`` seconds) — the OAuth2 token response."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class RefreshRequest(BaseModel):
    """The body of ``POST /auth/refresh`` and ``POST /auth/logout``."""

    refresh_token: str = Field(min_length=1, max_length=MAX_REFRESH_TOKEN_LENGTH)


class PasswordChange(BaseModel):
    """The body of ``PUT /me/password``: the new password must pass the sign-up rule
    (:func:`check_password_rule`, 422 ``VALIDATION_ERROR``)."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str

    @field_validator("new_password")
    @classmethod
    def _password_rule(cls, value: str) -> str:
        return check_password_rule(value)


#: A password-reset code: six ASCII digits.
RESET_CODE_PATTERN = r"^[0-9]{6}$"


class PasswordResetRequest(BaseModel):
    """The body of ``POST /auth/password-reset``: the address of the account."""

    email: EmailStr = Field(max_length=320)


class PasswordResetAccepted(BaseModel):
    """The answer of ``POST /auth/password-reset``, the same for every address: if an
    account has it, a code valid ``expires_in`` seconds was sent to it."""

    message: str = "If an account has this address, a code to reset its password was sent to it."
    expires_in: int


class PasswordResetConfirm(BaseModel):
    """The body of ``POST /auth/password-reset/confirm``: the address, the 6-digit code
    mailed to it and the new password, which must pass the sign-up rule
    (:func:`check_password_rule`, 422 ``VALIDATION_ERROR``)."""

    email: EmailStr = Field(max_length=320)
    code: str = Field(pattern=RESET_CODE_PATTERN)
    new_password: str

    @field_validator("new_password")
    @classmethod
    def _password_rule(cls, value: str) -> str:
        return check_password_rule(value)
