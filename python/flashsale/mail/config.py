"""The mail settings parsed: ``FLASHSALE_SMTP_URL`` and ``FLASHSALE_MAIL_FROM``
(docs/operations.md#mail).

Standard library only, so that :mod:`flashsale.settings` can check them at start-up.

``FLASHSALE_SMTP_URL``::

    smtp://HOST[:PORT]                       plain SMTP, port 25 by default
    smtp://HOST:587?starttls=1               upgraded with STARTTLS (required, not opportunistic)
    smtp://USER:PASSWORD@HOST:587?starttls=1 and logged in (AUTH) after the upgrade
    smtps://USER:PASSWORD@HOST               TLS from the first byte, port 465 by default

User and password are percent-decoded (``%40`` for ``@`` in a user name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import formataddr, parseaddr
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["SmtpConfig", "parse_mail_from", "parse_smtp_url"]

_DEFAULT_PORTS: Final = {"smtp": 25, "smtps": 465}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how the relay sends mail.

    Attributes:
        host: the SMTP server's name or address.
        port: its TCP port.
        username, password: the login (``AUTH``), or both None for none.
        starttls: upgrade the connection with ``STARTTLS`` before anything else; a
            server that does not offer it fails the attempt.
        tls: TLS from the first byte (``smtps://``).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    tls: bool = False

    def describe(self) -> str:
        """``smtp://user@host:port?starttls=1`` without the password, for logs."""
        scheme = "smtps" if self.tls else "smtp"
        login = f"{self.username}@" if self.username else ""
        query = "?starttls=1" if self.starttls else ""
        return f"{scheme}://{login}{self.host}:{self.port}{query}"


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"SMTP URL: {name}={value!r} is neither 1 nor 0")


def parse_smtp_url(url: str) -> SmtpConfig:
    """Parse ``FLASHSALE_SMTP_URL`` (forms in the module docstring).

    Raises:
        ValueError: another scheme, no host, a bad port, a user without a password
            (or the reverse), a path, an unknown query parameter, or ``starttls`` with
            ``smtps``. The message never contains the password.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise ValueError(f"SMTP URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"SMTP URL: scheme must be smtp or smtps, not {scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError("SMTP URL: no host (smtp://HOST[:PORT])")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("SMTP URL: no path or fragment is allowed")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if (username is None) != (password is None):
        raise ValueError("SMTP URL: a login needs both a user and a password (USER:PASSWORD@)")
    starttls = False
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "starttls":
            raise ValueError(f"SMTP URL: unknown parameter {name!r} (only starttls)")
        starttls = _flag(name, value)
    tls = scheme == "smtps"
    if tls and starttls:
        raise ValueError("SMTP URL: smtps:// is TLS already; starttls=1 is for smtp://")
    return SmtpConfig(
        host=parts.hostname,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        username=username,
        password=password,
        starttls=starttls,
        tls=tls,
    )


def parse_mail_from(value: str) -> tuple[str, str]:
    """``(From header, envelope sender address)`` of ``FLASHSALE_MAIL_FROM``, which is
    ``Name <address>`` or a plain ``address``.

    Raises:
        ValueError: not one such address, or a line break in it.
    """
    if any(c in value for c in "\r\n"):
        raise ValueError("FLASHSALE_MAIL_FROM: no line breaks")
    name, address = parseaddr(value)
    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, ValueError, IndexError):
        parsed = None
    if parsed is None or not parsed.username or not parsed.domain:
        raise ValueError(
            f"FLASHSALE_MAIL_FROM: {value!r} is not 'Name <address>' or a plain address"
        )
    return formataddr((name, address)), address
