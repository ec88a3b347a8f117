"""``flashsale mail-sink``: a local SMTP server that keeps what it receives, for
development, tests and the demo (docs/cli.md#flashsale-mail-sink).

One process, one event loop: an SMTP server (aiosmtpd) on ``--port`` and an HTTP API
(FastAPI under uvicorn) on ``--http-port``, sharing one in-memory :class:`MailStore`.
Point ``FLASHSALE_SMTP_URL`` at ``smtp://HOST:PORT``.

SMTP: any sender and recipient is accepted; a message is stored once per
``Message-ID`` (the relay derives it from the outbox job, so a retried delivery is a
duplicate: answered ``250`` like the first, counted, not stored again). A message
without ``Message-ID`` is always stored. With ``--login USER:PASSWORD`` a client must
log in (``AUTH PLAIN``/``LOGIN``, allowed without TLS: this is a local tool) before
``MAIL FROM``, or gets ``530``. With ``--fail-rate R`` a fraction R of messages is
answered ``451`` (try again later), half of them after storing the message: a lost
acknowledgement, so the sender retries a mail the sink already has.

HTTP:

- ``GET /messages?to=ADDRESS`` -- ``{"messages": [{id, message_id, from, to, subject,
  text, template, received_at}, ...]}`` in arrival order (``from``: the ``From``
  header; ``to``: the envelope recipients; ``template``: the ``X-Flashsale-Template``
  header or null; ``received_at``: ISO 8601 UTC), only those sent to ``ADDRESS`` if given.
- ``DELETE /messages`` -- forget every message and reset the counters (204).
- ``GET /stats`` -- ``{received, stored, duplicates, failed}``: messages that reached
  ``DATA``, stored, recognised as duplicates, answered ``451`` by the failure injection.
- ``PUT /config {fail_rate}`` / ``GET /config`` -- the failure injection, changeable.
- ``GET /healthz``.

Messages live in memory: they are gone when the process stops.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hmac
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Annotated, Any, Final

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from fastapi import FastAPI, Query, Response
from pydantic import BaseModel, Field

__all__ = [
    "MailStore",
    "SinkHandler",
    "StoredMail",
    "create_http_app",
    "parse_login",
    "serve",
]

log = logging.getLogger(__name__)

#: The SMTP greeting's host name (no DNS look-up of this machine's FQDN).
SINK_HOSTNAME: Final = "flashsale-mail-sink"
#: Largest message accepted, bytes.
MAX_MESSAGE_BYTES: Final = 10 * 1024 * 1024


@dataclass(frozen=True)
class StoredMail:
    """One message the sink stored.

    Attributes:
        id: arrival number, from 1.
        message_id: the ``Message-ID`` header (``<...>``), or None if it had none.
        sender: the ``From`` header as received.
        envelope_from: the SMTP ``MAIL FROM`` address.
        to: the envelope recipients (``RCPT TO``).
        subject: the decoded ``Subject``.
        text: the plain-text body (the ``text/plain`` part), decoded, with ``\n`` line ends.
        template: the ``X-Flashsale-Template`` header, or None.
        received_at: when it arrived, timezone-aware UTC.
    """

    id: int
    message_id: str | None
    sender: str
    envelope_from: str
    to: tuple[str, ...]
    subject: str
    text: str
    template: str | None
    received_at: datetime


@dataclass
class MailStore:
    """The sink's messages and counters, in memory (single event loop: no locking)."""

    messages: list[StoredMail] = field(default_factory=list)
    by_message_id: dict[str, StoredMail] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    failed: int = 0

    def add(self, envelope_from: str, to: list[str], content: bytes) -> bool:
        """Parse and store a message; False (nothing stored) if its ``Message-ID``
        is already there."""
        self.received += 1
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
        raw_id = parsed.get("Message-ID")
        message_id = str(raw_id).strip() if raw_id is not None else None
        if message_id and message_id in self.by_message_id:
            self.duplicates += 1
            return False
        body = parsed.get_body(preferencelist=("plain",))
        text = body.get_content() if isinstance(body, EmailMessage) else ""
        template = parsed.get("X-Flashsale-Template")
        stored = StoredMail(
            id=len(self.messages) + 1,
            message_id=message_id or None,
            sender=str(parsed.get("From", "")),
            envelope_from=envelope_from,
            to=tuple(to),
            subject=str(parsed.get("Subject", "")),
            text=str(text).replace("\r\n", "\n"),
            template=None if template is None else str(template),
            received_at=datetime.now(UTC),
        )
        self.messages.append(stored)
        if message_id:
            self.by_message_id[message_id] = stored
        return True

    def clear(self) -> None:
        """Forget every message and reset the counters."""
        self.messages.clear()
        self.by_message_id.clear()
        self.received = self.duplicates = self.failed = 0


class SinkHandler:
    """The aiosmtpd handler: stores each message in ``store``.

    Args:
        store: where messages go.
        fail_rate: fraction of messages answered ``451``, in [0, 1]; half of those
            after storing (a lost acknowledgement).
        seed: seed of the failure draws (None: unpredictable).
        login: ``(user, password)`` a client must log in with before ``MAIL FROM``,
            or None for no login.

    Raises:
        ValueError: ``fail_rate`` outside [0, 1].
    """

    def __init__(
        self,
        store: MailStore,
        fail_rate: float = 0.0,
        seed: int | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate}")
        self.store = store
        self.fail_rate = fail_rate
        self.login = login
        self._rng = random.Random(seed)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator: the user and password of ``--login``."""
        if self.login is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.login
        ok = hmac.compare_digest(data.login, user.encode()) & hmac.compare_digest(
            data.password, password.encode()
        )
        return AuthResult(success=bool(ok), handled=False)

    async def handle_MAIL(  # aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Refuse ``MAIL FROM`` before the login when ``login`` is set."""
        if self.login is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Store the message (or fail it, as the failure injection draws)."""
        draw = self._rng.random()
        if draw < self.fail_rate / 2:
            self.store.failed += 1
            return "451 4.3.0 Failure injected by --fail-rate, try again later"
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        try:
            new = self.store.add(envelope.mail_from or "", list(envelope.rcpt_tos), content)
        except Exception:  # a message the parser cannot read: refused, never a crash
            log.exception("mail-sink: cannot parse a message")
            return "554 5.6.0 Message cannot be parsed"
        if draw < self.fail_rate:
            self.store.failed += 1
            return "451 4.3.0 Failure injected by --fail-rate (after storing), try again later"
        return "250 Message accepted" if new else "250 Duplicate Message-ID, already stored"


class MailOut(BaseModel):
    """A stored message as ``GET /messages`` lists it."""

    id: int
    message_id: str | None
    sender: str = Field(serialization_alias="from")
    to: list[str]
    subject: str
    text: str
    template: str | None
    received_at: datetime

    @classmethod
    def of(cls, mail: StoredMail) -> MailOut:
        return cls(
            id=mail.id,
            message_id=mail.message_id,
            sender=mail.sender,
            to=list(mail.to),
            subject=mail.subject,
            text=mail.text,
            template=mail.template,
            received_at=mail.received_at,
        )


class MailList(BaseModel):
    """``GET /messages``."""

    messages: list[MailOut]


class SinkStats(BaseModel):
    """``GET /stats``."""

    received: int
    stored: int
    duplicates: int
    failed: int


class SinkConfig(BaseModel):
    """``GET``/``PUT /config``: the failure injection."""

    fail_rate: float = Field(ge=0.0, le=1.0)


def create_http_app(store: MailStore, handler: SinkHandler) -> FastAPI:
    """The sink's HTTP API over ``store`` (endpoints in the module docstring)."""
    app = FastAPI(title="Flashsale mail sink")

    @app.get("/messages", response_model_by_alias=True)
    async def list_messages(
        to: Annotated[str | None, Query(max_length=320)] = None,
    ) -> MailList:
        """Stored messages in arrival order, only those to ``to`` if given (any case)."""
        wanted = to.lower() if to is not None else None
        return MailList(
            messages=[
                MailOut.of(m)
                for m in store.messages
                if wanted is None or wanted in (r.lower() for r in m.to)
            ]
        )

    @app.delete("/messages", status_code=204)
    async def clear_messages() -> Response:
        """Forget every message and reset the counters."""
        store.clear()
        return Response(status_code=204)

    @app.get("/stats")
    async def stats() -> SinkStats:
        """Counters since start (or the last ``DELETE /messages``)."""
        return SinkStats(
            received=store.received,
            stored=len(store.messages),
            duplicates=store.duplicates,
            failed=store.failed,
        )

    @app.get("/config")
    async def get_config() -> SinkConfig:
        """The failure injection."""
        return SinkConfig(fail_rate=handler.fail_rate)

    @app.put("/config")
    async def put_config(change: SinkConfig) -> SinkConfig:
        """Change the failure injection."""
        handler.fail_rate = change.fail_rate
        return change

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness (both servers are listening once this answers)."""
        return {"status": "ok"}

    return app


def parse_login(value: str) -> tuple[str, str]:
    """``USER:PASSWORD`` of ``--login`` as ``(user, password)``.

    Raises:
        ValueError: no colon, or an empty user or password.
    """
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--login must be USER:PASSWORD")
    return user, password


class _DropLoginDataNotice(logging.Filter):
    """aiosmtpd's own AUTH code sets the attribute it warns about on every login."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


async def serve(
    host: str,
    port: int,
    http_port: int,
    *,
    fail_rate: float = 0.0,
    seed: int | None = None,
    login: tuple[str, str] | None = None,
) -> None:
    """Run the sink until SIGINT/SIGTERM: SMTP on ``host:port``, HTTP on ``host:http_port``.

    The SMTP server listens before the HTTP one starts, so once ``GET /healthz``
    answers, both do.

    Raises:
        OSError: a port is taken.
        ValueError: ``fail_rate`` outside [0, 1].
    """
    import uvicorn

    logging.getLogger("mail.log").addFilter(_DropLoginDataNotice())
    store = MailStore()
    handler = SinkHandler(store, fail_rate=fail_rate, seed=seed, login=login)
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname=SINK_HOSTNAME,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            # A local tool: login over plain TCP is allowed (no certificate to manage).
            auth_require_tls=False,
            authenticator=handler.authenticate if login is not None else None,
            loop=loop,
        )

    smtp_server = await loop.create_server(protocol, host=host, port=port)
    try:
        config = uvicorn.Config(
            create_http_app(store, handler),
            host=host,
            port=http_port,
            log_level="warning",
            access_log=False,
        )
        await uvicorn.Server(config).serve()
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()
