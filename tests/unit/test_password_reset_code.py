"""The reset code, its keyed hash and its mail (docs/api.md, "Password reset")."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from flashsale.auth.password_reset import (
    hash_reset_code,
    new_code,
    reset_code_key,
    reset_mail,
)
from flashsale.mail.outbox import MailJob


def test_codes_are_six_random_digits() -> None:
    codes = [new_code() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)
    assert len(set(codes)) > 1990  # a million values: a few collisions at most
    assert any(code.startswith("0") for code in codes)  # leading zeros are kept


def test_the_hash_is_keyed_and_bound_to_the_user() -> None:
    key = reset_code_key("secret-a")
    assert len(key) == 32
    assert key != hashlib.sha256(b"secret-a").digest()
    digest = hash_reset_code(key, 7, "012345")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_reset_code(key, 7, "012345")
    assert digest != hash_reset_code(key, 8, "012345")
    assert digest != hash_reset_code(key, 7, "012346")
    assert digest != hash_reset_code(reset_code_key("secret-b"), 7, "012345")
    # Without the key the million candidates do not give the code back.
    for plain in ("012345", "7:012345"):
        assert digest != hashlib.sha256(plain.encode()).hexdigest()


def test_the_mail_carries_the_code_and_its_validity() -> None:
    subject, text = reset_mail("042917", 900)
    assert "042917" not in subject
    assert "\n    042917\n" in text
    assert "valid for 15 minutes and works once" in text
    assert "valid for 1 minute " in reset_mail("1", 60)[1]
    assert "valid for 90 seconds " in reset_mail("1", 90)[1]
    assert "valid for 1 hour " in reset_mail("1", 3600)[1]
    assert "valid for 2 hours " in reset_mail("1", 7200)[1]
    # A valid mail job (one-line subject, lengths within the limits).
    job = MailJob(
        to="a@example.com",
        subject=subject,
        text=text,
        template="password-reset",
        created_at=datetime.now(UTC),
    )
    assert MailJob.from_payload(job.payload()) == job
