"""Run the real Flashsale service and the data-platform stand-in as child processes.

:class:`ServerProcess` starts ``python -m flashsale serve`` (the demo and the e2e tests),
:class:`DataPlatformProcess` ``python -m flashsale data-platform`` (the demo's
receiver of outbox events) and :class:`MailSinkProcess` ``python -m flashsale mail-sink``
(a local SMTP server). Each runs on a free localhost port in its own process
group; ``start`` waits until ``GET /healthz`` answers 200, and ``stop`` stops the whole
group (SIGTERM, then SIGKILL after a grace period) so that no uvicorn worker is left
behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

import httpx

__all__ = [
    "DataPlatformProcess",
    "MailSinkProcess",
    "ServerEnv",
    "ServerError",
    "ServerProcess",
    "free_port",
]

#: How many lines of the server log a start-up failure quotes.
_LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A child service (the server or the data platform) could not be started: it
    exited, or never became healthy."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the kernel's pick for port 0).

    Another process may take it before the server binds it; :class:`ServerProcess`
    retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ServerEnv:
    """Environment of a throw-away server: its database, a random JWT secret, an admin
    bootstrapped at start (``admin_email`` / ``admin_password``) and bcrypt cost 4, plus
    any ``extra_env`` (e.g. ``FLASHSALE_DATA_PLATFORM_URL``).

    Several servers started with the same :class:`ServerEnv` behave as one shop: same
    database, same JWT secret (a token from one is valid on the others), same admin.
    """

    database_url: str
    admin_email: str
    admin_password: str
    env: dict[str, str]

    @classmethod
    def for_database(
        cls, database_url: str, *, extra_env: Mapping[str, str] | None = None
    ) -> ServerEnv:
        """Settings for ``database_url`` (SQLite or PostgreSQL); ``extra_env`` is merged
        over the defaults."""
        admin_email = "admin@example.com"
        admin_password = f"Adm1n-{secrets.token_urlsafe(12)}"
        env = {
            "FLASHSALE_DATABASE_URL": database_url,
            "FLASHSALE_JWT_SECRET": secrets.token_urlsafe(48),
            "FLASHSALE_ADMIN_EMAIL": admin_email,
            "FLASHSALE_ADMIN_PASSWORD": admin_password,
            "FLASHSALE_PASSWORD_HASH_COST": "4",
            **(extra_env or {}),
        }
        return cls(database_url, admin_email, admin_password, env)

    @classmethod
    def in_folder(cls, folder: Path, *, extra_env: Mapping[str, str] | None = None) -> ServerEnv:
        """Settings for a SQLite file ``folder/flashsale.db`` (the embedded default)."""
        return cls.for_database(f"sqlite:///{folder / 'flashsale.db'}", extra_env=extra_env)


class _ChildService:
    """A ``python -m flashsale <command>`` HTTP service in a child process group.

    Subclasses give the command line (:meth:`_command`) and a name for messages. See
    :class:`ServerProcess` for the arguments and the lifecycle.
    """

    #: How messages name the service ("the server", "the data platform").
    _what = "the service"
    #: Prefix of the default temporary log file.
    _log_prefix = "flashsale-service-"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        cwd: Path | str | None = None,
    ) -> None:
        self.env: dict[str, str] = dict(env or {})
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.cwd = Path(cwd) if cwd is not None else None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=self._log_prefix, suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.port: int | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _command(self) -> list[str]:
        """The arguments after ``python -m flashsale`` (``self.port`` is already picked)."""
        raise NotImplementedError

    # -- properties -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running service (no trailing slash, no API prefix)."""
        if self.port is None:
            raise ServerError(f"{self._what} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the service's main process (also its process group id)."""
        if self._proc is None:
            raise ServerError(f"{self._what} is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return _log_tail(self.log_path, lines)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the service and block until ``GET /healthz`` answers 200.

        Retries a few times on a new port when the picked port was taken meanwhile.
        """
        if self._proc is not None:
            raise ServerError(f"{self._what} is already started")
        attempts = 3
        for attempt in range(1, attempts + 1):
            self._spawn()
            try:
                self._wait_healthy()
                return
            except BaseException as exc:
                if not isinstance(exc, ServerError):
                    # Ctrl-C (or any error) while waiting: leave no process behind.
                    self.stop()
                    raise
                tail = self.log_tail()
                self.stop()
                self._proc = None
                if attempt < attempts and "address already in use" in tail.lower():
                    continue
                raise ServerError(f"{exc}\n--- last lines of {self.log_path} ---\n{tail}") from None

    def _spawn(self) -> None:
        self.port = free_port(self.host)
        self.returncode = None
        cmd = [sys.executable, "-m", "flashsale", *self._command()]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C in the terminal does not reach the workers
                # half-way, and stop() can signal the master and all workers at once.
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/healthz"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ServerError(f"{self._what} exited with code {code} before it was healthy")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"{self._what} was not healthy within {self.startup_timeout:.0f} s ({url})"
                    )
                time.sleep(0.1)

    def _signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process group; False when the group is gone."""
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _group_alive(self) -> bool:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self) -> int | None:
        """Stop the process group: SIGTERM, then SIGKILL after ``stop_timeout`` s.

        Idempotent. Returns the main process's exit code (negative: killed by that
        signal), or None when it was never started.
        """
        proc = self._proc
        if proc is None:
            return self.returncode
        try:
            if proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait(timeout=self.stop_timeout)
            # Workers normally exit with the master; never leave one behind.
            deadline = time.monotonic() + min(self.stop_timeout, 5.0)
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._group_alive():
                self._signal_group(signal.SIGKILL)
        except BaseException:
            # Interrupted while waiting (e.g. a second Ctrl-C): do not wait, kill.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout)
            raise
        finally:
            self.returncode = proc.returncode
            if self._log is not None:
                with contextlib.suppress(OSError):
                    self._log.close()
                self._log = None
        return self.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(_ChildService):
    """``python -m flashsale serve`` in a child process group, as a context manager.

    Example::

        with ServerProcess({"FLASHSALE_DATABASE_URL": url}, workers=2) as server:
            httpx.get(f"{server.base_url}/healthz")

    Args:
        env: variables merged over ``os.environ`` for the child (e.g. ``FLASHSALE_*``).
        workers: uvicorn worker processes (``--workers``).
        host: interface to bind; the port is picked free on it.
        log_path: file that receives the server's stdout and stderr (appended); by
            default a new temporary file, kept after stop so it can be read.
        startup_timeout: seconds to wait for ``/healthz`` before giving up.
        stop_timeout: seconds between SIGTERM and SIGKILL on stop.
        cwd: working directory of the child (default: the current one).

    Raises:
        ValueError: ``workers`` < 1.
        ServerError: from :meth:`start` when the process exits before it is healthy
            or is not healthy within ``startup_timeout``; the message ends with the
            tail of the log.
    """

    _what = "the server"
    _log_prefix = "flashsale-server-"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 2,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        cwd: Path | str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        super().__init__(
            env,
            host=host,
            log_path=log_path,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            cwd=cwd,
        )

    def _command(self) -> list[str]:
        return [
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]


class DataPlatformProcess(_ChildService):
    """``python -m flashsale data-platform`` (the stand-in receiver of outbox events) in a
    child process group, as a context manager.

    Example::

        with DataPlatformProcess(folder / "data-platform.db", fail_rate=0.3) as platform:
            env = {"FLASHSALE_DATA_PLATFORM_URL": platform.events_url}

    Args:
        database: the stand-in's SQLite file (created if missing).
        fail_rate: fraction of posts answered 503, in [0, 1] (``--fail-rate``).
        latency_ms: milliseconds each post waits first (``--latency-ms``).
        seed: seed of the failure draws (``--seed``; None: unpredictable).
        env, host, log_path, startup_timeout, stop_timeout, cwd: as for
            :class:`ServerProcess`.

    Raises:
        ValueError: ``fail_rate`` outside [0, 1] or ``latency_ms`` < 0.
        ServerError: from :meth:`start`, as for :class:`ServerProcess`.
    """

    _what = "the data platform"
    _log_prefix = "flashsale-data-platform-"

    def __init__(
        self,
        database: Path | str,
        *,
        fail_rate: float = 0.0,
        latency_ms: int = 0,
        seed: int | None = None,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        cwd: Path | str | None = None,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate}")
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        self.database = Path(database)
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.seed = seed
        super().__init__(
            env,
            host=host,
            log_path=log_path,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            cwd=cwd,
        )

    @property
    def events_url(self) -> str:
        """The events endpoint, the value of ``FLASHSALE_DATA_PLATFORM_URL``."""
        return f"{self.base_url}/events"

    def _command(self) -> list[str]:
        cmd = [
            "data-platform",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.database),
            "--fail-rate",
            repr(self.fail_rate),
            "--latency-ms",
            str(self.latency_ms),
        ]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd


