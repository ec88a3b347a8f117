"""Mail jobs in the outbox and their routing by the relay (docs/operations.md#mail).

A mail job is written by a writer operation (in the transaction of the change that
causes it); the relay sends it to the mailer only, and order events to the data
platform only; unconfigured mail waits; a failed send is retried with backoff. The
mailer here is a fake: ``test_mail_process.py`` sends through a real
``flashsale mail-sink``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from functools import partial

import aiosmtplib
import anyio
import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from flashsale.db.engine import Database
from flashsale.db.models import outbox
from flashsale.db.session import transaction
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter, Tx
from flashsale.errors import OutOfStock
from flashsale.mail.outbox import MAIL_JOB, add_mail, message_id
from flashsale.outbox.relay import MIN_BACKOFF_S, OutboxRelay, backlogs
from flashsale.settings import Settings

from .support import all_platform_events, insert_events, outbox_rows

pytestmark = pytest.mark.anyio

MakeSettings = Callable[..., Settings]


class FakeMailer:
    """Records what it is asked to send; fails the first ``fail`` sends with a 451."""

    def __init__(self, fail: int = 0, delay_s: float = 0.0) -> None:
        self.sent: list[tuple[EmailMessage, str, str]] = []
        self.attempts = 0
        self.fail = fail
        self.delay_s = delay_s

    async def send(
        self, message: EmailMessage, sender: str, recipient: str, command_timeout_s: float
    ) -> None:
        self.attempts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            self.fail -= 1
            raise aiosmtplib.SMTPResponseException(451, "4.3.0 try again later")
        self.sent.append((message, sender, recipient))


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def queue_mail(writer: GroupCommitWriter, to: str, **fields: str) -> str:
    """Queue a mail through the writer, as a request's operation does; its event_id."""
    op = partial(
        add_mail,
        to=to,
        subject=fields.get("subject", "Your code"),
        text=fields.get("text", f"Hello {to}\nYour code: 123456\n"),
        template=fields.get("template", "verify-email"),
    )
    event_id: str = await writer.submit(lambda tx: op(tx.conn, now=utcnow()))
    return event_id


async def test_a_mail_job_is_an_outbox_row_written_by_the_writer(
    db: Database, writer: GroupCommitWriter
) -> None:
    before = utcnow()
    event_id = await queue_mail(writer, "buyer@example.com", subject="코드")
    (row,) = await outbox_rows(db)
    assert row["event_id"] == event_id
    assert (row["type"], row["order_id"], row["attempts"], row["delivered_at"]) == (
        MAIL_JOB,
        None,
        0,
        None,
    )
    assert before <= row["created_at"] == row["available_at"] <= utcnow()
    payload = json.loads(row["payload"])
    assert payload == {
        "to": "buyer@example.com",
        "subject": "코드",
        "text": "Hello buyer@example.com\nYour code: 123456\n",
        "template": "verify-email",
        "created_at": row["created_at"].isoformat(),
    }


async def test_a_mail_job_is_written_only_if_its_operation_commits(
    db: Database, writer: GroupCommitWriter
) -> None:
    def refused(tx: Tx) -> None:
        add_mail(tx.conn, to="buyer@example.com", subject="s", text="t", now=utcnow())
        raise OutOfStock()  # the change that caused the mail is refused

    with pytest.raises(OutOfStock):
        await writer.submit(refused)
    await queue_mail(writer, "other@example.com")
    rows = await outbox_rows(db)
    assert [json.loads(r["payload"])["to"] for r in rows] == ["other@example.com"]


async def test_mail_goes_to_the_mailer_and_events_to_the_data_platform(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
) -> None:
    event_ids = await insert_events(db, 5)
    mail_ids = [await queue_mail(writer, f"buyer{i}@example.com") for i in range(3)]
    event_ids += await insert_events(db, 2)
    mailer = FakeMailer()
    sent_before = sample("flashsale_mail_deliveries_total", outcome="sent")
    settings = make_settings(mail_from="Shop <shop@flashsale.example>")
    relay = OutboxRelay(db, writer, settings, "relay-a", platform_client, mailer=mailer)
    assert relay.sends_mail

    delivered = 0
    with anyio.fail_after(10):
        while delivered < 10:
            delivered += await relay.run_once()

    stored = await all_platform_events(platform_client)
    assert sorted(e["event_id"] for e in stored) == sorted(event_ids)  # no mail job there
    assert {e["type"] for e in stored} == {"order.paid"}
    assert len(mailer.sent) == 3
    by_id = {m["Message-ID"]: (m, sender, rcpt) for m, sender, rcpt in mailer.sent}
    assert set(by_id) == {message_id(e) for e in mail_ids}
    for i, event_id in enumerate(mail_ids):
        message, sender, recipient = by_id[message_id(event_id)]
        assert (sender, recipient) == ("shop@flashsale.example", f"buyer{i}@example.com")
        assert message["From"] == "Shop <shop@flashsale.example>"
        assert message["To"] == f"buyer{i}@example.com"
        assert message.get_content() == f"Hello buyer{i}@example.com\nYour code: 123456\n"
    assert all(r["delivered_at"] is not None for r in await outbox_rows(db))
    assert sample("flashsale_mail_deliveries_total", outcome="sent") == sent_before + 3
    assert sample("flashsale_mail_backlog_jobs") == 0
    assert await relay.run_once() == 0
    assert len(mailer.sent) == 3


