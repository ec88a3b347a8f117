"""The password rule (docs/rules.md): ≥ 8 characters with a letter, a digit and a symbol."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flashsale.auth.schemas import SignupRequest, check_password_rule


@pytest.mark.parametrize("password", ["Passw0rd!", "a1!aaaaa", "12345678a#", "x" * 69 + "1!z"])
def test_good_passwords(password: str) -> None:
    assert check_password_rule(password) == password


@pytest.mark.parametrize(
    "password",
    [
        "",
        "a1!",
        "a1!aaaa",  # 7 characters
        "password!",  # no digit
        "12345678!",  # no letter
        "password1",  # no symbol
        "passw0rd  ",  # whitespace is not a symbol
        "a1!" + "a" * 70,  # over bcrypt's 72 bytes
    ],
)
def test_bad_passwords(password: str) -> None:
    with pytest.raises(ValueError):
        check_password_rule(password)


def test_signup_body_applies_the_rule() -> None:
    with pytest.raises(ValidationError):
        SignupRequest(email="a@example.com", password="short", name="A")
    body = SignupRequest(email="a@example.com", password="Passw0rd!", name="A")
    assert body.password == "Passw0rd!"