class MailSinkProcess(_ChildService):
    """``python -m flashsale mail-sink`` (a local SMTP server keeping what it receives) in
    a child process group, as a context manager.

    Example::

        with MailSinkProcess() as sink:
            env = {"FLASHSALE_SMTP_URL": sink.smtp_url}
            ...
            mails = sink.messages(to="buyer@example.com")

    The HTTP port (``base_url``, ``GET /messages``) is picked free at each start; the
    SMTP port too unless ``smtp_port`` is given (a sink restarted on the same SMTP port
    as one stopped before: senders find it again).

    Args:
        smtp_port: the SMTP port, or None to pick a free one.
        login: ``(user, password)`` clients must log in with (``--login``), or None.
        fail_rate: fraction of messages answered 451, in [0, 1] (``--fail-rate``).
        seed: seed of the failure draws (``--seed``).
        env, host, log_path, startup_timeout, stop_timeout, cwd: as for
            :class:`ServerProcess`.

    Raises:
        ValueError: ``fail_rate`` outside [0, 1].
        ServerError: from :meth:`start`, as for :class:`ServerProcess`.
    """

    _what = "the mail sink"
    _log_prefix = "flashsale-mail-sink-"

    def __init__(
        self,
        *,
        smtp_port: int | None = None,
        login: tuple[str, str] | None = None,
        fail_rate: float = 0.0,
        seed: int | None = None,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        cwd: Path | str | None = None,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate}")
        self._fixed_smtp_port = smtp_port
        self.smtp_port: int | None = smtp_port
        self.login = login
        self.fail_rate = fail_rate
        self.seed = seed
        super().__init__(
            env,
            host=host,
            log_path=log_path,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            cwd=cwd,
        )

    @property
    def smtp_url(self) -> str:
        """``smtp://[user:password@]host:port``, the value of ``FLASHSALE_SMTP_URL``."""
        if self.smtp_port is None:
            raise ServerError("the mail sink is not started")
        login = ""
        if self.login is not None:
            login = f"{quote(self.login[0], safe='')}:{quote(self.login[1], safe='')}@"
        return f"smtp://{login}{self.host}:{self.smtp_port}"

    def messages(self, to: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """``GET /messages`` (only those to ``to`` if given): the stored messages."""
        params = {"to": to} if to is not None else {}
        response = httpx.get(f"{self.base_url}/messages", params=params, timeout=timeout)
        body: dict[str, Any] = response.raise_for_status().json()
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    def stats(self, timeout: float = 10.0) -> dict[str, int]:
        """``GET /stats``: received, stored, duplicates, failed."""
        response = httpx.get(f"{self.base_url}/stats", timeout=timeout)
        body: dict[str, int] = response.raise_for_status().json()
        return body

    def _command(self) -> list[str]:
        if self._fixed_smtp_port is None:
            self.smtp_port = free_port(self.host)
        while True:
            assert self.port is not None
            if self.port != self.smtp_port:
                break
            self.port = free_port(self.host)
        cmd = [
            "mail-sink",
            "--host",
            self.host,
            "--port",
            str(self.smtp_port),
            "--http-port",
            str(self.port),
            "--fail-rate",
            repr(self.fail_rate),
        ]
        if self.login is not None:
            cmd += ["--login", f"{self.login[0]}:{self.login[1]}"]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd
