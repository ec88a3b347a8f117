"""Sending a mail job over SMTP (aiosmtplib), for the outbox relay (docs/operations.md#mail).

:func:`build_message` turns a job into the message every attempt sends alike (same
``Message-ID`` and ``Date``); :class:`SmtpSender` hands it to the server named by
``FLASHSALE_SMTP_URL`` (:func:`flashsale.mail.config.parse_smtp_url`), one connection
per message. A send succeeds when the server accepted the message (``250`` after
``DATA``); anything else raises and the relay retries the job later.
"""

from __future__ import annotations

import socket
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol

import aiosmtplib

from flashsale.mail.config import SmtpConfig
from flashsale.mail.outbox import MailJob, message_id

__all__ = ["MailSender", "SmtpSender", "build_message"]


def build_message(job: MailJob, event_id: str, mail_from: str) -> EmailMessage:
    """The message of mail job ``event_id``: plain text (UTF-8), headers ``From``
    (``mail_from``, a formatted ``Name <address>``), ``To``, ``Subject``, ``Date`` (the
    job's ``created_at``), ``Message-ID`` (:func:`~flashsale.mail.outbox.message_id`),
    ``Auto-Submitted: auto-generated`` (RFC 3834: no auto-replies), and
    ``X-Flashsale-Template`` when the job names one.

    Raises:
        ValueError: ``event_id`` is not a UUID.
    """
    message = EmailMessage()
    message["Message-ID"] = message_id(event_id)
    message["Date"] = format_datetime(job.created_at)
    message["From"] = mail_from
    message["To"] = job.to
    message["Subject"] = job.subject
    message["Auto-Submitted"] = "auto-generated"
    if job.template is not None:
        message["X-Flashsale-Template"] = job.template
    message.set_content(job.text)
    return message


class MailSender(Protocol):
    """What the relay sends mail with (tests inject their own)."""

    async def send(
        self, message: EmailMessage, sender: str, recipient: str, command_timeout_s: float
    ) -> None:
        """Deliver ``message`` from envelope ``sender`` to ``recipient``, waiting at most
        ``command_timeout_s`` seconds for each answer of the server; return once the
        server accepted it, raise anything otherwise (the caller bounds the whole send)."""
        ...


class SmtpSender:
    """Sends each message over a new SMTP connection to ``config``'s server.

    Args:
        config: host, port, login and TLS mode (``FLASHSALE_SMTP_URL`` parsed).
        local_hostname: the name given in ``EHLO``; default this machine's host name
            (not its FQDN, whose DNS look-up may be slow).
    """

    def __init__(self, config: SmtpConfig, local_hostname: str | None = None) -> None:
        self.config = config
        self._local_hostname = local_hostname or socket.gethostname() or "localhost"

    async def send(
        self, message: EmailMessage, sender: str, recipient: str, command_timeout_s: float
    ) -> None:
        """Connect, (STARTTLS, log in,) send ``message`` to ``recipient``, quit; each
        answer of the server is waited for at most ``command_timeout_s`` seconds.

        Raises:
            aiosmtplib.SMTPException: the server refused (a 4xx or 5xx answer to any
                command, e.g. ``SMTPRecipientsRefused``, ``SMTPDataError``,
                ``SMTPAuthenticationError``), could not be reached
                (``SMTPConnectError``), or did not answer in time
                (``SMTPTimeoutError``).
        """
        config = self.config
        await aiosmtplib.send(
            message,
            sender=sender,
            recipients=[recipient],
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            local_hostname=self._local_hostname,
            timeout=command_timeout_s,
            use_tls=config.tls,
            # Explicit: without STARTTLS asked for, never upgrade (aiosmtplib's default
            # would upgrade whenever the server offers it).
            start_tls=config.starttls,
        )
