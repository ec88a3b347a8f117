"""Mail over real SMTP: the relay sends mail jobs to a real ``flashsale mail-sink``
process (docs/operations.md#mail).

A mail job written through the writer arrives once; a sink that is down for a while
gets the mail once it is up (the relay retried meanwhile); lost acknowledgements
(the sink stores, then answers 451) make the relay send again, and the sink keeps one
copy per ``Message-ID``; a sink that requires a login gets one. Order events go to the
data platform only, whatever the mail does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from pydantic import SecretStr

from flashsale.db.engine import Database
from flashsale.db.types import utcnow
from flashsale.db.writer import GroupCommitWriter
from flashsale.demo.server import MailSinkProcess, free_port
from flashsale.mail.outbox import add_mail, message_id
from flashsale.outbox.relay import OutboxRelay, backlogs
from flashsale.settings import Settings

from .support import all_platform_events, insert_events, outbox_rows

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MakeSettings = Callable[..., Settings]
#: Seconds a wait of these tests may take before it fails.
WAIT_S = 30.0


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSinkProcess]:
    """A ``flashsale mail-sink`` on free ports, stopped after the test."""
    with MailSinkProcess(log_path=tmp_path / "sink.log") as running:
        yield running


async def queue_mail(writer: GroupCommitWriter, to: str) -> str:
    """A mail job written by a writer operation, as a request writes one; its event_id."""
    op = partial(add_mail, to=to, subject="Your code", text=f"Code for {to}: 123456\n")
    event_id: str = await writer.submit(lambda tx: op(tx.conn, now=utcnow(), template="verify"))
    return event_id


async def mail_waiting(db: Database) -> int:
    async with db.read_session() as session:
        return (await backlogs(session)).mail


async def events_waiting(db: Database) -> int:
    async with db.read_session() as session:
        return (await backlogs(session)).events


async def send_all(relay: OutboxRelay, db: Database) -> None:
    """Run relay rounds until no mail job is waiting."""
    with anyio.fail_after(WAIT_S):
        while True:
            await relay.run_once()
            if not await mail_waiting(db):
                return
            await anyio.sleep(0.01)


async def messages(sink: MailSinkProcess, to: str | None = None) -> list[dict[str, object]]:
    return await anyio.to_thread.run_sync(lambda: sink.messages(to=to))


async def test_a_mail_job_arrives_once_through_a_real_sink(
    db: Database,
    writer: GroupCommitWriter,
    make_settings: MakeSettings,
    platform_client: httpx.AsyncClient,
    sink: MailSinkProcess,
) -> None:
    event_ids = await insert_events(db, 3)
    mail_id = await queue_mail(writer, "buyer@example.com")
    settings = make_settings(
        smtp_url=SecretStr(sink.smtp_url), mail_from="Flashsale <no-reply@shop.example>"
    )
    relay = OutboxRelay(db, writer, settings, "relay-a", platform_client)
    await send_all(relay, db)
    with anyio.fail_after(WAIT_S):
        while await events_waiting(db):
            await relay.run_once()

    (mail,) = await messages(sink)
    assert mail["message_id"] == message_id(mail_id)
    assert mail["from"] == "Flashsale <no-reply@shop.example>"
    assert mail["to"] == ["buyer@example.com"]
    assert (mail["subject"], mail["text"]) == ("Your code", "Code for buyer@example.com: 123456\n")
    assert mail["template"] == "verify"
    assert await messages(sink, to="BUYER@example.com") == [mail]
    assert await messages(sink, to="other@example.com") == []
    stats = await anyio.to_thread.run_sync(sink.stats)
    assert stats == {"received": 1, "stored": 1, "duplicates": 0, "failed": 0}
    # Order events went to the data platform, the mail job did not.
    stored = await all_platform_events(platform_client)
    assert sorted(e["event_id"] for e in stored) == sorted(event_ids)
    assert all(r["delivered_at"] is not None for r in await outbox_rows(db))


async def test_a_sink_down_for_a_while_gets_the_mail_once_it_is_up(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings, tmp_path: Path
) -> None:
    port = free_port()
    mail_ids = [await queue_mail(writer, f"buyer{i}@example.com") for i in range(3)]
    settings = make_settings(data_platform_url=None, smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"))
    relay = OutboxRelay(db, writer, settings, "relay-a")

    # Nobody listens: every attempt fails and is retried with backoff; nothing is lost.
    with anyio.fail_after(WAIT_S):
        while min(r["attempts"] for r in await outbox_rows(db)) < 2:
            await relay.run_once()
            await anyio.sleep(0.01)
    for row in await outbox_rows(db):
        assert row["delivered_at"] is None
        assert "SMTPConnectError" in row["last_error"], row["last_error"]

    with MailSinkProcess(smtp_port=port, log_path=tmp_path / "sink.log") as sink:
        await send_all(relay, db)
        received = await messages(sink)
    assert sorted(m["message_id"] for m in received) == sorted(message_id(e) for e in mail_ids)
    for row in await outbox_rows(db):
        assert row["delivered_at"] is not None and row["attempts"] >= 3


async def test_lost_acknowledgements_leave_one_copy_per_message_id(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings, tmp_path: Path
) -> None:
    mail_ids = [await queue_mail(writer, f"buyer{i}@example.com") for i in range(10)]
    # Every message is answered 451, half of them after the sink stored it.
    with MailSinkProcess(fail_rate=1.0, seed=5, log_path=tmp_path / "sink.log") as sink:
        settings = make_settings(data_platform_url=None, smtp_url=SecretStr(sink.smtp_url))
        relay = OutboxRelay(db, writer, settings, "relay-a")
        await relay.run_once()
        assert all(r["attempts"] == 1 for r in await outbox_rows(db))
        first = await anyio.to_thread.run_sync(sink.stats)
        assert first["failed"] == 10 and 0 < first["stored"] < 10  # seed 5: some of each

        async with httpx.AsyncClient(base_url=sink.base_url) as client:
            response = await client.put("/config", json={"fail_rate": 0.0})
            assert response.status_code == 200, response.text
        await send_all(relay, db)
        received = await messages(sink)
        stats = await anyio.to_thread.run_sync(sink.stats)

    assert sorted(m["message_id"] for m in received) == sorted(message_id(e) for e in mail_ids)
    assert stats["stored"] == 10
    # Each one stored before its lost acknowledgement came again and was recognised.
    assert stats["duplicates"] == first["stored"]
    assert stats["received"] == 10 + first["stored"]


async def test_a_sink_that_requires_a_login_gets_one(
    db: Database, writer: GroupCommitWriter, make_settings: MakeSettings, tmp_path: Path
) -> None:
    mail_id = await queue_mail(writer, "buyer@example.com")
    login = ("shop@example.com", "p@ss:w0rd")
    with MailSinkProcess(login=login, log_path=tmp_path / "sink.log") as sink:
        anonymous = f"smtp://127.0.0.1:{sink.smtp_port}"
        settings = make_settings(data_platform_url=None, smtp_url=SecretStr(anonymous))
        await OutboxRelay(db, writer, settings, "relay-a").run_once()
        (row,) = await outbox_rows(db)
        assert row["delivered_at"] is None
        assert "530" in row["last_error"] and "Authentication required" in row["last_error"]

        assert "shop%40example.com:p%40ss%3Aw0rd@" in sink.smtp_url
        settings = make_settings(data_platform_url=None, smtp_url=SecretStr(sink.smtp_url))
        relay = OutboxRelay(db, writer, settings, "relay-b")
        await send_all(relay, db)
        (mail,) = await messages(sink)
    assert mail["message_id"] == message_id(mail_id)
