"""Mail without a database or a network: the SMTP URL and sender settings, mail jobs'
payloads and Message-IDs, the message built for a job, the sink's store
(docs/operations.md#mail)."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import SecretStr, ValidationError

from flashsale.mail.config import SmtpConfig, parse_mail_from, parse_smtp_url
from flashsale.mail.outbox import MailJob, check_address, message_id
from flashsale.mail.sink import MailStore, SinkHandler, parse_login
from flashsale.mail.smtp import build_message
from flashsale.settings import Settings

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


# -- FLASHSALE_SMTP_URL ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 25)),
        ("smtp://127.0.0.1:1025", SmtpConfig("127.0.0.1", 1025)),
        ("SMTP://Mail.Example.com:2525/", SmtpConfig("mail.example.com", 2525)),
        (
            "smtp://mail.example.com:587?starttls=1",
            SmtpConfig("mail.example.com", 587, starttls=True),
        ),
        ("smtp://h:587?starttls=true", SmtpConfig("h", 587, starttls=True)),
        ("smtp://h?starttls=0", SmtpConfig("h", 25)),
        (
            "smtp://shop%40example.com:p%40ss%3Aword@h:587?starttls=1",
            SmtpConfig("h", 587, "shop@example.com", "p@ss:word", starttls=True),
        ),
        ("smtps://u:p@h", SmtpConfig("h", 465, "u", "p", tls=True)),
        ("smtps://h:2465", SmtpConfig("h", 2465, tls=True)),
        ("smtp://[::1]:25", SmtpConfig("::1", 25)),
    ],
)
def test_smtp_urls_parse(url: str, expected: SmtpConfig) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:25", "scheme must be smtp or smtps"),
        ("h:25", "scheme"),
        ("smtp://", "no host"),
        ("smtp://:25", "no host"),
        ("smtp://h:99999", "SMTP URL"),
        ("smtp://h:port", "SMTP URL"),
        ("smtp://h/relay", "no path"),
        ("smtp://user@h", "both a user and a password"),
        ("smtp://h?tls=1", "unknown parameter 'tls'"),
        ("smtp://h?starttls=maybe", "neither 1 nor 0"),
        ("smtps://h?starttls=1", "TLS already"),
    ],
)
def test_bad_smtp_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_smtp_url(url)


def test_an_smtp_url_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_smtp_url("smtp://user:s3cret-pw@h/path")
    assert "s3cret-pw" not in str(info.value)
    config = parse_smtp_url("smtp://user:s3cret-pw@h:587?starttls=1")
    assert "s3cret-pw" not in repr(config)
    assert config.describe() == "smtp://user@h:587?starttls=1"


def test_the_settings_check_the_mail_settings_at_start_up() -> None:
    settings = Settings(smtp_url=SecretStr("smtp://127.0.0.1:1025"), mail_from="Shop <s@x.com>")
    assert settings.smtp_url is not None
    assert settings.smtp_timeout_s == 10.0
    assert Settings().smtp_url is None  # unset: mail waits in the outbox
    with pytest.raises(ValidationError, match="scheme must be smtp"):
        Settings(smtp_url=SecretStr("http://127.0.0.1:1025"))
    with pytest.raises(ValidationError, match="FLASHSALE_MAIL_FROM"):
        Settings(mail_from="not an address")


@pytest.mark.parametrize(
    ("value", "header", "address"),
    [
        ("Flashsale <no@shop.example>", "Flashsale <no@shop.example>", "no@shop.example"),
        ("no-reply@shop.example", "no-reply@shop.example", "no-reply@shop.example"),
        ('"Shop, Inc." <a@b.example>', '"Shop, Inc." <a@b.example>', "a@b.example"),
    ],
)  # fmt: skip
def test_mail_from_parses(value: str, header: str, address: str) -> None:
    assert parse_mail_from(value) == (header, address)


@pytest.mark.parametrize("value", ["", "nobody", "Shop <>", "a@b.example\r\nBcc: x@y.example"])
def test_bad_mail_from_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="FLASHSALE_MAIL_FROM"):
        parse_mail_from(value)


# -- mail jobs -----------------------------------------------------------------------------


def test_the_message_id_derives_from_the_job_id() -> None:
    event_id = str(uuid.uuid4())
    assert message_id(event_id) == f"<outbox-{event_id}@flashsale>"
    assert message_id(event_id) == message_id(event_id)  # every attempt alike
    assert message_id(event_id) != message_id(str(uuid.uuid4()))
    with pytest.raises(ValueError):
        message_id("not-a-uuid>\r\nBcc: x@y.example")


def test_a_job_payload_round_trips() -> None:
    job = MailJob("buyer@example.com", "코드 — 123456", "Hello\nCode 123456", "verify-email", NOW)
    assert MailJob.from_payload(job.payload()) == job
    plain = MailJob("a@b.example", "s", "t", None, NOW + timedelta(hours=1))
    assert MailJob.from_payload(plain.payload()) == plain


@pytest.mark.parametrize(
    "payload", ["", "[]", "{}", '{"to": "a@b.example"}', '{"to":"x","subject":"s","text":"t",'
    '"created_at":"2026-01-01T00:00:00+00:00"}'],
)  # fmt: skip
def test_a_malformed_payload_is_a_value_error(payload: str) -> None:
    with pytest.raises(ValueError, match="not a mail job"):
        MailJob.from_payload(payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "two@a.example, three@b.example"),
        ("to", "Name <a@b.example>"),
        ("to", "a@b.example\r\nBcc: c@d.example"),
        ("to", "no-at-sign"),
        ("to", ""),
        ("subject", "one\nline"),
        ("subject", "x" * 201),
        ("text", "x" * 100_001),
        ("template", ""),
        ("created_at", datetime(2026, 1, 1)),
    ],
)
def test_a_job_breaking_the_rules_is_refused(field: str, value: object) -> None:
    fields: dict[str, object] = {
        "to": "a@b.example",
        "subject": "s",
        "text": "t",
        "template": None,
        "created_at": NOW,
    }
    fields[field] = value
    with pytest.raises(ValueError):
        MailJob(**fields)  # type: ignore[arg-type]


def test_check_address_accepts_plain_addresses() -> None:
    assert check_address("Buyer.One+tag@sub.example.com") == "Buyer.One+tag@sub.example.com"


def test_the_message_of_a_job() -> None:
    event_id = str(uuid.uuid4())
    seoul = timezone(timedelta(hours=9))
    job = MailJob("buyer@example.com", "인증 코드", "Your code: 123456\n", "verify-email", NOW)
    message = build_message(job, event_id, "Flashsale <no-reply@shop.example>")
    parsed = email.message_from_bytes(bytes(message), policy=email.policy.default)
    assert parsed["Message-ID"] == f"<outbox-{event_id}@flashsale>"
    assert parsed["From"] == "Flashsale <no-reply@shop.example>"
    assert parsed["To"] == "buyer@example.com"
    assert parsed["Subject"] == "인증 코드"
    assert parsed["Date"].datetime == NOW.astimezone(seoul)  # the job's time, every attempt
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Flashsale-Template"] == "verify-email"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content() == "Your code: 123456\n"
    # A retried attempt sends the same message.
    again = build_message(job, event_id, "Flashsale <no-reply@shop.example>")
    assert bytes(again) == bytes(message)


# -- the sink's store ------------------------------------------------------------------------


def _raw(event_id: str, to: str = "buyer@example.com", text: str = "hi\n") -> bytes:
    job = MailJob(to, "subject", text, "verify-email", NOW)
    return bytes(build_message(job, event_id, "Shop <s@shop.example>"))


def test_the_sink_stores_a_message_once_per_message_id() -> None:
    store = MailStore()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.add("s@shop.example", ["buyer@example.com"], _raw(first))
    assert not store.add("s@shop.example", ["buyer@example.com"], _raw(first))
    assert store.add("s@shop.example", ["other@example.com"], _raw(second, "other@example.com"))
    assert (store.received, len(store.messages), store.duplicates) == (3, 2, 1)
    stored = store.messages[0]
    assert stored.message_id == f"<outbox-{first}@flashsale>"
    assert (stored.sender, stored.envelope_from) == ("Shop <s@shop.example>", "s@shop.example")
    assert (stored.to, stored.subject, stored.text) == (("buyer@example.com",), "subject", "hi\n")
    assert stored.template == "verify-email"
    store.clear()
    assert (store.received, store.messages, store.duplicates) == (0, [], 0)


def test_a_message_without_message_id_is_always_stored() -> None:
    store = MailStore()
    raw = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: x\r\n\r\nbody\r\n"
    assert store.add("a@b.example", ["c@d.example"], raw)
    assert store.add("a@b.example", ["c@d.example"], raw)
    assert len(store.messages) == 2
    assert store.messages[0].message_id is None


def test_sink_arguments() -> None:
    assert parse_login("user@x:pa:ss") == ("user@x", "pa:ss")
    for bad in ("user", ":pw", "user:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_login(bad)
    with pytest.raises(ValueError, match="fail_rate"):
        SinkHandler(MailStore(), fail_rate=1.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--login", "no-password"],
        ["--fail-rate", "1.5"],
        ["--port", "2525", "--http-port", "2525"],
    ],
)
def test_mail_sink_refuses_bad_options_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from flashsale.cli import main

    assert main(["mail-sink", *argv]) == 2
    assert capsys.readouterr().err.startswith("error: ")
