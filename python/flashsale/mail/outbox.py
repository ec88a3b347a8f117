"""Mail jobs in the outbox: a request queues mail, the relay sends it (docs/operations.md#mail).

Mail is never sent inside a request. The request's writer operation inserts a
*mail job* into the ``outbox`` table, in the same transaction as the change that
causes the mail (a sign-up, a password reset), so the mail exists exactly when the
change committed. The outbox relay (:mod:`flashsale.outbox.relay`) claims it with
the order events, sends it over SMTP (:mod:`flashsale.mail.smtp`) and retries it
with the events' backoff until the SMTP server accepts it: at least once, never
dropped. A retried delivery carries the same ``Message-ID`` (:func:`message_id`),
by which a receiver recognises it.

A mail job is an ``outbox`` row with ``type = "mail"`` (:data:`MAIL_JOB`),
``order_id`` NULL and this JSON ``payload``::

    {"to": "buyer@example.com", "subject": "...", "text": "...",
     "template": "verify-email" | null, "created_at": "<ISO 8601 UTC>"}

Mail jobs never reach the data platform, the ranking follower or the audit's event
checks: those look at order events only (``type`` ``order.paid`` /
``order.cancelled``, with an ``order_id``).

Queuing a mail from a writer operation::

    def signup_op(tx: Tx) -> int:
        user_id = insert_user(tx.conn, ...)
        add_mail(tx.conn, to=email, subject="Your code", text=f"Code: {code}",
                 now=utcnow(), template="verify-email")
        return user_id

    user_id = await state.writer.submit(signup_op)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any, Final

from sqlalchemy import Connection, insert

from flashsale.db.models import outbox

__all__ = [
    "MAIL_JOB",
    "MAX_SUBJECT_CHARS",
    "MAX_TEXT_CHARS",
    "MailJob",
    "add_mail",
    "check_address",
    "message_id",
]

#: ``outbox.type`` of a mail job.
MAIL_JOB: Final = "mail"
#: Longest subject, characters (one header line, well under RFC 5322's 998).
MAX_SUBJECT_CHARS: Final = 200
#: Longest text body, characters.
MAX_TEXT_CHARS: Final = 100_000
#: Longest address, characters (RFC 3696 errata: 254 for a path; 320 by the parts).
MAX_ADDRESS_CHARS: Final = 320
#: Longest template name, characters.
MAX_TEMPLATE_CHARS: Final = 64

_INSERT = insert(outbox)


def check_address(address: str) -> str:
    """``address`` if it is a single plain mailbox (``local@domain``), else ValueError.

    No display name, no list, no line breaks (a header injection): the caller passes an
    address it has already validated (e.g. a sign-up's ``EmailStr``).

    Raises:
        ValueError: not one plain address, or longer than 320 characters.
    """
    if not address or len(address) > MAX_ADDRESS_CHARS or any(c in address for c in "\r\n"):
        raise ValueError(f"not a mail address: {address!r:.80}")
    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"not a mail address: {address!r:.80}") from exc
    if not parsed.username or not parsed.domain or parsed.addr_spec != address:
        raise ValueError(f"not a mail address: {address!r:.80}")
    return address


@dataclass(frozen=True)
class MailJob:
    """A mail job's payload.

    Attributes:
        to: the recipient, one plain address.
        subject: one line, at most :data:`MAX_SUBJECT_CHARS` characters.
        text: the plain-text body, at most :data:`MAX_TEXT_CHARS` characters.
        template: which mail this is (``"verify-email"``), for logs and tests; or None.
        created_at: when the job was queued (timezone-aware UTC): the mail's ``Date``.
    """

    to: str
    subject: str
    text: str
    template: str | None
    created_at: datetime

    def __post_init__(self) -> None:
        check_address(self.to)
        if len(self.subject) > MAX_SUBJECT_CHARS or any(c in self.subject for c in "\r\n"):
            raise ValueError("a mail subject is one line of at most 200 characters")
        if len(self.text) > MAX_TEXT_CHARS:
            raise ValueError(f"a mail text has at most {MAX_TEXT_CHARS} characters")
        if self.template is not None and not 0 < len(self.template) <= MAX_TEMPLATE_CHARS:
            raise ValueError("a template name has 1 to 64 characters")
        if self.created_at.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware")

    def payload(self) -> str:
        """The JSON text stored in ``outbox.payload``."""
        return json.dumps(
            {
                "to": self.to,
                "subject": self.subject,
                "text": self.text,
                "template": self.template,
                "created_at": self.created_at.isoformat(),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_payload(cls, payload: str) -> MailJob:
        """The job stored as ``payload`` (the inverse of :meth:`payload`).

        Raises:
            ValueError: not the JSON of a mail job.
        """
        try:
            data: Any = json.loads(payload)
            return cls(
                to=str(data["to"]),
                subject=str(data["subject"]),
                text=str(data["text"]),
                template=None if data.get("template") is None else str(data["template"]),
                created_at=datetime.fromisoformat(str(data["created_at"])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a mail job: {exc}") from exc


def message_id(event_id: str) -> str:
    """The ``Message-ID`` header of the mail of outbox job ``event_id``:
    ``<outbox-{event_id}@flashsale>``.

    Every delivery attempt of one job sends the same id, so a receiver (and
    ``flashsale mail-sink``) recognises a retried delivery as the same mail.

    Raises:
        ValueError: ``event_id`` is not a UUID (the outbox's ids are UUID4 strings).
    """
    return f"<outbox-{uuid.UUID(event_id)}@flashsale>"


def add_mail(
    conn: Connection,
    *,
    to: str,
    subject: str,
    text: str,
    now: datetime,
    template: str | None = None,
) -> str:
    """Queue one mail in the caller's transaction (a writer operation's ``tx.conn``).

    Args:
        conn: the transaction the mail belongs to: the mail is sent only if it commits.
        to: one plain recipient address, already validated by the caller.
        subject: one line, at most 200 characters.
        text: the plain-text body, at most 100,000 characters.
        now: the current time, timezone-aware UTC (the job's ``created_at``, due at once).
        template: which mail this is, e.g. ``"verify-email"`` (shown by logs and the sink).

    Returns:
        The job's ``event_id`` (a UUID4 string); its mail's ``Message-ID`` is
        :func:`message_id` of it.

    Raises:
        ValueError: an argument breaks the rules above (a programming error: the
            address comes validated from the request; never a user's 4xx).
    """
    job = MailJob(to=to, subject=subject, text=text, template=template, created_at=now)
    event_id = str(uuid.uuid4())
    conn.execute(
        _INSERT,
        {
            "event_id": event_id,
            "type": MAIL_JOB,
            "order_id": None,
            "payload": job.payload(),
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        },
    )
    return event_id