async def test_without_smtp_mail_waits_and_a_warning_says_so(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await insert_events(db, 2)
    mail_id = await queue_mail(writer, "buyer@example.com")
    relay = OutboxRelay(db, writer, make_settings(), "relay-a", platform_client)
    assert not relay.sends_mail
    with caplog.at_level(logging.WARNING, logger="flashsale.outbox.relay"):
        assert await relay.run_once() == 2
        assert await relay.run_once() == 0
    warnings = [r.getMessage() for r in caplog.records if "mail is not configured" in r.message]
    assert len(warnings) == 1  # not every round
    assert "FLASHSALE_SMTP_URL is unset" in warnings[0]
    assert "1 mail jobs wait" in warnings[0]

    mail_row = next(r for r in await outbox_rows(db) if r["event_id"] == mail_id)
    # Never claimed, never attempted: it is sent once SMTP is configured.
    assert (mail_row["attempts"], mail_row["claimed_by"], mail_row["delivered_at"]) == (
        0,
        None,
        None,
    )
    assert sample("flashsale_mail_backlog_jobs") == 1
    assert sample("flashsale_outbox_backlog_events") == 0  # the events' backlog has no mail
    async with db.read_session() as session:
        found = await backlogs(session)
    assert (found.events, found.mail) == (0, 1)
    assert found.mail_age_s >= 0

    mailer = FakeMailer()
    relay = OutboxRelay(db, writer, make_settings(), "relay-b", platform_client, mailer=mailer)
    assert await relay.run_once() == 1
    assert [m["Message-ID"] for m, _, _ in mailer.sent] == [message_id(mail_id)]


async def test_mail_only_leaves_the_events_for_the_data_platform(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings
) -> None:
    event_ids = await insert_events(db, 3)
    await queue_mail(writer, "buyer@example.com")
    mailer = FakeMailer()
    relay = OutboxRelay(db, writer, make_settings(data_platform_url=None), "r", mailer=mailer)
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    rows = {r["event_id"]: r for r in await outbox_rows(db)}
    for event_id in event_ids:  # not claimed, not attempted
        assert (rows[event_id]["attempts"], rows[event_id]["delivered_at"]) == (0, None)
    assert len(mailer.sent) == 1


async def test_a_refused_mail_is_retried_with_backoff_until_it_is_sent(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings
) -> None:
    mail_id = await queue_mail(writer, "buyer@example.com")
    mailer = FakeMailer(fail=2)
    failed_before = sample("flashsale_mail_deliveries_total", outcome="failed")
    settings = make_settings(
        data_platform_url=None, outbox_backoff_base_s=30.0, outbox_backoff_max_s=30.0
    )
    relay = OutboxRelay(db, writer, settings, "r", mailer=mailer, rng=random.Random(3))

    before = utcnow()
    assert await relay.run_once() == 0
    (row,) = await outbox_rows(db)
    assert (row["attempts"], row["delivered_at"], row["claimed_by"]) == (1, None, None)
    assert row["last_error"] == "SMTPResponseException: (451, '4.3.0 try again later')"
    assert before + timedelta(seconds=MIN_BACKOFF_S) <= row["available_at"]
    assert row["available_at"] <= utcnow() + timedelta(seconds=30.0)
    assert await relay.run_once() == 0  # not due yet: not attempted
    assert mailer.attempts == 1
    assert sample("flashsale_mail_deliveries_total", outcome="failed") == failed_before + 1

    for attempt in (2, 3):
        async with transaction(db.write_session) as session:  # the backoff has passed
            await session.execute(update(outbox).values(available_at=utcnow()))
        assert await relay.run_once() == (1 if attempt == 3 else 0)
    (row,) = await outbox_rows(db)
    assert row["attempts"] == 3 and row["delivered_at"] is not None
    assert [m["Message-ID"] for m, _, _ in mailer.sent] == [message_id(mail_id)]


async def test_a_hanging_smtp_server_is_a_failed_attempt(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings
) -> None:
    await queue_mail(writer, "buyer@example.com")
    settings = make_settings(data_platform_url=None, smtp_timeout_s=0.2)
    relay = OutboxRelay(db, writer, settings, "r", mailer=FakeMailer(delay_s=30))
    with anyio.fail_after(5):
        assert await relay.run_once() == 0
    (row,) = await outbox_rows(db)
    assert row["last_error"] == "TimeoutError: no answer within 0.2 s"
    assert (row["attempts"], row["delivered_at"]) == (1, None)


async def test_a_malformed_mail_job_is_retried_never_dropped(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings
) -> None:
    mail_id = await queue_mail(writer, "buyer@example.com")
    async with transaction(db.write_session) as session:
        await session.execute(update(outbox).values(payload="{}"))
    mailer = FakeMailer()
    relay = OutboxRelay(db, writer, make_settings(data_platform_url=None), "r", mailer=mailer)
    assert await relay.run_once() == 0
    (row,) = await outbox_rows(db)
    assert row["event_id"] == mail_id
    assert row["last_error"].startswith("ValueError: not a mail job")
    assert row["delivered_at"] is None and mailer.attempts == 0
