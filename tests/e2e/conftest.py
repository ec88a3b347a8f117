"""End-to-end fixtures: a real ``flashsale serve`` (2 workers) on a fresh database per test.

The ``live_server`` fixture yields a :class:`LiveServer` that also carries the shared
helpers: an HTTP client under ``/api/v1``, the admin's bearer header, seeding users
over HTTP, creating products and coupons, and the audit (library and CLI).

The ``server_factory`` fixture starts servers with extra settings, or several servers
one after another on the same database (a restart after :meth:`LiveServer.kill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from flashsale.demo.server import ServerEnv, ServerProcess

API_PREFIX = "/api/v1"
PASSWORD = "Passw0rd!"
#: Seconds any single HTTP request may take before the test fails.
REQUEST_TIMEOUT = 60.0
#: Requests in flight while seeding users (SQLite has one writer: more only queues).
SEED_CONCURRENCY = 8


@dataclass(frozen=True)
class User:
    """A user created over HTTP: id, e-mail and ``Authorization`` header."""

    user_id: int
    email: str
    headers: dict[str, str]


def error_code(response: httpx.Response) -> str | None:
    """The ``code`` of an error body, or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def expect(response: httpx.Response, status: int) -> Any:
    """Assert the status (showing the body otherwise) and return the JSON body."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} -> "
        f"{response.status_code}: {response.text}"
    )
    return response.json()


@dataclass
class LiveServer:
    """A running server and the helpers the e2e tests share.

    Attributes:
        process: the :class:`ServerProcess`.
        database_url: the test's database (``db_url``: SQLite file or PostgreSQL).
        admin_email / admin_password: the admin bootstrapped at start.
    """

    process: ServerProcess
    database_url: str
    admin_email: str
    admin_password: str

    # Also reachable from the tests as methods: test modules never import conftest.
    expect = staticmethod(expect)
    error_code = staticmethod(error_code)

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>/api/v1``."""
        return self.process.base_url + API_PREFIX

    def kill(self) -> None:
        """SIGKILL the server's whole process group (master and workers) and reap it: a
        crash, with no shutdown code run (requests and outbox deliveries cut off)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop()

    @asynccontextmanager
    async def client(self, connections: int = 200) -> AsyncIterator[httpx.AsyncClient]:
        """An ``httpx.AsyncClient`` on the API prefix with a pool of ``connections``."""
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=2.0,
        )
        async with httpx.AsyncClient(
            base_url=self.api_url, limits=limits, timeout=REQUEST_TIMEOUT
        ) as client:
            yield client

    async def login(self, client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
        """``POST /auth/token`` (form) and return the bearer header."""
        body = expect(
            await client.post("/auth/token", data={"username": email, "password": password}),
            200,
        )
        assert body["token_type"].lower() == "bearer"
        return {"Authorization": f"Bearer {body['access_token']}"}

    async def admin_headers(self, client: httpx.AsyncClient) -> dict[str, str]:
        """The admin's bearer header."""
        return await self.login(client, self.admin_email, self.admin_password)

    async def seed_users(
        self,
        client: httpx.AsyncClient,
        count: int,
        *,
        prefix: str = "user",
        charge: int | None = None,
        concurrency: int = SEED_CONCURRENCY,
    ) -> list[User]:
        """Sign up, log in and (when ``charge`` is given) charge ``count`` users, in order."""
        limiter = asyncio.Semaphore(concurrency)

        async def one(index: int) -> User:
            email = f"{prefix}{index:05d}@example.com"
            async with limiter:
                body = expect(
                    await client.post(
                        "/auth/signup",
                        json={"email": email, "password": PASSWORD, "name": f"{prefix} {index}"},
                    ),
                    201,
                )
                headers = await self.login(client, email, PASSWORD)
                if charge is not None:
                    expect(
                        await client.post(
                            "/me/wallet/charges", headers=headers, json={"amount": charge}
                        ),
                        201,
                    )
            return User(user_id=int(body["user_id"]), email=email, headers=headers)

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def create_product(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        *,
        name: str,
        variants: list[dict[str, Any]],
        per_user_limit: int | None = None,
    ) -> dict[str, Any]:
        """``POST /admin/products`` (sale always open); returns the product detail."""
        body: dict[str, Any] = expect(
            await client.post(
                "/admin/products",
                headers=admin,
                json={
                    "name": name,
                    "description": f"{name} (e2e)",
                    "sale_starts_at": None,
                    "sale_ends_at": None,
                    "per_user_limit": per_user_limit,
                    "variants": variants,
                },
            ),
            201,
        )
        return body

    async def create_coupon(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        *,
        total_quantity: int,
        discount_value: int = 5_000,
        min_order_amount: int = 10_000,
    ) -> dict[str, Any]:
        """``POST /admin/coupons`` (FIXED, always issuable, valid 7 days); returns the coupon."""
        body: dict[str, Any] = expect(
            await client.post(
                "/admin/coupons",
                headers=admin,
                json={
                    "name": f"e2e {discount_value} off",
                    "discount_type": "FIXED",
                    "discount_value": discount_value,
                    "max_discount_amount": None,
                    "min_order_amount": min_order_amount,
                    "total_quantity": total_quantity,
                    "issue_starts_at": None,
                    "issue_ends_at": None,
                    "valid_days": 7,
                },
            ),
            201,
        )
        assert body["remaining_quantity"] == total_quantity
        return body

    async def assert_audit_clean(self, *, cli: bool = True, ranking: bool = False) -> None:
        """Run the audit on the database: ``run_audit(url).ok`` and ``flashsale audit`` exit 0.

        ``ranking``: also invariant 5, against this server (``run_audit(url, [base_url])``,
        ``flashsale audit --service-url base_url``).
        """
        from flashsale.audit import run_audit

        service_urls = [self.process.base_url] if ranking else []
        # In a thread: the audit may run its own event loop.
        report = await anyio.to_thread.run_sync(run_audit, self.database_url, service_urls)
        assert report.checks, "the audit checked nothing"
        if ranking:
            assert any(c.startswith("5.") for c in report.checks), report.checks
        assert report.ok, f"audit failures: {report.failures}"
        if cli:
            service_args = [arg for url in service_urls for arg in ("--service-url", url)]
            proc = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [sys.executable, "-m", "flashsale", "audit", "--database-url",
                     self.database_url, *service_args],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            )  # fmt: skip
            assert proc.returncode == 0, f"flashsale audit: {proc.stdout}\n{proc.stderr}"


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server with 2 workers on the test's database (``db_url``, bcrypt cost 4); stopped
    after.

    Fails the test at teardown when the server log shows a traceback.
    """
    cfg = ServerEnv.for_database(db_url)
    log_path = tmp_path / "server.log"
    with ServerProcess(cfg.env, workers=2, log_path=log_path) as process:
        yield LiveServer(process, cfg.database_url, cfg.admin_email, cfg.admin_password)
    # Every request must be answered on purpose: an unhandled error is a failure even
    # when the client saw a tidy 500 (or nothing at all).
    log = log_path.read_text(encoding="utf-8", errors="replace")
    if "Traceback" in log:
        first = log.index("Traceback")
        pytest.fail(f"the server logged an unhandled error:\n{log[first : first + 3000]}")


def _fail_on_traceback(log_path: Path) -> None:
    log = log_path.read_text(encoding="utf-8", errors="replace")
    if "Traceback" in log:
        first = log.index("Traceback")
        pytest.fail(
            f"{log_path.name}: the server logged an unhandled error:\n{log[first : first + 3000]}"
        )


class ServerFactory:
    """Starts servers (2 workers, bcrypt cost 4) with extra settings; all stopped at teardown.

    Each server logs to its own ``tmp_path/server-<n>.log``; a traceback in any of
    them fails the test at teardown, as with ``live_server``.
    """

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[LiveServer] = []
        self._cfg = ServerEnv.for_database(database_url)

    @property
    def database_url(self) -> str:
        """The database every server of this factory shares."""
        return self._cfg.database_url

    @property
    def jwt_secret(self) -> str:
        """The JWT secret every server of this factory shares: tokens minted with it
        (``flashsale.auth.security.create_access_token``) are valid on all of them."""
        return self._cfg.env["FLASHSALE_JWT_SECRET"]

    def start(self, env: Mapping[str, str] | None = None, *, workers: int = 2) -> LiveServer:
        """A new server on the factory's database with ``env`` (``FLASHSALE_*``) added.

        Every server of one factory shares the database, the JWT secret and the admin:
        a server started after another one stopped (or was killed) takes over its data,
        and the tokens it issued stay valid.
        """
        log_path = self.tmp_path / f"server-{len(self.servers) + 1}.log"
        process = ServerProcess(
            {**self._cfg.env, **(env or {})}, workers=workers, log_path=log_path
        )
        process.start()
        server = LiveServer(
            process, self._cfg.database_url, self._cfg.admin_email, self._cfg.admin_password
        )
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server (idempotent), then check their logs."""
        for server in self.servers:
            server.process.stop()
        for server in self.servers:
            _fail_on_traceback(server.process.log_path)


@pytest.fixture
def server_factory(db_url: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """A :class:`ServerFactory` on ``tmp_path``: for servers with extra settings, or several
    servers one after another on the same database (e.g. a restart after a crash)."""
    factory = ServerFactory(db_url, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def postgres_servers(postgres_url: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """A :class:`ServerFactory` on a fresh PostgreSQL database whatever the test backend:
    for the proofs that need several instances sharing one database."""
    factory = ServerFactory(postgres_url, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
