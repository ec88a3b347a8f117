"""``flashsale serve`` sends the outbox's mail jobs to ``FLASHSALE_SMTP_URL``: a real
server (2 workers, so 2 relays) and a real ``flashsale mail-sink`` (docs/operations.md#mail).

The mail job is written through a group-commit writer of the test process on the
server's database, as a request's operation writes one. It arrives at the sink once,
and ``/metrics`` counts it as sent.
"""

from __future__ import annotations

import asyncio
import re
import time
from functools import partial
from typing import TYPE_CHECKING

import httpx
import pytest

from flashsale.db.engine import make_writer
from flashsale.db.types import utcnow
from flashsale.demo.server import MailSinkProcess
from flashsale.mail.outbox import add_mail, message_id
from flashsale.settings import Settings

if TYPE_CHECKING:
    from .conftest import ServerFactory

pytestmark = pytest.mark.e2e

WAIT_S = 30.0


async def queue_mail(database_url: str) -> str:
    """A mail job written through a group-commit writer on ``database_url``; its event_id."""
    writer = make_writer(Settings(database_url=database_url))
    writer.start()
    try:
        op = partial(add_mail, to="buyer@example.com", subject="Hi", text="Hello\n")
        event_id: str = await writer.submit(lambda tx: op(tx.conn, now=utcnow()))
        return event_id
    finally:
        await writer.stop()


def test_the_server_sends_mail_jobs_to_the_sink(server_factory: ServerFactory) -> None:
    with MailSinkProcess(log_path=server_factory.tmp_path / "sink.log") as sink:
        server = server_factory.start(
            {"FLASHSALE_SMTP_URL": sink.smtp_url, "FLASHSALE_OUTBOX_POLL_S": "0.05"}
        )
        event_id = asyncio.run(queue_mail(server_factory.database_url))

        deadline = time.monotonic() + WAIT_S
        while not sink.messages():
            assert time.monotonic() < deadline, "no mail reached the sink"
            time.sleep(0.05)
        time.sleep(0.5)  # any second copy would be in by now
        (mail,) = sink.messages()
        assert mail["message_id"] == message_id(event_id)
        assert sink.stats()["received"] == 1

        scrape = httpx.get(f"{server.process.base_url}/metrics", timeout=10).text
        sent = re.search(r'^flashsale_mail_deliveries_total\{outcome="sent"\} (\S+)$', scrape, re.M)
        assert sent is not None and float(sent.group(1)) == 1.0
